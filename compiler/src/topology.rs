//! From a spec to a topology: every node of every role in every cluster, with
//! its globally unique ID, pod name and cross-cluster addresses.
//!
//! All checks that need more than one field live here, next to the
//! allocation they protect; each error names the field and the fix.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::charts;
use crate::diag::Diagnostic;
use crate::spec::{
    self, Chart, KafkaMode, NetworkingMode, PerCluster, QuorumType, RolloutStage, StretchCluster,
    Weights,
};

mod allocate;
use allocate::Ctx;

/// The highest ZooKeeper server id (`myid` must be 1..=255).
pub const ZK_MAX_ID: u32 = 255;
pub const MCS_ZONE: &str = "clusterset.local";
/// cp-kafka `nodeport.firstListenerPort` default.
pub const DEFAULT_FIRST_LISTENER_PORT: u16 = 31090;
/// The top of Kubernetes' default NodePort range (30000-32767).
const NODE_PORT_MAX: u32 = 32767;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ZooKeeper,
    Broker,
    /// KRaft controller; `combined` controllers are also brokers.
    Controller {
        combined: bool,
    },
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::ZooKeeper => "zookeeper",
            Role::Broker => "broker",
            Role::Controller { combined: false } => "controller",
            Role::Controller { combined: true } => "controller+broker",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub rack: String,
}

/// One cluster's share of a role.
#[derive(Debug, Clone)]
pub struct Slice {
    pub cluster: usize,
    pub replicas: u32,
    pub ordinal_start: u32,
    /// IDs reserved for this cluster (>= replicas).
    pub block: u32,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub cluster: usize,
    pub ordinal: u32,
    pub id: u32,
    pub pod: String,
    /// The name every cluster uses to reach this node (advertised listeners,
    /// KRaft voters).
    pub address: String,
    /// `external-dns` only: the in-cluster Service name for this node
    /// (LoadBalancer at home, ExternalName elsewhere). ZooKeeper peers use it,
    /// so local traffic stays in the cluster.
    pub alias: Option<String>,
    /// `linkerd` only: the name the *other* clusters use (the mirrored
    /// headless Service `<svc>-<cluster>`); `address` is the home name.
    pub mirror: Option<String>,
    /// ZooKeeper hierarchical weight in the final stage.
    pub weight: u32,
}

impl Node {
    /// The name ZooKeeper peers and clients in cluster `viewer` use.
    pub fn zk_host(&self, viewer: usize) -> &str {
        match &self.mirror {
            Some(mirror) if viewer != self.cluster => mirror,
            _ => self.alias.as_deref().unwrap_or(&self.address),
        }
    }
}

/// One StatefulSet shape, stretched.
#[derive(Debug, Clone)]
pub struct RoleGroup {
    pub role: Role,
    pub chart: Chart,
    pub namespace: String,
    /// The Helm release the chart is installed as.
    pub release: String,
    /// The chart's fullname (release-derived prefix of every object).
    pub fullname: String,
    pub statefulset: String,
    pub headless: String,
    /// How this role's nodes are reached (`networking.mode` or `quorumMode`).
    pub mode: NetworkingMode,
    /// Spec field of this role, e.g. `spec.kafka.brokers`.
    pub field: String,
    /// bitnami `KAFKA_MIN_ID`; 1 for cp ZooKeeper (id = ordinal + 1), 0 for cp Kafka.
    pub min_id: u32,
    pub slices: Vec<Slice>,
    pub nodes: Vec<Node>,
}

impl RoleGroup {
    pub fn nodes_in(&self, cluster: usize) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.cluster == cluster)
    }

    pub fn id_range(&self) -> (u32, u32) {
        let first = self.slices.first().map_or(0, |s| s.ordinal_start);
        let last = self.slices.last().map_or(0, |s| s.ordinal_start + s.block);
        (first + self.min_id, last + self.min_id)
    }
}

#[derive(Debug, Clone)]
pub struct Ensemble {
    pub group: RoleGroup,
    pub quorum: QuorumType,
    pub stage: RolloutStage,
    /// Servers of clusters `0..voting_clusters` carry their weight at this
    /// stage; the others have weight 0 (all clusters at `final`).
    pub voting_clusters: usize,
}

impl Ensemble {
    /// Weights in force at the configured stage.
    pub fn staged_weight(&self, node: &Node) -> u32 {
        if node.cluster < self.voting_clusters {
            node.weight
        } else {
            0
        }
    }

    /// The same ensemble at another rollout stage.
    pub fn at_stage(&self, stage: RolloutStage, voting_clusters: usize) -> Ensemble {
        Ensemble {
            stage,
            voting_clusters,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Kafka {
    pub mode: KafkaMode,
    pub brokers: Option<RoleGroup>,
    pub controllers: Option<RoleGroup>,
    pub cluster_id: Option<String>,
    pub follower_fetching: bool,
}

impl Kafka {
    pub fn groups(&self) -> impl Iterator<Item = &RoleGroup> {
        self.controllers.iter().chain(self.brokers.iter())
    }

    /// KRaft directory id of a controller: derived from the cluster id and the
    /// node id so that every cluster computes the same initial-controllers list.
    pub fn directory_id(&self, node_id: u32) -> String {
        let cluster_id = self.cluster_id.as_deref().unwrap_or("");
        let mut salt = 0u32;
        loop {
            let mut h = Sha256::new();
            h.update(b"straddle/kraft-directory-id/");
            h.update(cluster_id.as_bytes());
            h.update(node_id.to_le_bytes());
            h.update(salt.to_le_bytes());
            let id = URL_SAFE_NO_PAD.encode(&h.finalize()[..16]);
            // Kafka never hands out ids that start with '-' (they read as CLI flags).
            if !id.starts_with('-') {
                return id;
            }
            salt += 1;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Networking {
    /// Brokers (and the quorum unless `quorum_mode` differs).
    pub mode: NetworkingMode,
    /// ZooKeeper servers and KRaft controllers.
    pub quorum_mode: NetworkingMode,
    pub zone: String,
    pub cluster_domain: String,
    pub first_listener_port: u16,
}

impl Networking {
    /// The mode of a role: brokers (and combined controllers, which are
    /// brokers too) use `mode`, quorum-only roles `quorum_mode`.
    pub fn mode_of(&self, role: Role) -> NetworkingMode {
        match role {
            Role::Broker | Role::Controller { combined: true } => self.mode,
            Role::ZooKeeper | Role::Controller { combined: false } => self.quorum_mode,
        }
    }

    pub fn uses(&self, mode: NetworkingMode) -> bool {
        self.mode == mode || self.quorum_mode == mode
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    pub clusters: Vec<Cluster>,
    pub networking: Networking,
    pub zookeeper: Option<Ensemble>,
    pub kafka: Option<Kafka>,
}

impl Topology {
    pub fn groups(&self) -> impl Iterator<Item = &RoleGroup> {
        self.zookeeper
            .iter()
            .map(|z| &z.group)
            .chain(self.kafka.iter().flat_map(|k| k.groups()))
    }

    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c.name == name)
    }

    pub fn namespaces(&self) -> Vec<String> {
        let mut ns: Vec<String> = self.groups().map(|g| g.namespace.clone()).collect();
        ns.sort();
        ns.dedup();
        ns
    }
}

/// Checks a parsed spec and builds its topology. Returns every problem found,
/// not just the first.
pub fn build(doc: &StretchCluster) -> Result<Topology, Vec<Diagnostic>> {
    let mut errs = Vec::new();
    if doc.api_version != spec::API_VERSION {
        errs.push(
            Diagnostic::error(
                "apiVersion",
                format!("unknown apiVersion {:?}", doc.api_version),
            )
            .fix(format!("set apiVersion: {}", spec::API_VERSION)),
        );
    }
    if doc.kind != spec::KIND {
        errs.push(
            Diagnostic::error("kind", format!("unknown kind {:?}", doc.kind))
                .fix(format!("set kind: {}", spec::KIND)),
        );
    }
    check_dns_label(&mut errs, "metadata.name", &doc.metadata.name);
    let s = &doc.spec;

    let mut clusters = Vec::new();
    if s.clusters.is_empty() {
        errs.push(
            Diagnostic::error("spec.clusters", "no member clusters")
                .fix("list at least two clusters under spec.clusters"),
        );
    }
    for (i, c) in s.clusters.iter().enumerate() {
        let path = format!("spec.clusters[{i}].name");
        check_dns_label(&mut errs, &path, &c.name);
        if s.clusters[..i].iter().any(|o| o.name == c.name) {
            errs.push(
                Diagnostic::error(&path, format!("cluster {:?} is listed twice", c.name))
                    .fix("give every member cluster a unique name (its MCS cluster id)"),
            );
        }
        if let Some(rack) = &c.rack
            && (rack.is_empty() || rack.contains([',', ' ', '=', '"', ';']))
        {
            errs.push(
                Diagnostic::error(
                    format!("spec.clusters[{i}].rack"),
                    format!("rack {rack:?} is not usable as a Kafka broker.rack"),
                )
                .fix("use a short label without spaces, commas, quotes or '='"),
            );
        }
        clusters.push(Cluster {
            name: c.name.clone(),
            rack: c.rack().to_string(),
        });
    }

    let networking = networking(s, &mut errs);
    if s.zookeeper.is_none() && s.kafka.is_none() {
        errs.push(
            Diagnostic::error("spec", "nothing to stretch")
                .fix("add spec.zookeeper, spec.kafka, or both"),
        );
    }

    // Allocation needs valid cluster names; stop here if they are not.
    if !errs.is_empty() {
        return Err(errs);
    }

    let ctx = Ctx {
        clusters: &clusters,
        networking: &networking,
    };
    let zookeeper = s
        .zookeeper
        .as_ref()
        .and_then(|z| ctx.ensemble(z, &mut errs));
    let kafka = s
        .kafka
        .as_ref()
        // Declared, not built: a ZooKeeper refused for its own reasons
        // (its chart, say) has its own error; "needs a ZooKeeper" would
        // only mislead.
        .and_then(|k| ctx.kafka(k, s.zookeeper.is_some(), &mut errs));

    let topo = Topology {
        name: doc.metadata.name.clone(),
        clusters,
        networking,
        zookeeper,
        kafka,
    };
    check_object_names(&topo, &mut errs);
    if let Some(ms) = &s.must_survive {
        for (i, c) in ms.clusters.iter().enumerate() {
            if topo.cluster_index(c).is_none() {
                errs.push(unknown_cluster(
                    &format!("spec.mustSurvive.clusters[{i}]"),
                    c,
                    &topo.clusters,
                ));
            }
        }
    }
    if errs.is_empty() { Ok(topo) } else { Err(errs) }
}

/// Checks the networking modes against the roles they must carry, and
/// resolves defaults. Each refusal says why the mode cannot work for that role.
fn networking(s: &spec::StretchSpec, errs: &mut Vec<Diagnostic>) -> Networking {
    use NetworkingMode::{ExternalDns, Linkerd, Mcs, Nodeport};
    let n = &s.networking;
    let mode = n.mode;
    let quorum_mode = n.quorum_mode.unwrap_or(mode);
    // The field that chose the quorum's mode, for messages.
    let quorum_field = if n.quorum_mode.is_some() {
        "spec.networking.quorumMode"
    } else {
        "spec.networking.mode"
    };
    let kafka = s.kafka.as_ref();
    let combined = kafka
        .and_then(|k| k.controllers.as_ref())
        .is_some_and(|c| c.combined);
    let has_brokers = kafka.is_some_and(|k| k.brokers.is_some()) || combined;
    let has_controllers = kafka.is_some_and(|k| k.controllers.is_some() && !combined);
    let has_zookeeper = s.zookeeper.is_some();

    if mode == Linkerd && has_brokers {
        errs.push(
            Diagnostic::error(
                "spec.networking.mode",
                "linkerd cannot carry Kafka advertised listeners: a broker advertises one host to every client and broker in every cluster, but a Linkerd mirror name (<pod>.<svc>-<cluster>) exists only in the other clusters, never in the broker's own",
            )
            .fix("use linkerd for the quorum only: set spec.networking.quorumMode: linkerd, and mode: cilium, mcs, external-dns or nodeport for the brokers"),
        );
    }
    if quorum_mode == Linkerd && has_controllers {
        errs.push(
            Diagnostic::error(
                quorum_field,
                "linkerd cannot carry the KRaft controller quorum: the initial-controllers list and each controller's advertised CONTROLLER endpoint are stored in the metadata log and must be the same name in every cluster, but a Linkerd mirror name exists only in the other clusters",
            )
            .fix("use linkerd for a ZooKeeper ensemble only; for KRaft controllers use mcs, cilium or external-dns"),
        );
    }
    if quorum_mode == Nodeport && (has_zookeeper || has_controllers) {
        errs.push(
            Diagnostic::error(
                quorum_field,
                "nodeport cannot carry a quorum: every server's peer list names the other servers in advance, but a NodePort address is the IP of whichever node the pod lands on, known only when it starts",
            )
            .fix("set spec.networking.quorumMode to mcs, cilium, external-dns or linkerd (nodeport stays for the brokers)"),
        );
    }
    if let Some(k) = kafka
        && has_brokers
    {
        errs.extend(charts::shape(k.chart).check_broker_mode(mode));
    }
    if mode == Nodeport && !has_brokers {
        errs.push(
            Diagnostic::error(
                "spec.networking.mode",
                "nodeport only exposes Kafka brokers, and this spec has none",
            )
            .fix("use mode: mcs, cilium, external-dns or linkerd"),
        );
    }
    let first_listener_port = match n.first_listener_port {
        Some(_) if mode != Nodeport => {
            errs.push(
                Diagnostic::error(
                    "spec.networking.firstListenerPort",
                    "firstListenerPort only applies to mode: nodeport",
                )
                .fix("remove spec.networking.firstListenerPort, or set mode: nodeport"),
            );
            DEFAULT_FIRST_LISTENER_PORT
        }
        Some(p) if u32::from(p) < 30000 || u32::from(p) > NODE_PORT_MAX => {
            errs.push(
                Diagnostic::error(
                    "spec.networking.firstListenerPort",
                    format!("{p} is outside the NodePort range 30000-{NODE_PORT_MAX}"),
                )
                .fix("use the cp-kafka chart's nodeport.firstListenerPort (default 31090)"),
            );
            p
        }
        Some(p) => p,
        None => DEFAULT_FIRST_LISTENER_PORT,
    };

    let uses = |m: NetworkingMode| mode == m || quorum_mode == m;
    let zone = match (&n.zone, uses(ExternalDns)) {
        (None, true) => {
            errs.push(
                Diagnostic::error("spec.networking.zone", "external-dns needs a DNS zone")
                    .fix("set spec.networking.zone to the zone external-dns manages, e.g. stretch.example.com"),
            );
            String::new()
        }
        (Some(z), true) => {
            check_dns_name(errs, "spec.networking.zone", z);
            z.trim_end_matches('.').to_string()
        }
        (Some(_), false) => {
            let why = if uses(Mcs) {
                "mcs names are always under clusterset.local; a zone has no effect"
            } else {
                "only external-dns names live in a zone; a zone has no effect here"
            };
            errs.push(
                Diagnostic::error("spec.networking.zone", why)
                    .fix("remove spec.networking.zone, or use mode: external-dns"),
            );
            String::new()
        }
        (None, false) if uses(Mcs) => MCS_ZONE.to_string(),
        (None, false) => String::new(),
    };
    check_dns_name(errs, "spec.networking.clusterDomain", &n.cluster_domain);
    Networking {
        mode,
        quorum_mode,
        zone,
        cluster_domain: n.cluster_domain.clone(),
        first_listener_port,
    }
}

/// Names must be valid Kubernetes objects everywhere: pod names are DNS labels.
fn check_object_names(topo: &Topology, errs: &mut Vec<Diagnostic>) {
    let groups: Vec<&RoleGroup> = topo.groups().collect();
    for (i, g) in groups.iter().enumerate() {
        if groups[..i]
            .iter()
            .any(|o| o.statefulset == g.statefulset && o.namespace == g.namespace)
        {
            errs.push(
                Diagnostic::error(
                    format!(
                        "{}.release",
                        g.field
                            .rsplit_once('.')
                            .map_or(g.field.as_str(), |(head, _)| head)
                    ),
                    format!(
                        "two roles would use StatefulSet {}/{}",
                        g.namespace, g.statefulset
                    ),
                )
                .fix("use different Helm releases (or namespaces) for ZooKeeper and Kafka"),
            );
        }
        let longest = g.nodes.iter().map(|n| n.pod.len()).max().unwrap_or(0);
        if longest > 63 {
            errs.push(
                Diagnostic::error(
                    format!(
                        "{}.release",
                        g.field
                            .rsplit_once('.')
                            .map_or(g.field.as_str(), |(head, _)| head)
                    ),
                    format!("pod names reach {longest} characters; Kubernetes allows 63"),
                )
                .fix("use a shorter release name or fullnameOverride"),
            );
        }
        for n in &g.nodes {
            if n.address.len() > 253 || n.address.split('.').any(|l| l.len() > 63) {
                errs.push(
                    Diagnostic::error(
                        "spec.networking",
                        format!(
                            "address {} is longer than DNS allows (253, labels 63)",
                            n.address
                        ),
                    )
                    .fix("use shorter release, namespace, cluster or zone names"),
                );
                break;
            }
        }
    }
}

fn unknown_cluster(path: &str, name: &str, clusters: &[Cluster]) -> Diagnostic {
    let known: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    Diagnostic::error(path, format!("{name:?} is not a member cluster")).fix(format!(
        "use one of the names under spec.clusters: {}",
        known.join(", ")
    ))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_dns_label(errs: &mut Vec<Diagnostic>, path: &str, s: &str) {
    if !is_dns_label(s) {
        errs.push(
            Diagnostic::error(path, format!("{s:?} is not a valid DNS label"))
                .fix("use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"),
        );
    }
}

fn check_dns_name(errs: &mut Vec<Diagnostic>, path: &str, s: &str) {
    let s = s.trim_end_matches('.');
    if s.is_empty() || s.len() > 253 || !s.split('.').all(is_dns_label) {
        errs.push(
            Diagnostic::error(path, format!("{s:?} is not a valid DNS name"))
                .fix("use dot-separated lowercase DNS labels, e.g. stretch.example.com"),
        );
    }
}

/// A stable cluster ID to suggest in an error message.
fn suggested_cluster_id(seed: &str) -> String {
    let h = Sha256::digest(format!("straddle/suggested-cluster-id/{seed}"));
    let mut id = URL_SAFE_NO_PAD.encode(&h[..16]);
    if id.starts_with('-') {
        id.replace_range(..1, "A");
    }
    id
}

/// The id of ordinal 0 of a role: the chart's fixed rule, or the offset the
/// spec's `minId` (or the chart's default) gives.
fn min_id(
    errs: &mut Vec<Diagnostic>,
    chart: Chart,
    role: Role,
    field: &str,
    spec_min_id: Option<u32>,
) -> u32 {
    match charts::shape(chart).id_rule(role) {
        charts::IdRule::Offset(default) => spec_min_id.unwrap_or(default),
        charts::IdRule::Fixed(offset) => {
            if spec_min_id.is_some() {
                errs.push(
                    Diagnostic::error(
                        format!("{field}.minId"),
                        format!(
                            "{} takes the id from the pod ordinal (ordinal + {offset}); it has no minId",
                            chart.as_str()
                        ),
                    )
                    .fix(format!("remove {field}.minId")),
                );
            }
            offset
        }
    }
}
