//! The denied and warned corpus: chart variants and spec mismatches the
//! policy cannot make right, each with the answer every cluster gives.
//!
//! For every case the fixture is reviewed in every cluster through the wasm
//! module; each denial and warning is written to
//! `golden/refusals/<case>.txt` (object, cluster, message), so the messages
//! users read are reviewed like code. A case must produce at least one
//! answer of the kind it expects, and `straddle mutate --strict` semantics
//! (warnings are failures) follow from the same verdicts.

use std::fmt::Write as _;

use straddle_compiler::{check, compile, manifest, preview};
use straddle_policy::{Operation, Verdict};
use straddle_policy_host::{Runtime, RuntimeConfig};
use straddle_tests::golden;
use straddle_tests::root;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    Deny,
    Warn,
}

struct Case {
    name: &'static str,
    spec: &'static str,
    /// Text replaced in the spec (a user's mistake).
    spec_edit: Option<(&'static str, &'static str)>,
    variant: &'static str,
    /// Text replaced in the rendered chart (a chart value the fixtures lack).
    chart_edit: Option<(&'static str, &'static str)>,
    expect: Expect,
}

const CASES: &[Case] = &[
    Case {
        name: "bitnami-zookeeper-network-policy",
        spec: "specs/bitnami-zookeeper-mcs.yaml",
        spec_edit: None,
        variant: "bitnami-zookeeper-default",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-zookeeper-generated-quorum-passwords",
        spec: "specs/bitnami-zookeeper-mcs.yaml",
        spec_edit: None,
        variant: "bitnami-zookeeper-quorum-auth",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-zookeeper-custom-zoo-cfg",
        spec: "specs/bitnami-zookeeper-mcs.yaml",
        spec_edit: None,
        variant: "bitnami-zookeeper-configuration",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-dedicated-spec-combined-chart",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-combined-shared-sasl",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-combined-spec-dedicated-chart",
        spec: "specs/bitnami-kraft-combined.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-dedicated-shared-sasl",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-controller-port-changed",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-dedicated-shared-sasl",
        chart_edit: Some(("containerPort: 9093", "containerPort: 19093")),
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-external-forced-controllers",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-external-controllers",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-external-autodiscovery",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-external-autodiscovery",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "cp-nodeport-mode-with-chart-nodeports",
        spec: "specs/cp-nodeport-linkerd.yaml",
        spec_edit: None,
        variant: "cp-kafka-nodeport",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "cp-nodeport-chart-counts-fewer-brokers",
        spec: "../examples/cp-two-clusters.yaml",
        spec_edit: Some(("        cluster-1: 3", "        cluster-1: 4")),
        variant: "cp-kafka-nodeport",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-external-clusterip-autoincrement",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-external",
        // What `externalAccess.broker.service.type: ClusterIP` adds.
        chart_edit: Some((
            "            - name: EXTERNAL_ACCESS_LISTENER_NAME\n",
            "            - name: EXTERNAL_ACCESS_PORT_AUTOINCREMENT\n              value: \"true\"\n            - name: EXTERNAL_ACCESS_LISTENER_NAME\n",
        )),
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-external-list-shorter-than-pods",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-external",
        chart_edit: Some((
            "kafka-broker-0.example.com,kafka-broker-1.example.com,kafka-broker-2.example.com",
            "kafka-broker-0.example.com",
        )),
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-external-index-beyond-block",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-external",
        chart_edit: Some((
            "name: kafka-broker-2-external",
            "name: kafka-broker-12-external",
        )),
        expect: Expect::Deny,
    },
    Case {
        name: "cp-nodeport-first-listener-port-differs",
        spec: "../examples/cp-two-clusters.yaml",
        spec_edit: None,
        variant: "cp-kafka-nodeport",
        chart_edit: Some(("containerPort: 31090", "containerPort: 32090")),
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-generated-sasl-passwords",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: None,
        variant: "bitnami-kafka-kraft-dedicated",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "cloudpirates-generated-sasl-passwords",
        spec: "specs/cloudpirates-kraft-mcs.yaml",
        spec_edit: None,
        variant: "cloudpirates-kafka-default",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "bitnami-release-not-in-spec",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        spec_edit: Some(("release: kafka", "release: kafka-prod")),
        variant: "bitnami-kafka-kraft-dedicated-shared-sasl",
        chart_edit: None,
        expect: Expect::Warn,
    },
    Case {
        name: "cloudpirates-zookeeper-namespace-not-in-spec",
        spec: "specs/cloudpirates-zookeeper-cilium.yaml",
        spec_edit: Some(("namespace: zookeeper", "namespace: zk")),
        variant: "cloudpirates-zookeeper",
        chart_edit: Some(("namespace: zookeeper", "namespace: zk-old")),
        expect: Expect::Warn,
    },
    Case {
        name: "cloudpirates-zookeeper-external-beyond-block",
        spec: "specs/cloudpirates-zookeeper-cilium.yaml",
        spec_edit: None,
        variant: "cloudpirates-zookeeper-external",
        chart_edit: None,
        expect: Expect::Deny,
    },
    Case {
        name: "cp-release-not-in-spec",
        spec: "../examples/cp-two-clusters.yaml",
        spec_edit: Some(("release: confluent", "release: kafka")),
        variant: "cp-zk-kafka-only",
        chart_edit: None,
        expect: Expect::Warn,
    },
];

#[test]
fn every_refused_variant_is_answered_with_its_fix() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    for case in CASES {
        let mut spec = std::fs::read_to_string(root().join("tests").join(case.spec)).unwrap();
        if let Some((from, to)) = case.spec_edit {
            assert!(spec.contains(from), "{}: spec has no {from:?}", case.name);
            spec = spec.replace(from, to);
        }
        let checked = check(case.spec, &spec).unwrap_or_else(|r| panic!("{}:\n{r}", case.name));
        let topo = &checked.topology;
        let policy = runtime.load(&compile::module(topo).unwrap()).unwrap();
        let fixture = root().join(format!(
            "tests/fixtures/charts/{}/rendered.yaml",
            case.variant
        ));
        let mut rendered = std::fs::read_to_string(fixture).unwrap();
        if let Some((from, to)) = case.chart_edit {
            assert!(
                rendered.contains(from),
                "{}: chart has no {from:?}",
                case.name
            );
            rendered = rendered.replace(from, to);
        }
        let docs = manifest::parse(&rendered).unwrap();
        let namespaces = topo.namespaces();
        let mut answers = String::new();
        let mut expected = 0;
        for cluster in &topo.clusters {
            let outcomes = preview::run(
                &docs,
                &cluster.name,
                namespaces.first().map(String::as_str),
                Operation::Create,
                |r| policy.review(r),
            )
            .unwrap();
            for o in &outcomes {
                let (kind, message) = match &o.verdict {
                    Verdict::Deny(m) => (Expect::Deny, m),
                    Verdict::Warn(m) => (Expect::Warn, m),
                    Verdict::Allow | Verdict::Patch(_) => continue,
                };
                expected += usize::from(kind == case.expect);
                writeln!(
                    answers,
                    "{} {kind:?} {}\n  {message}",
                    cluster.name,
                    manifest::describe(&o.before, &o.namespace)
                )
                .unwrap();
            }
        }
        assert!(
            expected > 0,
            "{}: no {:?} in any cluster:\n{answers}",
            case.name,
            case.expect
        );
        golden::check(
            &root().join(format!("tests/golden/refusals/{}.txt", case.name)),
            &answers,
        );
    }
}
