//! The real path: real kube-apiservers call `straddle-webhook`, store what
//! its JSON Patches make of unmodified chart output, and real
//! StatefulSet controllers make pods from the stored objects.
//!
//! For every fixture variant with a stretch spec: one control plane per
//! member cluster (`straddle_tests::controlplane`), the webhook installed
//! in each with `helm install` of `deploy/helm/straddle-webhook` (the
//! policy from a ConfigMap; self-managed certificates, or cert-manager's
//! files), the chart output applied with `kubectl apply` as a user would.
//! Then, per cluster:
//! - every stored object holds what `straddle mutate` predicts (the
//!   prediction is a subset of the stored object: the API server only adds
//!   defaults and metadata);
//! - the StatefulSet controller made exactly the spec's pods: names from
//!   the cluster's ordinal block, the cluster's count, the policy's env;
//! - another mutating admission in the path (a MutatingAdmissionPolicy
//!   labelling StatefulSets) keeps its change and the policy's;
//! - a second identical apply changes no object (same resourceVersion);
//! - an upgrade (a changed pod-template annotation, as a new config
//!   checksum gives) is reviewed as UPDATE and keeps every policy value,
//!   and the controller rolls the pods onto it;
//! - `kubectl scale` past the spec is refused with the policy's message;
//! - Secrets are stored as the chart wrote them, and the webhook's own
//!   identity touched no Secret but its certificate Secret (audit log);
//! - `straddle render`'s companions apply (the MCS ServiceExport CRD is
//!   installed for them).
//!
//! `webhook_failure_modes` covers the webhook stopped, frozen past
//! `timeoutSeconds`, its policy hot-swapped under a stream of applies and
//! its certificate rotated.
//!
//! Needs the binaries of `tests/tools/build.sh`; without them it prints
//! why and passes, unless `STRADDLE_REQUIRE_KUBE=1` (CI).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use straddle_compiler::{check, compile, manifest, render};
use straddle_tests::controlplane::stretch::{KubeStretch, kind_name};
use straddle_tests::controlplane::webhook::{self, Certificates};
use straddle_tests::controlplane::{Cluster, Tools};
use straddle_tests::root;

/// How the chart output reaches the API server.
#[derive(Clone, Copy, Debug)]
enum Apply {
    /// `kubectl apply`: a three-way merge patch from the last applied
    /// configuration.
    ClientSide,
    /// Server-side apply under field manager `helm`, as Helm 4 sends it.
    ServerSide,
}

/// Every fixture variant, with the spec it is stretched by, the
/// certificate mode its webhooks are installed with and the apply mode.
const CASES: &[(&str, &str, Certificates, Apply)] = &[
    (
        "../examples/cp-two-clusters.yaml",
        "cp-zk-kafka-only",
        Certificates::SelfManaged,
        Apply::ClientSide,
    ),
    (
        "../examples/cp-two-clusters.yaml",
        "cp-default",
        Certificates::SelfManaged,
        Apply::ServerSide,
    ),
    (
        "../examples/bitnami-kraft-three-clusters.yaml",
        "bitnami-kafka-kraft-dedicated-shared-sasl",
        Certificates::SelfManaged,
        Apply::ServerSide,
    ),
    (
        "specs/bitnami-kraft-combined.yaml",
        "bitnami-kafka-kraft-combined-shared-sasl",
        Certificates::CertManager,
        Apply::ClientSide,
    ),
    (
        "specs/cloudpirates-kraft-mcs.yaml",
        "cloudpirates-kafka",
        Certificates::SelfManaged,
        Apply::ServerSide,
    ),
    (
        "../examples/cp-two-clusters.yaml",
        "cp-kafka-nodeport",
        Certificates::CertManager,
        Apply::ClientSide,
    ),
    (
        "specs/bitnami-zookeeper-mcs.yaml",
        "bitnami-zookeeper",
        Certificates::SelfManaged,
        Apply::ServerSide,
    ),
];

/// Chart objects of another variant that the policy refuses, applied
/// through the real API server after the variant itself: (variant, the
/// variant whose rendering holds the object, kind, text of the refusal).
const REFUSED: &[(&str, &str, &str, &str)] = &[(
    "bitnami-zookeeper",
    "bitnami-zookeeper-default",
    "NetworkPolicy",
    "set the chart value networkPolicy.enabled=false",
)];

/// The variant's [`REFUSED`] objects are refused with the fix, and nothing
/// of them is stored.
fn refused_chart_objects(stage: &KubeStretch, i: usize, variant: &str) -> Result<()> {
    for (_, source, kind, fix) in REFUSED.iter().filter(|r| r.0 == variant) {
        let path = root()
            .join("tests")
            .join("fixtures/charts")
            .join(source)
            .join("rendered.yaml");
        let docs = manifest::parse(&std::fs::read_to_string(&path)?)?;
        for doc in docs.iter().filter(|d| d["kind"] == *kind) {
            let err = stage
                .apply(i, std::slice::from_ref(doc))
                .err()
                .with_context(|| format!("{source}: the {kind} was admitted"))?;
            let message = format!("{err:#}");
            ensure!(
                message.contains(fix),
                "{source}: unexpected refusal: {message}"
            );
            let (_, name) = kind_name(doc);
            let stored = stage.cluster(i).kubectl(&[
                "get",
                &kind.to_lowercase(),
                "-n",
                &stage.namespace,
                &name,
                "--ignore-not-found",
                "-o",
                "name",
            ])?;
            ensure!(
                stored.trim().is_empty(),
                "{source}: the refused {kind} was stored"
            );
            eprintln!("refused: {}", webhook_line(&message));
        }
    }
    Ok(())
}

fn tools() -> Option<Tools> {
    match Tools::find() {
        Ok(t) => Some(t),
        Err(why) => {
            if std::env::var_os("STRADDLE_REQUIRE_KUBE").is_some_and(|v| v == "1") {
                panic!("STRADDLE_REQUIRE_KUBE=1, but {why}");
            }
            eprintln!("skipped: {why}");
            None
        }
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Where `expected` is not contained in `actual`: every key of an object,
/// every element of an array (same length), every scalar equal; a zero
/// value may be absent. A `null`
/// expected value (a chart's empty `type:`) is the API server's to default.
fn not_contained(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Null, _) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let here = format!("{path}/{k}");
                match a.get(k) {
                    Some(av) => not_contained(v, av, &here, out),
                    // Go's `omitempty`: zero values are not stored.
                    None if is_zero(v) => {}
                    None => out.push(format!("{here}: missing (expected {v})")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (n, (ev, av)) in e.iter().zip(a).enumerate() {
                not_contained(ev, av, &format!("{path}/{n}"), out);
            }
        }
        (e, a) if e == a => {}
        // Quantities and ports as the API server normalises them.
        (Value::String(e), Value::Number(a)) if e == &a.to_string() => {}
        (Value::Number(e), Value::String(a)) if &e.to_string() == a => {}
        (e, a) => out.push(format!("{path}: expected {e}, stored {a}")),
    }
}

fn check_stored_objects(
    stage: &KubeStretch,
    i: usize,
    extra: Option<&(String, String)>,
) -> Result<()> {
    let cluster = stage.cluster(i);
    let mut problems = Vec::new();
    for outcome in &stage.stretch.mutated[i] {
        let doc = &outcome.after;
        if !stage.docs.iter().any(|d| kind_name(d) == kind_name(doc)) {
            continue;
        }
        let (kind, name) = kind_name(doc);
        let stored = cluster
            .get(&kind, &stage.namespace, &name)?
            .with_context(|| format!("{}: {kind} {name} is not stored", cluster.name))?;
        let mut expected = doc.clone();
        if let Some((key, value)) = extra
            && kind == "statefulset"
        {
            expected["spec"]["template"]["metadata"]["annotations"][key] = json!(value);
        }
        let mut diffs = Vec::new();
        not_contained(&expected, &stored, "", &mut diffs);
        for d in diffs {
            problems.push(format!("{kind} {name}{d}"));
        }
    }
    ensure!(
        problems.is_empty(),
        "{}: stored objects differ from `straddle mutate`'s:\n  {}",
        cluster.name,
        problems.join("\n  ")
    );
    Ok(())
}

/// Each pod's containers carry their StatefulSet's (mutated) env.
fn check_pod_env(stage: &KubeStretch, i: usize, pods: &[Value]) -> Result<()> {
    for pod in pods {
        let owner = pod["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap_or_default();
        let predicted = &stage.stretch.object(i, "StatefulSet", owner)?.after.clone();
        for kind in ["initContainers", "containers"] {
            let want = predicted["spec"]["template"]["spec"][kind].as_array();
            let have = pod["spec"][kind].as_array();
            for (w, h) in want.into_iter().flatten().zip(have.into_iter().flatten()) {
                let mut diffs = Vec::new();
                not_contained(&w["env"], &h["env"], "", &mut diffs);
                ensure!(
                    diffs.is_empty(),
                    "{}: pod {} container {}: env differs from the policy's: {diffs:?}",
                    stage.cluster(i).name,
                    pod["metadata"]["name"],
                    w["name"]
                );
            }
        }
    }
    Ok(())
}

fn run_case(
    tools: &Tools,
    spec: &str,
    variant: &str,
    certificates: Certificates,
    apply: Apply,
) -> Result<()> {
    let started = Instant::now();
    let mut stage = KubeStretch::new(tools, spec, variant, certificates, &[])?;
    stage.server_side = matches!(apply, Apply::ServerSide);
    for cluster in &stage.planes.clusters {
        cluster.kubectl_stdin(&["apply", "-f", "-"], Some(OTHER_MUTATION))?;
    }
    for i in 0..stage.planes.clusters.len() {
        wait_for_other_mutation(&stage, i)?;
    }
    for i in 0..stage.planes.clusters.len() {
        let cluster = stage.cluster(i);
        let name = &cluster.name;
        let context = || format!("{spec} × {variant}, cluster {name}");

        // 1. Create.
        stage.apply(i, &stage.docs).with_context(context)?;
        for doc in &stage.removed {
            let err = stage
                .apply(i, std::slice::from_ref(doc))
                .err()
                .with_context(|| format!("{}: {} was accepted", context(), doc["apiVersion"]))?;
            ensure!(
                format!("{err:#}").contains("no matches for kind"),
                "{}: unexpected refusal: {err:#}",
                context()
            );
        }
        check_stored_objects(&stage, i, None).with_context(context)?;
        check_other_mutation(&stage, i).with_context(context)?;
        refused_chart_objects(&stage, i, variant).with_context(context)?;
        let pods = stage.wait_for_pods(i).with_context(context)?;
        check_pod_env(&stage, i, &pods).with_context(context)?;

        // 2. The same apply again: nothing changes.
        let before = stage.stored_specs(i)?;
        stage.apply(i, &stage.docs).with_context(context)?;
        let after = stage.stored_specs(i)?;
        let churned: Vec<_> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: {v} -> {}", after[k]))
            .collect();
        ensure!(
            churned.is_empty(),
            "{}: re-applying changed {churned:?}",
            context()
        );

        // 3. An upgrade: one changed value in every StatefulSet's pod
        //    template (UPDATE through the webhook, then a rolling update).
        let key = ("straddle.dev/test-upgrade".to_string(), "2".to_string());
        let upgraded = with_template_annotation(&stage.docs, &key.1);
        stage.apply(i, &upgraded).with_context(context)?;
        check_stored_objects(&stage, i, Some(&key)).with_context(context)?;
        let pods = stage.wait_for_pods(i).with_context(context)?;
        check_pod_env(&stage, i, &pods).with_context(context)?;
        for pod in &pods {
            ensure!(
                pod["metadata"]["annotations"][&key.0] == key.1,
                "{}: pod {} was not rolled onto the upgrade",
                context(),
                pod["metadata"]["name"]
            );
        }

        // 4. `kubectl scale` beyond what the spec allows.
        for group in stage.stretch.topo.groups() {
            let slice = group.slices.iter().find(|s| s.cluster == i);
            let Some(slice) = slice.filter(|s| s.replicas > 0) else {
                continue;
            };
            let quorum = !matches!(group.role, straddle_compiler::topology::Role::Broker);
            let too_many = if quorum {
                slice.replicas + 1
            } else {
                slice.block + 1
            };
            let err = cluster
                .kubectl(&[
                    "scale",
                    "statefulset",
                    &group.statefulset,
                    "-n",
                    &stage.namespace,
                    &format!("--replicas={too_many}"),
                ])
                .err()
                .with_context(|| {
                    format!(
                        "{}: scaling {} to {too_many} was accepted",
                        context(),
                        group.statefulset
                    )
                })?;
            ensure!(
                format!("{err:#}").contains(&format!("scaling to {too_many} is refused")),
                "{}: scale refused without the policy's message: {err:#}",
                context()
            );
        }

        // 5. Secrets: as the chart wrote them; the webhook's identity
        //    touched only its own certificate Secret.
        for doc in stage.docs.iter().filter(|d| d["kind"] == "Secret") {
            let (_, name) = kind_name(doc);
            let stored = cluster
                .get("secret", &stage.namespace, &name)?
                .context("secret")?;
            for (k, v) in doc["data"].as_object().into_iter().flatten() {
                ensure!(
                    &stored["data"][k] == v,
                    "{}: Secret {name} key {k} changed",
                    context()
                );
            }
        }
        check_audit(cluster, certificates).with_context(context)?;

        // 6. The `kube-root-ca.crt` ConfigMap a controller made in the
        //    stretched namespace was kept from the webhook by the chart's
        //    matchConditions (the API server counts the exclusion).
        ensure!(
            cluster
                .get("configmap", &stage.namespace, "kube-root-ca.crt")?
                .is_some(),
            "{}: no kube-root-ca.crt",
            context()
        );
        let excluded: f64 = cluster
            .metrics("apiserver_admission_match_condition_exclusions_total")?
            .iter()
            .filter(|l| l.contains("mutate.straddle.dev"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        ensure!(
            excluded >= 1.0,
            "{}: the API server excluded nothing by the webhook's matchConditions",
            context()
        );

        // 7. `straddle render`'s companions.
        let companions = render::companions(&stage.stretch.topo, i);
        if !companions.is_empty() {
            if companions.iter().any(|c| c["kind"] == "ServiceExport") {
                cluster.kubectl_stdin(&["apply", "-f", "-"], Some(SERVICE_EXPORT_CRD))?;
                cluster.kubectl(&[
                    "wait",
                    "--for=condition=Established",
                    "crd/serviceexports.multicluster.x-k8s.io",
                ])?;
            }
            stage
                .apply(i, &companions)
                .with_context(|| format!("{}: applying render's companions", context()))?;
        }
    }
    report_admission_latency(&stage);
    eprintln!(
        "{spec} × {variant} ({apply:?} apply): {} clusters checked in {:.1} s",
        stage.planes.clusters.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every audited request by the webhook's ServiceAccount that touched a
/// Secret named its certificate Secret (cert-manager mode: none at all).
fn check_audit(cluster: &Cluster, certificates: Certificates) -> Result<()> {
    let user = format!(
        "system:serviceaccount:{}:{}",
        webhook::NAMESPACE,
        webhook::RELEASE
    );
    let log = std::fs::read_to_string(&cluster.audit_log)?;
    let mut touched = BTreeSet::new();
    for line in log.lines() {
        let event: Value = serde_json::from_str(line)?;
        if event["user"]["username"] == user.as_str() && event["objectRef"]["resource"] == "secrets"
        {
            touched.insert(format!(
                "{} {}/{}",
                event["verb"].as_str().unwrap_or_default(),
                event["objectRef"]["namespace"].as_str().unwrap_or_default(),
                event["objectRef"]["name"].as_str().unwrap_or_default()
            ));
        }
    }
    let own = format!("{}/{}-certs", webhook::NAMESPACE, webhook::RELEASE);
    let foreign: Vec<_> = touched.iter().filter(|t| !t.ends_with(&own)).collect();
    ensure!(
        foreign.is_empty(),
        "the webhook touched Secrets other than its own: {foreign:?}"
    );
    if certificates == Certificates::CertManager {
        ensure!(
            touched.is_empty(),
            "with cert-manager the webhook touched Secrets: {touched:?}"
        );
    }
    Ok(())
}

/// Another mutating admission in the same path, as platform teams have
/// (here an in-tree MutatingAdmissionPolicy, GA since 1.36): it labels
/// every StatefulSet, and is reinvoked if the webhook changes the object
/// after it ran. Both changes must survive, and re-applies stay no-ops.
const OTHER_MUTATION: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata: {name: team-label}
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: [apps]
        apiVersions: [v1]
        operations: [CREATE, UPDATE]
        resources: [statefulsets]
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: >
          [JSONPatch{op: "add", path: "/metadata/labels/example.com~1team", value: "data"}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata: {name: team-label}
spec:
  policyName: team-label
"#;

/// A new admission policy takes effect once the API server's informers
/// have it: a server-side dry run of a StatefulSet shows when.
fn wait_for_other_mutation(stage: &KubeStretch, i: usize) -> Result<()> {
    let sts = stage
        .docs
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .context("no StatefulSet")?;
    let yaml = serde_json::to_string(sts)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = stage.cluster(i).kubectl_stdin(
            &[
                "create",
                "--dry-run=server",
                "-n",
                &stage.namespace,
                "-o",
                "json",
                "-f",
                "-",
            ],
            Some(&yaml),
        )?;
        let seen: Value = serde_json::from_str(&out)?;
        if seen["metadata"]["labels"]["example.com/team"] == "data" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the MutatingAdmissionPolicy did not take effect within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every stored StatefulSet carries the other mutation's label.
fn check_other_mutation(stage: &KubeStretch, i: usize) -> Result<()> {
    for doc in stage.docs.iter().filter(|d| d["kind"] == "StatefulSet") {
        let (_, name) = kind_name(doc);
        let stored = stage
            .cluster(i)
            .get("statefulset", &stage.namespace, &name)?
            .context("statefulset")?;
        ensure!(
            stored["metadata"]["labels"]["example.com/team"] == "data",
            "StatefulSet {name} lost the other mutating admission's label"
        );
    }
    Ok(())
}

/// The MCS API's ServiceExport, as its CRD defines the kind (schema-less).
const SERVICE_EXPORT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: serviceexports.multicluster.x-k8s.io}
spec:
  group: multicluster.x-k8s.io
  scope: Namespaced
  names: {kind: ServiceExport, plural: serviceexports, singular: serviceexport, listKind: ServiceExportList}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

/// The API servers' own view of the webhook's latency.
fn report_admission_latency(stage: &KubeStretch) {
    for cluster in &stage.planes.clusters {
        let Ok(lines) = cluster.metrics("apiserver_admission_webhook_admission_duration_seconds")
        else {
            continue;
        };
        let pick = |suffix: &str| -> f64 {
            lines
                .iter()
                .filter(|l| l.contains(suffix) && l.contains("mutate.straddle.dev"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (sum, count) = (pick("_sum{"), pick("_count{"));
        if count > 0.0 {
            eprintln!(
                "{}: the API server called the webhook {count} times, mean {:.2} ms",
                cluster.name,
                1000.0 * sum / count
            );
        }
    }
}

#[test]
fn charts_through_real_api_servers() {
    let Some(tools) = tools() else { return };
    let mut failures = Vec::new();
    // STRADDLE_KUBE_CASES=cp-default,… runs only those variants.
    let only = std::env::var("STRADDLE_KUBE_CASES").unwrap_or_default();
    for (spec, variant, certificates, apply) in CASES {
        if !only.is_empty() && !only.split(',').any(|v| v == *variant) {
            continue;
        }
        if let Err(e) = run_case(&tools, spec, variant, *certificates, *apply) {
            failures.push(format!("{spec} × {variant} ({apply:?} apply): {e:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every StatefulSet of `docs` with a pod-template annotation set to
/// `value` (a changed chart value: the apply is an UPDATE).
fn with_template_annotation(docs: &[Value], value: &str) -> Vec<Value> {
    docs.iter()
        .map(|d| {
            let mut d = d.clone();
            if d["kind"] == "StatefulSet" {
                d["spec"]["template"]["metadata"]["annotations"]["straddle.dev/test-upgrade"] =
                    json!(value);
            }
            d
        })
        .collect()
}

/// The webhook stopped, frozen past `timeoutSeconds`, its policy swapped
/// under a stream of applies, and its self-managed serving certificate
/// renewed: every apply either succeeds whole with one policy's values or
/// is refused with a readable message and changes nothing.
#[test]
fn webhook_failure_modes() {
    let Some(tools) = tools() else { return };
    if let Err(e) = failure_modes(&tools) {
        panic!("{e:#}");
    }
}

fn failure_modes(tools: &Tools) -> Result<()> {
    let spec = "../examples/cp-two-clusters.yaml";
    let mut stage = KubeStretch::new(
        tools,
        spec,
        "cp-zk-kafka-only",
        Certificates::SelfManaged,
        &[
            "webhook.timeoutSeconds=3",
            // Valid for 3 minutes from 5 minutes in the past (the
            // webhook backdates for clock skew): an 8-minute lifetime,
            // renewed two thirds in, about 20 s after it is made.
            "certificates.selfManaged.certValidity=3m",
            "certificates.selfManaged.checkInterval=2s",
        ],
    )?;
    let i = 1;
    let cluster_name = stage.cluster(i).name.clone();
    stage.apply(i, &stage.docs)?;
    stage.wait_for_pods(i)?;
    let next = with_template_annotation(&stage.docs, "next");

    // 0. The policy's other answers, as users see them through a real API
    //    server: a warning (admitted) and a refusal naming the fix.
    refusal_and_warning(&stage, i)?;

    // 1. Stopped: `failurePolicy: Fail` refuses, nothing is half-applied.
    stage.webhooks[i].stop();
    let before = stage.stored_specs(i)?;
    let err = stage
        .apply(i, &next)
        .err()
        .context("an apply with the webhook stopped was accepted")?;
    let message = format!("{err:#}");
    ensure!(
        message.contains("failed calling webhook \"mutate.straddle.dev\""),
        "stopped webhook: unexpected message: {message}"
    );
    ensure!(
        stage.stored_specs(i)? == before,
        "{cluster_name}: a refused apply changed stored objects"
    );
    eprintln!("webhook stopped: refused ({})", webhook_line(&message));
    stage.webhooks[i].start()?;
    stage.apply(i, &next)?;
    check_stored_objects_with(&stage, i, "next")?;

    // 2. Frozen (accepts connections, never answers): refused after
    //    timeoutSeconds, nothing changed; thawed, the same apply succeeds.
    let again = with_template_annotation(&stage.docs, "frozen");
    stage.webhooks[i].freeze(true)?;
    let before = stage.stored_specs(i)?;
    let started = Instant::now();
    let refused = stage.apply(i, &again);
    let waited = started.elapsed();
    stage.webhooks[i].freeze(false)?;
    let err = refused
        .err()
        .context("an apply with the webhook frozen was accepted")?;
    let message = format!("{err:#}");
    ensure!(
        message.contains("mutate.straddle.dev") && waited >= Duration::from_secs(3),
        "frozen webhook: refused after {waited:?} with: {message}"
    );
    ensure!(
        stage.stored_specs(i)? == before,
        "{cluster_name}: a timed-out apply changed stored objects"
    );
    eprintln!(
        "webhook frozen: refused after {:.1} s ({})",
        waited.as_secs_f64(),
        webhook_line(&message)
    );
    stage.apply(i, &again)?;
    check_stored_objects_with(&stage, i, "frozen")?;

    // 3. Hot swap under a stream of applies: a policy with one more
    //    broker in this cluster replaces the running one. Every apply
    //    succeeds, and every stored StatefulSet pairs the old digest with
    //    3 brokers or the new digest with 4.
    let text = std::fs::read_to_string(root().join("tests").join(spec))?;
    let cut = text.rfind("cluster-1: 3").context("spec layout")?;
    let swapped_text = format!("{}cluster-1: 4{}", &text[..cut], &text[cut + 12..]);
    let swapped = check("swapped.yaml", &swapped_text).map_err(|r| anyhow::anyhow!("{r}"))?;
    let new_module = compile::module(&swapped.topology)?;
    let kafka = "confluent-cp-kafka";
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let started = Instant::now();
    let mut swapped_at = None;
    for n in 0.. {
        if n == 3 {
            stage.webhooks[i].update_policy(stage.cluster(i), &new_module)?;
            swapped_at = Some(n);
        }
        stage
            .apply(
                i,
                &with_template_annotation(&stage.docs, &format!("swap-{n}")),
            )
            .with_context(|| format!("apply {n} during the hot swap"))?;
        let sts = stage
            .cluster(i)
            .get("statefulset", &stage.namespace, kafka)?
            .context("kafka StatefulSet")?;
        let digest = sts["metadata"]["annotations"]["straddle.dev/policy-digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        seen.entry(digest)
            .or_default()
            .insert(sts["spec"]["replicas"].as_u64().unwrap_or(0));
        if seen.values().any(|r| r.contains(&4)) && n > 6 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the new policy was not in force within 60 s: {seen:?}\n{}",
            stage.webhooks[i].log_tail()
        );
    }
    ensure!(
        seen.len() == 2 && seen.values().all(|r| r.len() == 1),
        "hot swap: digests and broker counts seen {seen:?}"
    );
    eprintln!(
        "hot swap after apply {}: every apply admitted, digests and broker counts {seen:?}",
        swapped_at.unwrap_or_default()
    );

    // 4. The self-managed serving certificate renews (20 s in); applies
    //    go on being admitted across the switch.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut applies = 0;
    loop {
        stage.apply(
            i,
            &with_template_annotation(&stage.docs, &format!("renew-{applies}")),
        )?;
        applies += 1;
        if stage.webhooks[i]
            .log_tail()
            .contains("TLS certificate reloaded")
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the serving certificate was not renewed within 90 s:\n{}",
            stage.webhooks[i].log_tail()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    for _ in 0..3 {
        stage.apply(
            i,
            &with_template_annotation(&stage.docs, &format!("renew-{applies}")),
        )?;
        applies += 1;
    }
    eprintln!("certificate renewed and reloaded: {applies} applies admitted across it");
    Ok(())
}

/// A StatefulSet of the chart under a release the spec does not name is
/// admitted with the policy's warning, which kubectl prints; a per-broker
/// NodePort Service beyond the cluster's ID block is refused with the fix.
fn refusal_and_warning(stage: &KubeStretch, i: usize) -> Result<()> {
    let kafka = stage
        .docs
        .iter()
        .find(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == "confluent-cp-kafka")
        .context("the fixture's Kafka StatefulSet")?;
    let mut stray = kafka.clone();
    stray["metadata"]["name"] = "other-cp-kafka".into();
    stray["metadata"]["labels"]["release"] = "other".into();
    let yaml = manifest::to_yaml(&[stray])?;
    let ns = stage.namespace.as_str();
    let (_, stderr) = stage
        .cluster(i)
        .kubectl_output(&["apply", "-n", ns, "-f", "-"], Some(&yaml))?;
    let warning = "Warning: StatefulSet confluent/other-cp-kafka (release \"other\") has the \
                   labels of chart cp-helm-charts cp-kafka";
    ensure!(
        stderr.contains(warning),
        "no policy warning for a release the spec does not name: {stderr}"
    );
    stage
        .cluster(i)
        .kubectl(&["delete", "statefulset", "-n", ns, "other-cp-kafka"])?;
    eprintln!("warning printed by kubectl: {}", stderr.trim());

    let beyond = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "confluent-cp-kafka-12-nodeport", "labels": {"app": "cp-kafka", "release": "confluent"}},
        "spec": {
            "type": "NodePort",
            "ports": [{"name": "external-broker", "port": 19092, "targetPort": 31102, "nodePort": 31102}],
            "selector": {"statefulset.kubernetes.io/pod-name": "confluent-cp-kafka-12"},
        },
    });
    let err = stage
        .apply(i, &[beyond])
        .err()
        .context("a per-broker Service beyond the ID block was admitted")?;
    let message = format!("{err:#}");
    ensure!(
        message.contains("index 12 is beyond 10") && message.contains("cp-kafka.brokers"),
        "unexpected refusal: {message}"
    );
    eprintln!("refused: {}", webhook_line(&message));
    Ok(())
}

/// The line of an error that names the webhook (kubectl prints a preamble).
fn webhook_line(s: &str) -> &str {
    s.lines()
        .find(|l| l.contains("mutate.straddle.dev"))
        .unwrap_or_default()
        .trim()
}

/// The stored objects hold the policy's values with the pod-template
/// annotation `value`.
fn check_stored_objects_with(stage: &KubeStretch, i: usize, value: &str) -> Result<()> {
    check_stored_objects(
        stage,
        i,
        Some(&("straddle.dev/test-upgrade".to_string(), value.to_string())),
    )
}
