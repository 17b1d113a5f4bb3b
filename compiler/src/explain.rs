//! `straddle explain`: what the compiler decided, per cluster, as text or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::charts::{self, ZkStrings};
use crate::compile::Checked;
use crate::diag::Severity;
use crate::quorum::Survivability;
use crate::spec::{NetworkingMode, QuorumType};
use crate::topology::{RoleGroup, Topology};
use straddle_policy::plan::Op;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub name: String,
    pub digest: String,
    pub networking: NetworkingView,
    pub clusters: Vec<ClusterView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zookeeper: Option<ZooKeeperView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kraft: Option<KraftView>,
    pub survivability: Vec<Survivability>,
    pub warnings: Vec<Warning>,
}

/// A warning of `straddle check`, with the field it is about and the fix.
#[derive(Serialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkingView {
    pub mode: &'static str,
    /// ZooKeeper servers and KRaft controllers, when it differs from `mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_mode: Option<&'static str>,
    pub zone: String,
    pub cluster_domain: String,
    /// What the policy sets on headless Services, per role, for the mesh.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_settings: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub name: String,
    pub rack: String,
    pub roles: Vec<RoleView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    pub role: &'static str,
    pub namespace: String,
    pub statefulset: String,
    pub replicas: u32,
    pub ordinal_start: u32,
    /// IDs reserved for this cluster: `[first, last]`.
    pub id_block: [u32; 2],
    pub nodes: Vec<NodeView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub pod: String,
    pub id: u32,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_cluster_alias: Option<String>,
    /// `linkerd`: the name the other clusters use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZooKeeperView {
    pub quorum: &'static str,
    pub stage: &'static str,
    /// Where the chart reads `servers`, `groups` and `weights`.
    pub settings: [&'static str; 3],
    pub servers: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    pub connect: String,
    /// `linkerd`: the lists differ per cluster (remote servers by mirror
    /// name); `servers`/`connect` above are the first cluster's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_cluster: Vec<ZkClusterView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZkClusterView {
    pub cluster: String,
    pub servers: String,
    pub connect: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KraftView {
    pub cluster_id: String,
    /// Dynamic quorum (KIP-853): what every node bootstraps from and formats with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_controllers: Option<String>,
    /// Static quorum: the voter set every node is configured with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voters: Option<String>,
}

fn role_view(topo: &Topology, g: &RoleGroup, cluster: usize) -> RoleView {
    let slice = &g.slices[cluster];
    let weighted = topo
        .zookeeper
        .as_ref()
        .filter(|z| z.quorum == QuorumType::Hierarchical && std::ptr::eq(&z.group, g));
    RoleView {
        role: g.role.label(),
        namespace: g.namespace.clone(),
        statefulset: g.statefulset.clone(),
        replicas: slice.replicas,
        ordinal_start: slice.ordinal_start,
        id_block: [
            slice.ordinal_start + g.min_id,
            slice.ordinal_start + g.min_id + slice.block.max(1) - 1,
        ],
        nodes: g
            .nodes_in(cluster)
            .map(|n| NodeView {
                pod: n.pod.clone(),
                id: n.id,
                address: n.address.clone(),
                in_cluster_alias: n.alias.clone(),
                mirror: n.mirror.clone(),
                weight: weighted.map(|z| z.staged_weight(n)),
            })
            .collect(),
    }
}

pub fn explain(checked: &Checked, digest: &str) -> Explanation {
    let topo = &checked.topology;
    let clusters = topo
        .clusters
        .iter()
        .enumerate()
        .map(|(ci, c)| ClusterView {
            name: c.name.clone(),
            rack: c.rack.clone(),
            roles: topo.groups().map(|g| role_view(topo, g, ci)).collect(),
        })
        .collect();
    let zookeeper = topo.zookeeper.as_ref().map(|zk| {
        let shape = charts::shape(zk.group.chart);
        let strings = |viewer| {
            shape
                .zookeeper_strings(zk, topo.clusters.len(), viewer)
                .expect("a chart whose ZooKeeper is refused never gets a topology")
        };
        let ZkStrings {
            settings,
            servers,
            groups,
            weights,
            connect,
        } = strings(0);
        let per_cluster = if zk.group.mode == NetworkingMode::Linkerd {
            (0..topo.clusters.len())
                .map(|ci| {
                    let s = strings(ci);
                    ZkClusterView {
                        cluster: topo.clusters[ci].name.clone(),
                        servers: s.servers,
                        connect: s.connect,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        ZooKeeperView {
            quorum: zk.quorum.as_str(),
            stage: zk.stage.as_str(),
            settings,
            servers,
            groups,
            weights,
            connect,
            per_cluster,
        }
    });
    let kraft = topo.kafka.as_ref().and_then(|k| {
        let fixed = k
            .groups()
            .next()
            .is_some_and(|g| charts::shape(g.chart).static_quorum());
        charts::kraft_strings(k).map(|q| KraftView {
            cluster_id: k.cluster_id.clone().unwrap_or_default(),
            bootstrap_servers: (!fixed).then_some(q.bootstrap_servers),
            initial_controllers: (!fixed).then_some(q.initial_controllers),
            voters: fixed.then_some(q.voters),
        })
    });
    Explanation {
        name: topo.name.clone(),
        digest: digest.to_string(),
        networking: NetworkingView {
            mode: topo.networking.mode.as_str(),
            quorum_mode: (topo.networking.quorum_mode != topo.networking.mode)
                .then(|| topo.networking.quorum_mode.as_str()),
            zone: topo.networking.zone.clone(),
            cluster_domain: topo.networking.cluster_domain.clone(),
            service_settings: service_settings(topo),
        },
        clusters,
        zookeeper,
        kraft,
        survivability: checked.survivability.clone(),
        warnings: checked
            .report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .map(|d| Warning {
                path: d.path.clone(),
                message: d.message.clone(),
                fix: d.fix.clone(),
            })
            .collect(),
    }
}

/// One line per headless Service that a mesh configures through the Service
/// itself (annotations, labels, extra ports).
fn service_settings(topo: &Topology) -> Vec<String> {
    let mut out = Vec::new();
    for g in topo.groups() {
        let mut parts = Vec::new();
        for op in charts::headless_ops(g) {
            match op {
                Op::Annotation { key, value } => parts.push(format!("annotation {key}={value}")),
                Op::Label { key, value } => parts.push(format!("label {key}={value}")),
                Op::ServicePort { name, port } => {
                    parts.push(format!("port {name}/{port} (added when missing)"))
                }
                _ => {}
            }
        }
        if !parts.is_empty() {
            out.push(format!(
                "{}/{}: {}",
                g.namespace,
                g.headless,
                parts.join(", ")
            ));
        }
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "keeps quorum" } else { "LOSES QUORUM" }
}

/// The human-readable form.
pub fn to_text(e: &Explanation) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "stretch {}  ({})", e.name, e.digest);
    let n = &e.networking;
    let uses_external_dns = n.mode == "external-dns" || n.quorum_mode == Some("external-dns");
    let _ = writeln!(
        o,
        "networking: {}{}{}",
        n.mode,
        n.quorum_mode
            .map(|q| format!(" (brokers), {q} (quorum)"))
            .unwrap_or_default(),
        if uses_external_dns {
            format!(
                " (zone {}, in-cluster aliases under {})",
                n.zone, n.cluster_domain
            )
        } else {
            String::new()
        }
    );
    for line in &n.service_settings {
        let _ = writeln!(o, "  {line}");
    }
    for c in &e.clusters {
        let _ = writeln!(o, "\ncluster {} (rack {})", c.name, c.rack);
        for r in &c.roles {
            let _ = writeln!(
                o,
                "  {:<18} {}/{}  replicas {}  ordinals from {}  id block {}..={}",
                r.role,
                r.namespace,
                r.statefulset,
                r.replicas,
                r.ordinal_start,
                r.id_block[0],
                r.id_block[1]
            );
            for n in &r.nodes {
                let weight = n
                    .weight
                    .map(|w| format!("  weight {w}"))
                    .unwrap_or_default();
                let _ = writeln!(o, "    id {:<4} {:<28} {}{weight}", n.id, n.pod, n.address);
                if let Some(alias) = &n.in_cluster_alias {
                    let _ = writeln!(o, "         {:<28} in-cluster alias {alias}", "");
                }
                if let Some(mirror) = &n.mirror {
                    let _ = writeln!(o, "         {:<28} from other clusters {mirror}", "");
                }
            }
        }
    }
    if let Some(z) = &e.zookeeper {
        let _ = writeln!(o, "\nzookeeper: {} quorum, stage {}", z.quorum, z.stage);
        let [servers, groups, weights] = z.settings;
        let _ = writeln!(o, "  {servers} = {}", z.servers);
        if let (Some(g), Some(w)) = (&z.groups, &z.weights) {
            let _ = writeln!(o, "  {groups:<17} = {g}");
            let _ = writeln!(o, "  {weights:<17} = {w}");
        }
        let _ = writeln!(o, "  zookeeper.connect = {}", z.connect);
        for c in &z.per_cluster {
            let _ = writeln!(o, "  as seen from {}:", c.cluster);
            let _ = writeln!(o, "    {} = {}", z.settings[0], c.servers);
            let _ = writeln!(o, "    zookeeper.connect = {}", c.connect);
        }
    }
    if let Some(k) = &e.kraft {
        let _ = writeln!(o, "\nkraft: cluster id {}", k.cluster_id);
        if let Some(servers) = &k.bootstrap_servers {
            let _ = writeln!(o, "  controller.quorum.bootstrap.servers = {servers}");
        }
        if let Some(initial) = &k.initial_controllers {
            let _ = writeln!(o, "  initial controllers = {initial}");
        }
        if let Some(voters) = &k.voters {
            let _ = writeln!(o, "  controller.quorum.voters = {voters} (static quorum)");
        }
    }
    let _ = writeln!(o, "\nsurvivability");
    for s in &e.survivability {
        let _ = writeln!(o, "  {} ({} quorum)", s.quorum, s.kind);
        for l in &s.cluster_losses {
            let _ = writeln!(
                o,
                "    lose cluster {:<16} {}",
                l.cluster,
                yes_no(l.keeps_quorum)
            );
        }
        if s.critical_nodes.is_empty() {
            let _ = writeln!(o, "    lose any one node         keeps quorum");
        } else {
            let _ = writeln!(o, "    lose node id {:?}    LOSES QUORUM", s.critical_nodes);
        }
    }
    for w in &e.warnings {
        let _ = writeln!(o, "\nwarning: {}: {}", w.path, w.message);
        if let Some(fix) = &w.fix {
            let _ = writeln!(o, "  fix: {fix}");
        }
    }
    o
}
