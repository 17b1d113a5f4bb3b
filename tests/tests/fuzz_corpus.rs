//! Replays the committed fuzz corpus (`fuzz/corpus/<target>`) and every
//! input that once broke an invariant (`fuzz/regressions/<target>`) through
//! the fuzz targets' own checks (`straddle_tests::fuzzing`), so `cargo test`
//! holds the invariants without cargo-fuzz.

use std::path::{Path, PathBuf};

use straddle_tests::fuzzing::TARGETS;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str, min: usize) {
    let root = straddle_tests::root().join("fuzz").join(kind);
    for (target, check) in TARGETS {
        let files = inputs(&root.join(target));
        assert!(
            files.len() >= min,
            "{}: only {} inputs",
            root.join(target).display(),
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            // Name the input when its check panics.
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(
                result.is_ok(),
                "{target}: {} breaks an invariant (see the panic above); reproduce with \
                 `cargo fuzz run {target} {}` in fuzz/",
                file.display(),
                file.display()
            );
        }
    }
}

#[test]
fn corpus_holds_every_invariant() {
    replay("corpus", 10);
}

#[test]
fn regressions_hold_every_invariant() {
    replay("regressions", 0);
}

/// Found by the `spec_check` target: errors about the document as a whole
/// had an empty field path, and a missing field was reported at the first
/// key of its mapping.
#[test]
fn errors_about_the_whole_document_still_name_a_field() {
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    for (source, want) in [
        ("", "(document)"),
        ("apiVersion: straddle.dev/v1alpha1\n", "kind"),
        (
            "apiVersion: straddle.dev/v1alpha1\nkind: StretchCluster\nmetadata:\n  name: x\nspec:\n  clusters:\n    - rack: r\n",
            "spec.clusters[0].name",
        ),
        (
            "apiVersion: straddle.dev/v1alpha1\nkind: StretchCluster\nmetadata: {}\nspec: {}\n",
            "metadata.name",
        ),
        ("~\n", "(document)"),
        ("just a scalar\n", "(document)"),
        (deep.as_str(), "(document)"),
    ] {
        let report = straddle_compiler::check("doc.yaml", source).unwrap_err();
        let paths: Vec<&str> = report.errors().map(|d| d.path.as_str()).collect();
        assert!(
            paths.contains(&want),
            "{:?}: want an error at {want}, got:\n{report}",
            &source[..source.len().min(20)]
        );
    }
}
