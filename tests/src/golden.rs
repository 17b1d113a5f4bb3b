//! Golden files: compared, or written when `STRADDLE_BLESS` is set.

use std::path::Path;

pub fn bless() -> bool {
    std::env::var_os("STRADDLE_BLESS").is_some()
}

/// Compares `actual` with the golden file at `path` (or writes it when blessing).
pub fn check(path: &Path, actual: &str) {
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with STRADDLE_BLESS=1",
            path.display()
        )
    });
    if expected != actual {
        let diff = differing_lines(&expected, actual);
        panic!("{} differs from the golden file:\n{diff}", path.display());
    }
}

fn differing_lines(a: &str, b: &str) -> String {
    let mut out: String = a
        .lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .take(10)
        .map(|(i, (x, y))| format!("line {}:\n- {x}\n+ {y}\n", i + 1))
        .collect();
    let (na, nb) = (a.lines().count(), b.lines().count());
    if na != nb {
        out.push_str(&format!("{na} lines expected, {nb} written\n"));
    }
    out
}

/// The golden corpus: each spec (relative to `tests/`) with the rendered
/// chart variants (`tests/fixtures/charts/<variant>`) it is applied to.
pub const CORPUS: &[(&str, &[&str])] = &[
    (
        "../examples/cp-two-clusters.yaml",
        &["cp-zk-kafka-only", "cp-default", "cp-kafka-nodeport"],
    ),
    (
        "../examples/bitnami-kraft-three-clusters.yaml",
        &[
            "bitnami-kafka-kraft-dedicated-shared-sasl",
            "bitnami-kafka-kraft-external",
            "bitnami-kafka-kraft-external-nodeport",
        ],
    ),
    (
        "specs/cp-three-clusters-mcs.yaml",
        &["cp-zk-kafka-only", "cp-kafka-nodeport"],
    ),
    ("specs/cp-first-cluster-stage.yaml", &["cp-zk-kafka-only"]),
    (
        "specs/bitnami-kraft-combined.yaml",
        &["bitnami-kafka-kraft-combined-shared-sasl"],
    ),
    ("specs/cp-cilium.yaml", &["cp-zk-kafka-only", "cp-default"]),
    (
        "specs/bitnami-kraft-cilium.yaml",
        &["bitnami-kafka-kraft-dedicated-shared-sasl"],
    ),
    ("specs/cp-nodeport-linkerd.yaml", &["cp-zk-kafka-only"]),
    ("specs/cloudpirates-kraft-mcs.yaml", &["cloudpirates-kafka"]),
    (
        "specs/bitnami-kraft-dedicated-stretch.yaml",
        &["bitnami-kafka-kraft-dedicated-shared-sasl"],
    ),
    (
        "specs/cloudpirates-zookeeper-cilium.yaml",
        &["cloudpirates-zookeeper"],
    ),
    (
        "specs/cloudpirates-zookeeper-external.yaml",
        &["cloudpirates-zookeeper-external"],
    ),
    ("specs/cp-two-clusters-majority.yaml", &["cp-zk-kafka-only"]),
    ("specs/bitnami-zookeeper-mcs.yaml", &["bitnami-zookeeper"]),
    (
        "specs/bitnami-zookeeper-majority.yaml",
        &["bitnami-zookeeper"],
    ),
];
