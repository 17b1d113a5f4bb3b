//! A stretch spec and a fixture variant on real control planes: one
//! per member cluster, the webhook installed in each ([`Webhook`]), and
//! what `straddle mutate` predicts for every object ([`Stretch`]), so a
//! test can apply the chart output the way a user does and compare.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use straddle_compiler::{check, compile, manifest};
use straddle_policy_host::{Runtime, RuntimeConfig};

use super::webhook::{Certificates, Install, Webhook};
use super::{Cluster, ControlPlanes, Tools};
use crate::process::workspace_binary;
use crate::root;
use crate::stretch::Stretch;

/// API versions the charts render that Kubernetes has removed: the API
/// server refuses them, and the test says so rather than hiding them.
pub const REMOVED_APIS: &[&str] = &["policy/v1beta1"];

/// A spec and fixture on a fresh control plane per cluster, the webhook
/// installed everywhere.
pub struct KubeStretch {
    pub stretch: Stretch,
    pub planes: ControlPlanes,
    pub webhooks: Vec<Webhook>,
    pub namespace: String,
    /// The documents `kubectl apply` gets (no hooks, no removed APIs).
    pub docs: Vec<Value>,
    /// Documents of removed API versions.
    pub removed: Vec<Value>,
    /// Apply server-side (Helm 4's way) instead of kubectl's client-side
    /// three-way merge.
    pub server_side: bool,
}

impl KubeStretch {
    pub fn new(
        tools: &Tools,
        spec: &str,
        variant: &str,
        certificates: Certificates,
        set: &[&str],
    ) -> Result<KubeStretch> {
        let runtime = Runtime::new(RuntimeConfig::default())?;
        let spec_path = root().join("tests").join(spec);
        let fixture = root().join(format!("tests/fixtures/charts/{variant}/rendered.yaml"));
        let stretch = Stretch::load(&runtime, &spec_path, &fixture)?;
        let text = std::fs::read_to_string(&spec_path)?;
        let checked = check(spec, &text).map_err(|r| anyhow::anyhow!("{r}"))?;
        let module = compile::module(&checked.topology)?;
        let namespaces = stretch.topo.namespaces();
        ensure!(namespaces.len() == 1, "one namespace per spec here");
        let namespace = namespaces[0].clone();

        let mut docs = Vec::new();
        let mut removed = Vec::new();
        for doc in manifest::parse(&std::fs::read_to_string(&fixture)?)? {
            if doc["metadata"]["annotations"]["helm.sh/hook"].is_string() {
                continue; // `helm test` pods: not part of an install
            }
            if REMOVED_APIS.contains(&doc["apiVersion"].as_str().unwrap_or_default()) {
                removed.push(doc);
            } else {
                docs.push(doc);
            }
        }

        let names: Vec<&str> = stretch
            .topo
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let planes = ControlPlanes::start(tools, &names)?;
        let binary = workspace_binary("straddle-webhook", "straddle-webhook")?;
        let chart = root().join("deploy/helm/straddle-webhook");
        let mut webhooks = Vec::new();
        for (i, cluster) in planes.clusters.iter().enumerate() {
            let started = Instant::now();
            webhooks.push(Webhook::install(
                cluster,
                planes.host_ip,
                &Install {
                    binary: &binary,
                    chart: &chart,
                    policy: &module,
                    namespaces: &[&namespace],
                    certificates,
                    set,
                },
            )?);
            eprintln!(
                "{variant} {}: webhook installed and ready in {:.1} s",
                cluster.name,
                started.elapsed().as_secs_f64()
            );
            // After the webhook, as a user would: everything made in the
            // namespace from here on is admitted through it.
            cluster.kubectl(&["create", "namespace", &namespace])?;
            // A StatefulSet the policy mutates (one the spec names).
            let stretched = stretch.mutated[i]
                .iter()
                .find(|o| {
                    o.after["kind"] == "StatefulSet"
                        && o.after["metadata"]["annotations"]["straddle.dev/policy-digest"]
                            .is_string()
                })
                .map(|o| &o.before);
            if let Some(sts) = stretched {
                wait_until_admitted(cluster, &namespace, sts)?;
            }
        }
        Ok(KubeStretch {
            stretch,
            planes,
            webhooks,
            namespace,
            docs,
            removed,
            server_side: false,
        })
    }

    pub fn cluster(&self, i: usize) -> &Cluster {
        &self.planes.clusters[i]
    }

    /// `kubectl apply` of `docs` in cluster `i` (server-side if asked).
    pub fn apply(&self, i: usize, docs: &[Value]) -> Result<String> {
        let yaml = manifest::to_yaml(docs)?;
        let mut args = vec!["apply", "-n", &self.namespace, "-f", "-"];
        if self.server_side {
            // As Helm 4 installs and upgrades: server-side apply under its
            // own field manager.
            args.extend(["--server-side", "--field-manager=helm"]);
        }
        self.cluster(i).kubectl_stdin(&args, Some(&yaml))
    }

    /// Every applied object as stored, without what its controllers
    /// write (`status`, their managed-fields entries, and so the
    /// resourceVersion): kind/name -> object.
    pub fn stored_specs(&self, i: usize) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for doc in &self.docs {
            let (kind, name) = kind_name(doc);
            let mut stored = self
                .cluster(i)
                .get(&kind, &self.namespace, &name)?
                .with_context(|| format!("{kind} {name} is not stored"))?;
            if let Some(o) = stored.as_object_mut() {
                o.remove("status");
            }
            if let Some(meta) = stored["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
                if let Some(Value::Array(fields)) = meta.get_mut("managedFields") {
                    fields.retain(|f| f["subresource"] != "status");
                }
            }
            out.insert(format!("{kind}/{name}"), stored);
        }
        Ok(out)
    }

    /// The pods the spec gives cluster `i`, per StatefulSet.
    pub fn expected_pods(&self, i: usize) -> BTreeMap<String, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for outcome in &self.stretch.mutated[i] {
            let sts = &outcome.after;
            if sts["kind"] != "StatefulSet" {
                continue;
            }
            let name = sts["metadata"]["name"].as_str().unwrap_or_default();
            let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1);
            let start = sts["spec"]["ordinals"]["start"].as_u64().unwrap_or(0);
            if replicas == 0 {
                continue;
            }
            out.insert(
                name.to_string(),
                (start..start + replicas)
                    .map(|o| format!("{name}-{o}"))
                    .collect(),
            );
        }
        out
    }

    /// Plays the kubelet until the pods of cluster `i` are exactly the
    /// expected ones, all made from their StatefulSet's current revision.
    pub fn wait_for_pods(&self, i: usize) -> Result<Vec<Value>> {
        let cluster = self.cluster(i);
        let expected = self.expected_pods(i);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            cluster.mark_pods_ready(&self.namespace)?;
            let pods = cluster.list("pods", &self.namespace)?;
            let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut current = true;
            for pod in &pods {
                let owner = pod["metadata"]["ownerReferences"][0]["name"]
                    .as_str()
                    .unwrap_or_default();
                let sts = cluster
                    .get("statefulset", &self.namespace, owner)?
                    .unwrap_or(Value::Null);
                let revision = pod["metadata"]["labels"]["controller-revision-hash"].as_str();
                current &= revision == sts["status"]["updateRevision"].as_str()
                    && pod["metadata"]["deletionTimestamp"].is_null();
                seen.entry(owner.to_string()).or_default().insert(
                    pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            if seen == expected && current {
                return Ok(pods);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: pods {seen:?}, expected {expected:?} (all current: {current})\n{}",
                    cluster.name,
                    cluster.controller_manager_log()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

pub fn kind_name(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_lowercase(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Waits until the API server calls the webhook: a server-side dry run of
/// a StatefulSet of the chart that the spec names comes back with the
/// policy's annotation (deploy/README.md's gate before installing the
/// chart). A webhook configuration takes effect only once the API server's
/// informers have it.
fn wait_until_admitted(cluster: &Cluster, namespace: &str, sts: &Value) -> Result<()> {
    let json = serde_json::to_string(sts)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let digest = cluster.kubectl_stdin(
            &[
                "create",
                "--dry-run=server",
                "-n",
                namespace,
                "-f",
                "-",
                "-o",
                "jsonpath={.metadata.annotations.straddle\\.dev/policy-digest}",
            ],
            Some(&json),
        );
        if digest.as_ref().is_ok_and(|d| d.starts_with("sha256:")) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{}: a dry-run StatefulSet is still not admitted through the webhook after 30 s: {digest:?}",
            cluster.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
