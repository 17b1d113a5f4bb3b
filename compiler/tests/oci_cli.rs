//! The `straddle` binary's registry commands against a real registry
//! (Debian's docker-registry on loopback): keygen, push --sign, pull
//! --verify-key, sign, and the messages of the refusals.

use std::path::Path;
use std::process::{Command, Output};

use straddle_test_support::registry::{self, Options, RegistryServer};

fn straddle(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_straddle"))
        .args(args)
        .current_dir(dir)
        // No user's ~/.docker/config.json leaks in.
        .env("HOME", dir)
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> (String, String) {
    let out = straddle(dir, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "straddle {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = straddle(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "straddle {args:?} should fail:\n{stderr}"
    );
    stderr
}

fn workspace(path: &str) -> String {
    straddle_test_support::path(path).display().to_string()
}

#[test]
fn keygen_push_sign_pull_verify() {
    if !registry::available() {
        return;
    }
    let server = RegistryServer::start("cli", Options::default());
    let dir = server.path("work");
    std::fs::create_dir_all(&dir).unwrap();
    let host = server.host();

    ok(&dir, &["keygen", "--prefix", "ours"]);
    ok(&dir, &["keygen", "--prefix", "theirs"]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("ours.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(fails(&dir, &["keygen", "--prefix", "ours"]).contains("--force"));

    ok(
        &dir,
        &[
            "compile",
            &workspace("examples/cp-two-clusters.yaml"),
            "-o",
            "policy.wasm",
        ],
    );
    ok(
        &dir,
        &[
            "compile",
            &workspace("tests/specs/cp-first-cluster-stage.yaml"),
            "-o",
            "stage.wasm",
        ],
    );

    // Push and sign: progress on stderr, the pinned reference on stdout.
    let tag = format!("{host}/straddle/policy:v1");
    let (stdout, stderr) = ok(
        &dir,
        &[
            "push",
            "policy.wasm",
            &tag,
            "--sign",
            "--key",
            "ours.key",
            "--plain-http",
        ],
    );
    let pinned = stdout.trim().to_owned();
    assert!(
        pinned.starts_with(&format!("oci://{host}/straddle/policy@sha256:")),
        "{stdout}"
    );
    let digest = pinned.rsplit('@').next().unwrap();
    assert!(stderr.contains("clusters cluster-0, cluster-1"), "{stderr}");
    assert!(
        stderr.contains(&format!("manifest digest {digest}")),
        "{stderr}"
    );
    assert!(stderr.contains("signed"), "{stderr}");

    // Pull by digest, verified: the same bytes.
    let (_, stderr) = ok(
        &dir,
        &[
            "pull",
            &pinned,
            "-o",
            "pulled.wasm",
            "--verify-key",
            "ours.pub",
            "--plain-http",
        ],
    );
    assert!(stderr.contains("signature verified"), "{stderr}");
    assert_eq!(
        std::fs::read(dir.join("pulled.wasm")).unwrap(),
        std::fs::read(dir.join("policy.wasm")).unwrap()
    );

    // Someone else's key: refused, nothing written.
    let e = fails(
        &dir,
        &[
            "pull",
            &tag,
            "-o",
            "refused.wasm",
            "--verify-key",
            "theirs.pub",
            "--plain-http",
        ],
    );
    assert!(e.contains("does not match the key"), "{e}");
    assert!(!dir.join("refused.wasm").exists());

    // Unsigned: refused until `straddle sign`.
    let v2 = format!("{host}/straddle/policy:v2");
    ok(&dir, &["push", "stage.wasm", &v2, "--plain-http"]);
    let e = fails(
        &dir,
        &[
            "pull",
            &v2,
            "-o",
            "v2.wasm",
            "--verify-key",
            "ours.pub",
            "--plain-http",
        ],
    );
    assert!(e.contains("not signed"), "{e}");
    ok(&dir, &["sign", &v2, "--key", "ours.key", "--plain-http"]);
    ok(
        &dir,
        &[
            "pull",
            &v2,
            "-o",
            "v2.wasm",
            "--verify-key",
            "ours.pub",
            "--plain-http",
        ],
    );

    // Messages that say what to do.
    let e = fails(&dir, &["push", "policy.wasm", &tag]);
    assert!(e.contains("--plain-http"), "{e}");
    let e = fails(
        &dir,
        &["push", "policy.wasm", "straddle/policy:v1", "--plain-http"],
    );
    assert!(e.contains("not a registry host"), "{e}");
    let e = fails(
        &dir,
        &["pull", &format!("{host}/nothing/here:v1"), "--plain-http"],
    );
    assert!(e.contains("does not exist"), "{e}");
    let e = fails(&dir, &["push", "ours.pub", &tag, "--plain-http"]);
    assert!(e.contains("not a compiled policy module"), "{e}");
}
