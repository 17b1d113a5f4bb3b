//! The admission-policy backend against the webhook, on real API servers.
//!
//! For each (spec, fixture variant) the backend can express: one set of
//! control planes runs the webhook (the wasm module), another only the
//! `MutatingAdmissionPolicy` / `ValidatingAdmissionPolicy` objects of
//! `straddle render --admission-policy`. The same chart documents are
//! applied to both, and in every cluster the stored objects must be equal,
//! the StatefulSet controller must make the same pods, re-applying must
//! change nothing, and scaling beyond the spec must be refused. Every other
//! golden pair must either compile or name what it cannot express.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use straddle_compiler::{admission_policy, check, manifest};
use straddle_tests::controlplane::stretch::{KubeStretch, kind_name};
use straddle_tests::controlplane::webhook::Certificates;
use straddle_tests::controlplane::{Cluster, ControlPlanes, Tools};
use straddle_tests::golden::CORPUS;
use straddle_tests::root;

/// Proven equal on real API servers.
/// Between them they hold every kind of operation a plan has: env edits
/// with placeholder lists (bitnami externalAccess), properties files,
/// script lines (CloudPirates kafka), added Service ports (Linkerd), and
/// ZooKeeper server families (CloudPirates zoo.cfg).
const PROVEN: &[(&str, &str)] = &[
    ("../examples/cp-two-clusters.yaml", "cp-zk-kafka-only"),
    ("specs/bitnami-zookeeper-mcs.yaml", "bitnami-zookeeper"),
    (
        "../examples/bitnami-kraft-three-clusters.yaml",
        "bitnami-kafka-kraft-external",
    ),
    ("specs/cp-nodeport-linkerd.yaml", "cp-zk-kafka-only"),
    ("specs/cloudpirates-kraft-mcs.yaml", "cloudpirates-kafka"),
    (
        "specs/cloudpirates-zookeeper-cilium.yaml",
        "cloudpirates-zookeeper",
    ),
];

/// A chart object both backends refuse: (variant, the variant whose
/// rendering holds it, kind, text of the fix).
const REFUSED: &[(&str, &str, &str, &str)] = &[(
    "bitnami-zookeeper",
    "bitnami-zookeeper-default",
    "NetworkPolicy",
    "set the chart value networkPolicy.enabled=false",
)];

#[test]
fn every_spec_of_the_golden_corpus_compiles() {
    for (spec, _) in CORPUS {
        let text = std::fs::read_to_string(root().join("tests").join(spec)).unwrap();
        let checked = check(spec, &text).unwrap_or_else(|r| panic!("{spec}: {r}"));
        for (ci, cluster) in checked.topology.clusters.iter().enumerate() {
            let objects = admission_policy::policies(&checked.topology, ci)
                .unwrap_or_else(|e| panic!("{spec} {}: {e}", cluster.name));
            assert!(!objects.is_empty(), "{spec} {}: no policies", cluster.name);
        }
    }
}

fn tools() -> Option<Tools> {
    match Tools::find() {
        Ok(t) => Some(t),
        Err(reason) if std::env::var("STRADDLE_REQUIRE_KUBE").as_deref() == Ok("1") => {
            panic!("STRADDLE_REQUIRE_KUBE=1 but {reason}")
        }
        Err(reason) => {
            eprintln!("skipped: {reason} (set STRADDLE_REQUIRE_KUBE=1 to fail instead)");
            None
        }
    }
}

#[test]
fn admission_policies_store_what_the_webhook_stores() {
    let Some(tools) = tools() else { return };
    // STRADDLE_KUBE_CASES=cloudpirates-kafka,… runs only those variants.
    let only = std::env::var("STRADDLE_KUBE_CASES").unwrap_or_default();
    for (spec, variant) in PROVEN {
        if !only.is_empty() && !only.split(',').any(|v| v == *variant) {
            continue;
        }
        if let Err(e) = compare(&tools, spec, variant) {
            panic!("{spec} × {variant}: {e:#}");
        }
    }
}

/// What the API server writes itself, and what it allocates differently in
/// two clusters (uids, times, ClusterIPs): left out of the comparison.
fn normalised(mut object: Value) -> Value {
    if let Some(meta) = object["metadata"].as_object_mut() {
        for key in [
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "managedFields",
        ] {
            meta.remove(key);
        }
    }
    if let Some(spec) = object["spec"].as_object_mut() {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        // A LoadBalancer's node ports are allocated at random (the plan
        // sets them only on the per-node NodePort Services).
        if spec.get("type").and_then(Value::as_str) == Some("LoadBalancer") {
            for port in spec
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(port) = port.as_object_mut() {
                    port.remove("nodePort");
                }
            }
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    object
}

fn stored(cluster: &Cluster, namespace: &str, docs: &[Value]) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for doc in docs {
        let (kind, name) = kind_name(doc);
        let object = cluster
            .get(&kind, namespace, &name)?
            .with_context(|| format!("{}: {kind} {name} is not stored", cluster.name))?;
        out.insert(format!("{kind}/{name}"), normalised(object));
    }
    Ok(out)
}

/// Pod name -> each container's env, for the StatefulSets' pods.
fn pods(cluster: &Cluster, namespace: &str) -> Result<BTreeMap<String, Value>> {
    Ok(cluster
        .list("pods", namespace)?
        .into_iter()
        .map(|p| {
            let env: Vec<Value> = p["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["env"].clone())
                .collect();
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                Value::Array(env),
            )
        })
        .collect())
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "{what}: not after 60 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn compare(tools: &Tools, spec: &str, variant: &str) -> Result<()> {
    let started = Instant::now();
    let mut webhook = KubeStretch::new(tools, spec, variant, Certificates::SelfManaged, &[])?;
    webhook.server_side = true;
    let topo = &webhook.stretch.topo;
    let names: Vec<&str> = topo.clusters.iter().map(|c| c.name.as_str()).collect();
    let native = ControlPlanes::start(tools, &names)?;
    let ns = webhook.namespace.clone();
    let apply = |cluster: &Cluster, docs: &[Value]| -> Result<String> {
        let yaml = manifest::to_yaml(docs)?;
        cluster.kubectl_stdin(
            &[
                "apply",
                "-n",
                &ns,
                "-f",
                "-",
                "--server-side",
                "--field-manager=helm",
            ],
            Some(&yaml),
        )
    };
    for (i, cluster) in native.clusters.iter().enumerate() {
        let policies = admission_policy::policies(topo, i)?;
        let yaml = manifest::to_yaml(&policies)?;
        cluster
            .kubectl_stdin(&["apply", "-f", "-"], Some(&yaml))
            .context("installing the admission policies")?;
        cluster.kubectl(&["create", "namespace", &ns])?;
        // Policies take effect once the API server has compiled them: a
        // dry-run StatefulSet carries the digest from then on.
        let sts = webhook
            .docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet")
            .context("a StatefulSet")?
            .to_string();
        let mut last = String::new();
        let waited = wait_for(&format!("{}: policies in effect", cluster.name), || {
            let out = cluster.kubectl_stdin(
                &[
                    "create",
                    "--dry-run=server",
                    "-n",
                    &ns,
                    "-f",
                    "-",
                    "-o",
                    "jsonpath={.metadata.annotations.straddle\\.dev/policy-digest}",
                ],
                Some(&sts),
            );
            last = format!("{out:?}");
            Ok(out.ok().filter(|d| d.starts_with("sha256:")).map(|_| ()))
        });
        waited.with_context(|| format!("last answer: {last}"))?;
    }

    for (i, cluster) in native.clusters.iter().enumerate() {
        let name = &cluster.name;
        webhook.apply(i, &webhook.docs)?;
        apply(cluster, &webhook.docs).with_context(|| format!("{name}: apply"))?;
        let with_webhook = stored(webhook.cluster(i), &ns, &webhook.docs)?;
        let with_policies = stored(cluster, &ns, &webhook.docs)?;
        for (key, want) in &with_webhook {
            let have = &with_policies[key];
            ensure!(
                want == have,
                "{name}: {key} differs:\nwebhook:  {want}\npolicies: {have}"
            );
        }

        // The same pods from the real StatefulSet controllers.
        let expected = webhook.wait_for_pods(i)?;
        let want = pods(webhook.cluster(i), &ns)?;
        let have = wait_for(&format!("{name}: pods"), || {
            // The kubelet's part: ordered StatefulSets wait for readiness.
            cluster.mark_pods_ready(&ns)?;
            let have = pods(cluster, &ns)?;
            Ok((have.len() == expected.len()).then_some(have))
        })?;
        ensure!(want == have, "{name}: pods differ:\n{want:?}\n{have:?}");

        // Re-applying changes nothing.
        apply(cluster, &webhook.docs)?;
        let again = stored(cluster, &ns, &webhook.docs)?;
        ensure!(
            again == with_policies,
            "{name}: re-applying changed objects"
        );

        // An upgrade (the chart changes a value the plan does not touch)
        // converges to the same objects in both.
        let upgraded = upgrade(&webhook.docs);
        webhook.apply(i, &upgraded)?;
        apply(cluster, &upgraded)?;
        let want = stored(webhook.cluster(i), &ns, &upgraded)?;
        let have = stored(cluster, &ns, &upgraded)?;
        for (key, want) in &want {
            ensure!(
                want == &have[key],
                "{name}: after an upgrade {key} differs:\nwebhook:  {want}\npolicies: {}",
                have[key]
            );
        }
        ensure!(have != with_policies, "{name}: the upgrade changed nothing");

        // Scaling beyond the spec is refused, with the policy's message.
        for group in topo.groups() {
            let Some(slice) = group.slices.iter().find(|s| s.cluster == i) else {
                continue;
            };
            if slice.replicas == 0 {
                continue;
            }
            let quorum = !matches!(group.role, straddle_compiler::topology::Role::Broker);
            let too_many = if quorum {
                slice.replicas + 1
            } else {
                slice.block + 1
            };
            let replicas = format!("--replicas={too_many}");
            let err = cluster
                .kubectl(&[
                    "scale",
                    "statefulset",
                    &group.statefulset,
                    "-n",
                    &ns,
                    &replicas,
                ])
                .err()
                .with_context(|| format!("{name}: scaling {} was accepted", group.statefulset))?;
            ensure!(
                format!("{err:#}").contains(&format!("scaling to {too_many} is refused")),
                "{name}: scale refused without the policy's message: {err:#}"
            );
        }
    }
    // A chart object the policy refuses is refused by both, with the fix.
    if let Some((source, kind, fix)) = REFUSED
        .iter()
        .find(|r| r.0 == variant)
        .map(|r| (r.1, r.2, r.3))
    {
        let path = root()
            .join("tests")
            .join("fixtures/charts")
            .join(source)
            .join("rendered.yaml");
        let docs = manifest::parse(&std::fs::read_to_string(path)?)?;
        let refused: Vec<Value> = docs.into_iter().filter(|d| d["kind"] == kind).collect();
        for (i, cluster) in native.clusters.iter().enumerate() {
            for (backend, result) in [
                ("webhook", webhook.apply(i, &refused)),
                ("policies", apply(cluster, &refused)),
            ] {
                let err = result.err().with_context(|| {
                    format!("{}: the {kind} was admitted by the {backend}", cluster.name)
                })?;
                ensure!(
                    format!("{err:#}").contains(fix),
                    "{}: the {backend} refused without the fix: {err:#}",
                    cluster.name
                );
            }
        }
    }
    // A chart StatefulSet under a release the spec does not name is
    // admitted by both with the same warning.
    let watch = &straddle_compiler::charts::watches(topo)[0];
    let mut stray = webhook
        .docs
        .iter()
        .find(|d| {
            d["kind"] == "StatefulSet"
                && d["metadata"]["labels"][watch.label.as_ref()] == watch.value.as_ref()
        })
        .context("a StatefulSet of the watched chart")?
        .clone();
    stray["metadata"]["name"] = "other".into();
    stray["metadata"]["labels"][watch.release_label.as_ref()] = "other".into();
    let yaml = manifest::to_yaml(&[stray])?;
    let mut warnings = Vec::new();
    for cluster in [webhook.cluster(0), &native.clusters[0]] {
        let (_, stderr) = cluster.kubectl_output(
            &["apply", "-n", &ns, "-f", "-", "--dry-run=server"],
            Some(&yaml),
        )?;
        let warning: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("Warning:"))
            .collect();
        ensure!(
            warning.len() == 1 && warning[0].contains("does not name it"),
            "{}: no single warning for a StatefulSet of another release: {stderr}",
            cluster.name
        );
        warnings.push(warning[0].to_string());
    }
    // The API server puts the policy's name before the message.
    let text = warnings[0].trim_start_matches("Warning: ");
    ensure!(
        warnings[1].ends_with(&format!(": {text}")),
        "the warnings differ:\nwebhook:  {}\npolicies: {}",
        warnings[0],
        warnings[1]
    );

    // The API server's time in admission for the same re-applies, each
    // backend (dry-run server-side applies: UPDATE requests, nothing stored).
    let mut figures = Vec::new();
    for (backend, cluster) in [
        ("webhook", webhook.cluster(0)),
        ("policies", &native.clusters[0]),
    ] {
        let before = admission_seconds(cluster)?;
        for _ in 0..LATENCY_ROUNDS {
            dry_run(cluster, &ns, &webhook.docs)?;
        }
        let after = admission_seconds(cluster)?;
        figures.push(format!(
            "{backend}: {}",
            after
                .iter()
                .zip(&before)
                .map(|((step, sum, n), (_, sum0, n0))| format!(
                    "{step} {:.2} ms × {}",
                    (sum - sum0) * 1e3 / (n - n0).max(1) as f64,
                    n - n0
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    eprintln!(
        "{spec} × {variant}: API-server admission time per UPDATE request: {}",
        figures.join("; ")
    );
    // A chart value the spec contradicts, refused by both with the same
    // message (the module's text after the API servers' own prefixes).
    if variant == "bitnami-kafka-kraft-external" {
        let mut broker = webhook
            .docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == "kafka-broker")
            .context("the broker StatefulSet")?
            .clone();
        let pod = &mut broker["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            let containers = pod[list].as_array_mut().into_iter().flatten();
            for env in containers.filter_map(|c| c["env"].as_array_mut()).flatten() {
                if env["name"] == "EXTERNAL_ACCESS_HOSTS_LIST" {
                    env["value"] = "one.example.com".into();
                }
            }
        }
        let docs = [broker];
        let (webhook_said, policies_said) = (
            webhook
                .apply(0, &docs)
                .err()
                .context("a short list admitted by the webhook")?,
            apply(&native.clusters[0], &docs)
                .err()
                .context("a short list admitted by the policies")?,
        );
        let text =
            "EXTERNAL_ACCESS_HOSTS_LIST holds 1 entries where this cluster's 3 pods each need one";
        for (backend, err) in [("webhook", webhook_said), ("policies", policies_said)] {
            ensure!(
                format!("{err:#}").contains(text),
                "the {backend} refused a short list without the module's message: {err:#}"
            );
        }
    }
    eprintln!(
        "{spec} × {variant}: admission policies store what the webhook stores in {} clusters ({:.1} s)",
        native.clusters.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Dry-run re-applies per backend for the admission-time figures.
const LATENCY_ROUNDS: usize = 10;

/// The chart's next version: a label on every object and pod template,
/// which the plan does not touch.
fn upgrade(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .cloned()
        .map(|mut doc| {
            doc["metadata"]["labels"]["straddle.dev/test-chart-version"] = "2".into();
            if doc["kind"] == "StatefulSet" {
                doc["spec"]["template"]["metadata"]["labels"]["straddle.dev/test-chart-version"] =
                    "2".into();
            }
            doc
        })
        .collect()
}

fn dry_run(cluster: &Cluster, namespace: &str, docs: &[Value]) -> Result<String> {
    let yaml = manifest::to_yaml(docs)?;
    cluster.kubectl_stdin(
        &[
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            "--server-side",
            "--field-manager=helm",
            "--dry-run=server",
        ],
        Some(&yaml),
    )
}

/// The API server's admission steps for UPDATE requests (admit = mutating,
/// validate = validating): (step, seconds in total, requests).
fn admission_seconds(cluster: &Cluster) -> Result<Vec<(&'static str, f64, u64)>> {
    let lines = cluster.metrics("apiserver_admission_step_admission_duration_seconds")?;
    let value = |step: &str, suffix: &str| -> f64 {
        lines
            .iter()
            .filter(|l| {
                l.starts_with(&format!(
                    "apiserver_admission_step_admission_duration_seconds{suffix}{{"
                )) && l.contains("operation=\"UPDATE\"")
                    && l.contains(&format!("type=\"{step}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok(["admit", "validate"]
        .into_iter()
        .map(|step| (step, value(step, "_sum"), value(step, "_count") as u64))
        .collect())
}
