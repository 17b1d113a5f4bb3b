//! A stretch as the clusters see it: the spec compiled in-process, its wasm
//! policy run over real chart output in every cluster (as the webhook
//! would, CREATE), and every pod enumerated from the *mutated*
//! StatefulSets (their `spec.replicas` and `spec.ordinals.start`).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use straddle_compiler::preview::{self, Outcome};
use straddle_compiler::topology::{RoleGroup, Topology};
use straddle_compiler::{check, compile, manifest};
use straddle_policy::Operation;
use straddle_policy_host::Runtime;

use crate::dns::PodAddress;

pub struct Stretch {
    /// The spec's path, for messages.
    pub spec: String,
    pub topo: Topology,
    /// Per cluster (topology order): every fixture document after review.
    pub mutated: Vec<Vec<Outcome>>,
}

/// One pod of one role in one cluster.
#[derive(Debug, Clone)]
pub struct PodRef<'a> {
    pub cluster: usize,
    pub group: &'a RoleGroup,
    /// The mutated StatefulSet the pod belongs to.
    pub statefulset: &'a Value,
    pub namespace: String,
    pub name: String,
    pub ordinal: u32,
}

impl PodRef<'_> {
    pub fn address(&self, ip: Ipv4Addr) -> PodAddress {
        PodAddress {
            cluster: self.cluster,
            namespace: self.namespace.clone(),
            headless: self.statefulset["spec"]["serviceName"]
                .as_str()
                .unwrap_or(&self.group.headless)
                .to_string(),
            pod: self.name.clone(),
            ip,
        }
    }
}

impl Stretch {
    /// Compiles `spec` (a path) and runs its policy over `fixture` (a
    /// `rendered.yaml`) for every cluster.
    pub fn load(runtime: &Runtime, spec: &Path, fixture: &Path) -> Result<Stretch> {
        let name = spec.display().to_string();
        let text = std::fs::read_to_string(spec).with_context(|| format!("reading {name}"))?;
        let checked = check(&name, &text).map_err(|r| anyhow!("{name}:\n{r}"))?;
        let topo = checked.topology;
        let module = compile::module(&topo).map_err(|e| anyhow!("{name}: compile: {e}"))?;
        let policy = runtime
            .load(&module)
            .map_err(|e| anyhow!("{name}: load: {e}"))?;
        let rendered = std::fs::read_to_string(fixture)
            .with_context(|| format!("reading {}", fixture.display()))?;
        let namespaces = topo.namespaces();
        let default_ns = namespaces.first().map(String::as_str);
        let mut mutated = Vec::new();
        for cluster in &topo.clusters {
            // External hosts (`*.example.com` in the fixtures' values) are
            // per-cluster chart values: each cluster names its own load
            // balancers. The fixture is one render, so each cluster's copy
            // gets its own domain, as its own values file would give it.
            let own = rendered.replace(".example.com", &format!(".{}.example.com", cluster.name));
            let docs = manifest::parse(&own).map_err(|e| anyhow!("{}: {e}", fixture.display()))?;
            let out = preview::run(&docs, &cluster.name, default_ns, Operation::Create, |r| {
                policy.review(r)
            })
            .with_context(|| format!("{name}: reviewing for {}", cluster.name))?;
            if let Some(denied) = out.iter().find_map(Outcome::denial) {
                bail!(
                    "{name} {}: the policy denied an object: {denied}",
                    cluster.name
                );
            }
            mutated.push(out);
        }
        Ok(Stretch {
            spec: name,
            topo,
            mutated,
        })
    }

    pub fn cluster_name(&self, cluster: usize) -> &str {
        &self.topo.clusters[cluster].name
    }

    /// The mutated object `kind`/`name` of a cluster.
    pub fn object(&self, cluster: usize, kind: &str, name: &str) -> Result<&Outcome> {
        self.mutated[cluster]
            .iter()
            .find(|o| o.after["kind"] == kind && o.after["metadata"]["name"] == name)
            .with_context(|| {
                format!(
                    "{} {}: the fixture has no {kind} {name}",
                    self.spec,
                    self.cluster_name(cluster)
                )
            })
    }

    /// Every pod of `group` in every cluster, cluster by cluster.
    pub fn pods<'a>(&'a self, group: &'a RoleGroup) -> Result<Vec<PodRef<'a>>> {
        let mut pods = Vec::new();
        for cluster in 0..self.topo.clusters.len() {
            let o = self.object(cluster, "StatefulSet", &group.statefulset)?;
            let sts = &o.after;
            let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
            let start = sts["spec"]["ordinals"]["start"].as_u64().unwrap_or(0) as u32;
            for ordinal in start..start + replicas {
                pods.push(PodRef {
                    cluster,
                    group,
                    statefulset: sts,
                    namespace: o.namespace.clone(),
                    name: format!("{}-{ordinal}", group.statefulset),
                    ordinal,
                });
            }
        }
        Ok(pods)
    }

    /// Every pod of every role.
    pub fn all_pods(&self) -> Result<Vec<PodRef<'_>>> {
        let mut all = Vec::new();
        for g in self.topo.groups() {
            all.extend(self.pods(g)?);
        }
        Ok(all)
    }
}
