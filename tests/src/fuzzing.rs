//! The invariants the fuzz targets check, one function per target.
//!
//! The cargo-fuzz targets in `fuzz/` call these on every generated input;
//! `tests/tests/fuzz_corpus.rs` replays the committed corpus and every
//! regression input through the same functions in `cargo test`, so the
//! invariants are exercised without cargo-fuzz too. Each function panics
//! (with the input's story) when an invariant breaks, which is what
//! libFuzzer records as a crash.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use serde_json::Value;
use straddle_compiler::{check, compile, explain, render};
use straddle_policy::admission::{Admission, in_scope, review_admission};
use straddle_policy::{Operation, Request, Verdict};
use straddle_webhook::admission::{self, Decoded};

/// One target's checks on one input: panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// The fuzz targets, by the name of their `fuzz/corpus/<name>` folder.
pub const TARGETS: [(&str, Check); 3] = [
    ("spec_check", spec_check),
    ("policy_review", policy_review),
    ("admission_decode", admission_decode),
];

// ---------------------------------------------------------------- spec

/// Spec parser and checker on arbitrary bytes.
///
/// * never panics;
/// * a refused spec has at least one error, and every error names a field
///   path (so the user knows where to look) and says something;
/// * an accepted spec compiles into a plan the engine can read, its
///   explanation and companion manifests render, and its Kafka node IDs and
///   all node addresses are unique.
pub fn spec_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the CLI reads specs as UTF-8 text and says so otherwise
    };
    let checked = match check("fuzz.yaml", text) {
        Ok(checked) => checked,
        Err(report) => {
            let printed = report.to_string();
            assert!(report.has_errors(), "refused without an error:\n{printed}");
            for d in report.errors() {
                assert!(
                    !d.path.is_empty(),
                    "an error without a field path: {d:?}\n{printed}"
                );
                assert!(
                    !d.message.trim().is_empty(),
                    "an error without a message: {d:?}"
                );
            }
            return;
        }
    };
    assert!(!checked.report.has_errors(), "accepted with errors");
    let topology = &checked.topology;
    let (plan, digest) = compile::plan(topology);
    let parsed = straddle_policy::Plan::parse(&plan)
        .unwrap_or_else(|e| panic!("the compiled plan does not parse: {e}"));
    let bundle = parsed.bundle().expect("the plan has bundle info");
    assert_eq!(bundle.clusters.len(), topology.clusters.len());
    let _ = explain::to_text(&explain::explain(&checked, &digest));
    for cluster in 0..topology.clusters.len() {
        let _ = render::companions(topology, cluster);
    }
    let mut ids = BTreeSet::new();
    for group in topology.kafka.iter().flat_map(|k| k.groups()) {
        for node in &group.nodes {
            assert!(ids.insert(node.id), "Kafka node id {} twice", node.id);
        }
    }
    let mut addresses = BTreeSet::new();
    for group in topology.groups() {
        for node in &group.nodes {
            assert!(
                addresses.insert(node.address.clone()),
                "address {} twice",
                node.address
            );
        }
    }
}

// ---------------------------------------------------------------- engine

/// A compiled plan to review objects against.
struct Target {
    plan: Vec<u8>,
    clusters: Vec<String>,
    /// For objects without `metadata.namespace` (cp-helm-charts).
    namespace: String,
}

/// The specs of the plans `policy_review` picks from, in selector order:
/// (file, text, the chart fixture family whose objects seed it).
const PLAN_SPECS: [(&str, &str, &str); 4] = [
    (
        "cp-two-clusters.yaml",
        include_str!("../../examples/cp-two-clusters.yaml"),
        "cp",
    ),
    (
        "bitnami-kraft-three-clusters.yaml",
        include_str!("../../examples/bitnami-kraft-three-clusters.yaml"),
        "bitnami",
    ),
    (
        "cp-first-cluster-stage.yaml",
        include_str!("../specs/cp-first-cluster-stage.yaml"),
        "cp",
    ),
    (
        "bitnami-kraft-combined.yaml",
        include_str!("../specs/bitnami-kraft-combined.yaml"),
        "bitnami-combined",
    ),
];

/// The plans of `policy_review`, in selector order: the fixture family each
/// serves and its number of clusters (for the seeds, `fuzz-seeds`).
pub fn plans() -> Vec<(&'static str, usize)> {
    targets()
        .iter()
        .zip(PLAN_SPECS)
        .map(|(t, (_, _, family))| (family, t.clusters.len()))
        .collect()
}

/// The first printable selector byte of a `policy_review` input that picks
/// plan `plan` and cluster `cluster` (the inverse of the choice made there).
pub fn selector(plan: usize, cluster: usize) -> Option<u8> {
    let targets = targets();
    (0x30..0x7f).find(|&sel: &u8| {
        let sel = usize::from(sel);
        sel % targets.len() == plan
            && sel / targets.len() % (targets[plan].clusters.len() + 1) == cluster
    })
}

/// Real plans, compiled once from the example specs and test specs.
fn targets() -> &'static [Target] {
    static TARGETS: OnceLock<Vec<Target>> = OnceLock::new();
    TARGETS.get_or_init(|| {
        PLAN_SPECS
            .iter()
            .map(|(file, text, _)| {
                let checked = check(file, text).unwrap_or_else(|r| panic!("{file}:\n{r}"));
                let topology = &checked.topology;
                Target {
                    plan: compile::plan(topology).0,
                    clusters: topology.clusters.iter().map(|c| c.name.clone()).collect(),
                    namespace: topology.namespaces()[0].clone(),
                }
            })
            .collect()
    })
}

/// The policy engine on an arbitrary object.
///
/// Input: one selector byte (which plan, which cluster, including one that
/// is not a member), then the object's JSON text. Kind, name and namespace
/// come from the object when it is JSON, as the API server would send them.
///
/// * the engine's JSON reader reads every kind of object it knows exactly
///   as the `serde_json::Value` oracle in [`crate::object_views`] does;
/// * never panics, and a denial says why;
/// * CREATE and UPDATE (whatever the old object) give the same verdict;
///   DELETE and CONNECT are allowed;
/// * a patch is a JSON Patch that applies to the object, and the patched
///   object reviewed again is allowed unchanged (idempotence), as CREATE and
///   as UPDATE.
pub fn policy_review(data: &[u8]) {
    let Some((&selector, object)) = data.split_first() else {
        return;
    };
    let Ok(object) = std::str::from_utf8(object) else {
        return; // the webhook only ever hands the policy JSON text
    };
    crate::object_views::assert_agree(object);
    let targets = targets();
    let target = &targets[usize::from(selector) % targets.len()];
    let cluster_index = usize::from(selector) / targets.len() % (target.clusters.len() + 1);
    let cluster = target
        .clusters
        .get(cluster_index)
        .map_or("not-a-member", String::as_str);
    let parsed: Option<Value> = serde_json::from_str(object).ok();
    let field = |pointer: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.pointer(pointer))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let kind = field("/kind").unwrap_or_default();
    let name = field("/metadata/name").unwrap_or_default();
    let namespace = field("/metadata/namespace").unwrap_or_else(|| target.namespace.clone());
    let request = |operation, object: &str, old_object: Option<&str>| {
        straddle_policy::review(
            &target.plan,
            &Request {
                cluster,
                operation,
                kind: &kind,
                namespace: &namespace,
                name: &name,
                object,
                old_object,
            },
        )
    };

    let created = request(Operation::Create, object, None);
    let story = || format!("{kind} {namespace}/{name} in {cluster}, object:\n{object}");
    for old in [Some(object), Some("{}"), None] {
        assert_eq!(
            request(Operation::Update, object, old),
            created,
            "UPDATE (old object {old:?}) differs from CREATE for {}",
            story()
        );
    }
    for operation in [Operation::Delete, Operation::Connect] {
        assert_eq!(request(operation, object, None), Verdict::Allow);
    }
    let patch = match &created {
        Verdict::Allow => return,
        Verdict::Deny(message) | Verdict::Warn(message) => {
            assert!(
                !message.trim().is_empty(),
                "a denial or warning without a reason"
            );
            return;
        }
        Verdict::Patch(patch) => patch,
    };
    let patch: json_patch::Patch = serde_json::from_str(patch)
        .unwrap_or_else(|e| panic!("not a JSON Patch ({e}): {patch}\nfor {}", story()));
    let mut patched =
        parsed.unwrap_or_else(|| panic!("a patch for an object that is not JSON: {}", story()));
    json_patch::patch(&mut patched, &patch)
        .unwrap_or_else(|e| panic!("the patch does not apply ({e}): {patch:?}\nfor {}", story()));
    let patched = patched.to_string();
    assert_eq!(
        request(Operation::Create, &patched, None),
        Verdict::Allow,
        "reviewing the patched object again changes it (not idempotent); patched:\n{patched}\nfor {}",
        story()
    );
    assert_eq!(
        request(Operation::Update, &patched, Some(object)),
        Verdict::Allow,
        "UPDATE of the patched object changes it; patched:\n{patched}\nfor {}",
        story()
    );
}

// ---------------------------------------------------------------- webhook

/// The webhook's AdmissionReview decoder on an arbitrary body, and the
/// module's one-pass read of it.
///
/// * never panics;
/// * the one-pass read (`straddle_policy::admission`, native, on a real
///   plan) answers only bodies the decoder reads as requests, with the
///   request's uid, kind, names, operation and dry-run, and the verdict the
///   webhook's own path gets from the same plan;
/// * a body is a request (with a uid and JSON objects), an unreadable review
///   with its uid (answered with a denial carrying that uid), or HTTP 400
///   with a reason;
/// * the answer to a request is a v1 AdmissionReview with the same uid;
/// * a request written back as an AdmissionReview decodes to the same
///   request (nothing is lost or reinterpreted on the way in).
pub fn admission_decode(data: &[u8]) {
    read_once_agrees(data);
    match admission::decode(data) {
        Decoded::Review(request) => {
            assert!(!request.uid.is_empty(), "a request without a uid");
            // Grammar only: the policy's reader checks the values of the
            // objects it reviews (policy_review holds it to serde_json).
            for object in [&request.object, &request.old_object].into_iter().flatten() {
                serde_json::from_str::<serde::de::IgnoredAny>(object.json())
                    .unwrap_or_else(|e| panic!("an object that is not JSON ({e})"));
            }
            answer_carries_uid(&AdmissionResponse::from(&*request), &request.uid, true);

            // A struct, not `json!`: the objects stay raw text on the way out.
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Review<'a> {
                api_version: &'a str,
                kind: &'a str,
                request: &'a AdmissionRequest<admission::RawObject>,
            }
            let written = serde_json::to_vec(&Review {
                api_version: "admission.k8s.io/v1",
                kind: "AdmissionReview",
                request: &request,
            })
            .expect("a decoded request serializes");
            let Decoded::Review(again) = admission::decode(&written) else {
                panic!(
                    "a decoded request, written back, is refused: {}",
                    String::from_utf8_lossy(&written)
                );
            };
            assert_eq!(again.uid, request.uid);
            assert_eq!(again.kind, request.kind);
            assert_eq!(again.resource, request.resource);
            assert_eq!(again.operation, request.operation);
            assert_eq!(again.name, request.name);
            assert_eq!(again.namespace, request.namespace);
            assert_eq!(again.dry_run, request.dry_run);
            let json = |o: &Option<admission::RawObject>| o.as_ref().map(|o| o.json().to_owned());
            assert_eq!(json(&again.object), json(&request.object));
            assert_eq!(json(&again.old_object), json(&request.old_object));
        }
        Decoded::Unreadable { uid, message } => {
            assert!(!uid.is_empty(), "an unreadable review without a uid");
            assert!(!message.is_empty());
            answer_carries_uid(&admission::unreadable_response(&uid, &message), &uid, false);
        }
        Decoded::Refused {
            status,
            reason,
            message,
        } => {
            assert_eq!(status, 400, "{reason}: {message}");
            assert!(!message.is_empty(), "{reason}: a refusal without a message");
        }
    }
}

/// [`admission_decode`]'s check of the one-pass read against the decoder and
/// the webhook's own path (`decide` in the webhook's `admission` module).
fn read_once_agrees(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else {
        return; // the webhook never hands the module a body that is not UTF-8
    };
    let target = &targets()[0];
    let cluster = target.clusters[0].as_str();
    let plan = straddle_policy::Plan::parse(&target.plan).expect("a compiled plan");
    let Admission::Reviewed(read) = review_admission(&plan, cluster, body) else {
        return;
    };
    let Decoded::Review(request) = admission::decode(data) else {
        panic!("read in one pass, but the webhook does not read a request: {body}");
    };
    assert_eq!(read.uid, request.uid, "{body}");
    assert_eq!(read.kind, request.kind.kind, "{body}");
    assert_eq!(read.name, request.name, "{body}");
    assert_eq!(Some(&read.namespace), request.namespace.as_ref(), "{body}");
    assert_eq!(read.dry_run, request.dry_run, "{body}");
    let operation = admission::operation_of(&request.operation);
    assert_eq!(read.operation, operation, "{body}");
    let reviewed = in_scope(
        &request.kind.group,
        &request.kind.kind,
        &request.resource.group,
        &request.resource.resource,
    );
    let expected = match (&request.object, operation) {
        _ if !reviewed => None,
        (None, Operation::Create | Operation::Update) => {
            panic!("read in one pass, but the webhook denies a missing object: {body}")
        }
        (None, _) => None,
        (Some(object), _) => Some(straddle_policy::review(
            &target.plan,
            &Request {
                cluster,
                operation,
                kind: &request.kind.kind,
                namespace: &read.namespace,
                name: &read.name,
                object: object.json(),
                old_object: None,
            },
        )),
    };
    assert_eq!(read.verdict, expected, "{body}");
}

/// The encoded answer is a v1 AdmissionReview for `uid`.
fn answer_carries_uid(response: &AdmissionResponse, uid: &str, allowed: bool) {
    let body: Value =
        serde_json::from_slice(&admission::encode(response)).expect("the answer is JSON");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], uid);
    assert_eq!(body["response"]["allowed"], allowed);
}
