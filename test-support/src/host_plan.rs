//! Shared by straddle-policy-host's tests and bench: a small plan, embedded into
//! the real template.

use std::borrow::Cow;

use straddle_policy::plan::{ObjectKind, ObjectRule, Op, PlanBuilder};
use straddle_policy::{BundleInfo, Operation, Request};

pub const CLUSTER: &str = "east";
pub const NAMESPACE: &str = "confluent";
pub const ZOOKEEPER: &str = "confluent-cp-zookeeper";

pub fn bundle() -> BundleInfo<'static> {
    BundleInfo {
        name: Cow::Borrowed("host-test"),
        spec_digest: Cow::Borrowed(
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        clusters: vec![Cow::Borrowed("east"), Cow::Borrowed("west")],
        namespaces: vec![Cow::Borrowed(NAMESPACE)],
        compiler_version: Cow::Borrowed("test"),
        watches: vec![],
    }
}

/// A plan naming the ZooKeeper StatefulSet in both clusters.
pub fn plan() -> Vec<u8> {
    let mut builder = PlanBuilder::new();
    for (cluster, start) in [("east", 0), ("west", 10)] {
        let rule = ObjectRule {
            field: Cow::Borrowed("spec.zookeeper"),
            // No checks: their shape is still moving in the engine; the
            // host only needs some rule to run.
            checks: vec![],
            ops: vec![
                Op::Annotation {
                    key: Cow::Borrowed("straddle.dev/cluster"),
                    value: Cow::Borrowed(cluster),
                },
                Op::OrdinalsStart(start),
            ],
        };
        builder.insert(
            cluster,
            ObjectKind::StatefulSet,
            NAMESPACE,
            ZOOKEEPER,
            &rule,
        );
    }
    builder.finish(&bundle())
}

/// The template with `plan` embedded.
pub fn module(plan: &[u8]) -> Vec<u8> {
    straddle_policy_artifact::embed::embed_plan(straddle_policy_artifact::POLICY_TEMPLATE, plan)
        .expect("embedding the plan")
}

/// A small StatefulSet in the shape of the cp-zookeeper chart's.
pub fn statefulset(replicas: u32, extra_annotation: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"StatefulSet",
"metadata":{{"name":"{ZOOKEEPER}","annotations":{{"note":"{extra_annotation}"}}}},
"spec":{{"replicas":{replicas},"serviceName":"{ZOOKEEPER}-headless",
"selector":{{"matchLabels":{{"app":"cp-zookeeper"}}}},
"template":{{"metadata":{{"labels":{{"app":"cp-zookeeper"}}}},
"spec":{{"containers":[{{"name":"cp-zookeeper-server","image":"confluentinc/cp-zookeeper:7.6.0",
"env":[{{"name":"ZOOKEEPER_CLIENT_PORT","value":"2181"}}]}}]}}}}}}}}"#
    )
}

/// A StatefulSet whose annotation is `escapes` `\u0041` escapes: each takes
/// the reader's slow path, so a few million make a review run for tens of
/// milliseconds (for the deadline tests).
pub fn slow_statefulset(escapes: usize) -> String {
    statefulset(3, &"\\u0041".repeat(escapes))
}

/// A CREATE of the StatefulSet `name` in `cluster`.
pub fn request<'a>(cluster: &'a str, name: &'a str, object: &'a str) -> Request<'a> {
    Request {
        cluster,
        operation: Operation::Create,
        kind: "StatefulSet",
        namespace: NAMESPACE,
        name,
        object,
        old_object: None,
    }
}
