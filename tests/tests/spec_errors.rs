//! Every spec in `tests/specs/invalid` is refused with a message that names
//! the field (and its line), per the `# expect: <path> :: <text>` header.

use straddle_compiler::check;

#[test]
fn every_invalid_spec_names_its_field_and_line() {
    let dir = straddle_tests::root().join("tests/specs/invalid");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let header = text.lines().next().unwrap();
        let (want_path, want_text) = header
            .strip_prefix("# expect: ")
            .and_then(|h| h.split_once(" :: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: missing `# expect: path :: text` header",
                    path.display()
                )
            });
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let report = match check(&name, &text) {
            Ok(_) => panic!("{name}: accepted, but should be refused"),
            Err(report) => report,
        };
        let printed = report.to_string();
        let found = report
            .errors()
            .find(|d| d.path == want_path.trim() && d.message.contains(want_text.trim()));
        let d = found.unwrap_or_else(|| {
            panic!("{name}: no error at {want_path:?} containing {want_text:?}; got:\n{printed}")
        });
        assert!(
            d.location.is_some(),
            "{name}: error has no line number:\n{printed}"
        );
        assert!(
            printed.starts_with(&format!("{name}:")),
            "{name}: message does not name the file:\n{printed}"
        );
        assert!(
            d.fix.is_some(),
            "{name}: error does not say what to do:\n{printed}"
        );
    }
    assert!(count >= 20, "only {count} invalid specs");
}

/// A refused ZooKeeper is reported once, not again as Kafka's missing
/// ZooKeeper.
#[test]
fn a_refused_zookeeper_is_one_error() {
    let dir = straddle_tests::root().join("tests/specs/invalid");
    let text = std::fs::read_to_string(dir.join("bitnami-zookeeper-min-id.yaml")).unwrap();
    let report = check("bitnami-zookeeper-min-id.yaml", &text).unwrap_err();
    let paths: Vec<&str> = report.errors().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["spec.zookeeper.minId"], "{report}");
}

#[test]
fn examples_are_valid() {
    let dir = straddle_tests::root().join("examples");
    for name in ["cp-two-clusters.yaml", "bitnami-kraft-three-clusters.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        if let Err(report) = check(name, &text) {
            panic!("{name} is refused:\n{report}");
        }
    }
}

#[test]
fn two_clusters_warn_that_no_cluster_loss_is_survivable() {
    let dir = straddle_tests::root().join("examples");
    let text = std::fs::read_to_string(dir.join("cp-two-clusters.yaml")).unwrap();
    let checked = check("cp-two-clusters.yaml", &text).unwrap();
    let warnings: Vec<String> = checked
        .report
        .warnings()
        .map(|d| d.message.clone())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("zookeeper") && w.contains("NO whole cluster")),
        "{warnings:?}"
    );
}
