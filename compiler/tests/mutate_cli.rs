//! `straddle mutate` prints the policy's admission warnings as kubectl and
//! Helm do, and `--strict` turns them into a failure (for CI pipelines).

use std::path::PathBuf;
use std::process::{Command, Output};

fn workspace(path: &str) -> PathBuf {
    straddle_test_support::path(path)
}

fn straddle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_straddle"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_release_the_spec_does_not_name_is_a_warning_and_strict_fails() {
    let dir = std::env::temp_dir().join(format!("straddle-mutate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = std::fs::read_to_string(workspace("examples/cp-two-clusters.yaml")).unwrap();
    let spec_path = dir.join("spec.yaml");
    std::fs::write(
        &spec_path,
        spec.replace("release: confluent", "release: kafka-prod"),
    )
    .unwrap();
    let policy = dir.join("policy.wasm");
    let out = straddle(&[
        "compile",
        spec_path.to_str().unwrap(),
        "-o",
        policy.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chart = workspace("tests/fixtures/charts/cp-zk-kafka-only/rendered.yaml");
    let args = [
        "mutate",
        "--policy",
        policy.to_str().unwrap(),
        "--cluster",
        "cluster-1",
        "-f",
        chart.to_str().unwrap(),
    ];
    let out = straddle(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("Warning: StatefulSet confluent/confluent-cp-kafka (release \"confluent\")")
            && stderr.contains("spec.kafka.release"),
        "{stderr}"
    );
    let strict = straddle(&[&args[..], &["--strict"]].concat());
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("warnings with --strict"));
    std::fs::remove_dir_all(&dir).unwrap();
}
