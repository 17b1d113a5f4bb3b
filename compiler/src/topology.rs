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

struct Ctx<'a> {
    clusters: &'a [Cluster],
    networking: &'a Networking,
}

impl Ctx<'_> {
    /// Replicas per cluster in cluster order; unknown cluster keys are errors.
    fn per_cluster(&self, errs: &mut Vec<Diagnostic>, path: &str, map: &PerCluster) -> Vec<u32> {
        for name in map.keys() {
            if !self.clusters.iter().any(|c| &c.name == name) {
                errs.push(unknown_cluster(
                    &format!("{path}.{name}"),
                    name,
                    self.clusters,
                ));
            }
        }
        self.clusters
            .iter()
            .map(|c| map.get(&c.name).copied().unwrap_or(0))
            .collect()
    }

    /// (address, in-cluster alias, mirror name) of a node reached through `mode`.
    fn address(
        &self,
        mode: NetworkingMode,
        pod: &str,
        id: u32,
        cluster: usize,
        headless: &str,
        namespace: &str,
    ) -> (String, Option<String>, Option<String>) {
        let n = self.networking;
        let domain = &n.cluster_domain;
        let cluster_name = &self.clusters[cluster].name;
        match mode {
            NetworkingMode::Mcs => (
                format!("{pod}.{cluster_name}.{headless}.{namespace}.svc.{MCS_ZONE}"),
                None,
                None,
            ),
            NetworkingMode::ExternalDns => (
                format!("{pod}.{headless}.{namespace}.svc.{}", n.zone),
                Some(format!("{pod}.{namespace}.svc.{domain}")),
                None,
            ),
            // Remote EndpointSlices (with hostnames) are synced into every
            // cluster, so the native per-pod name resolves everywhere.
            NetworkingMode::Cilium => (
                format!("{pod}.{headless}.{namespace}.svc.{domain}"),
                None,
                None,
            ),
            NetworkingMode::Linkerd => (
                format!("{pod}.{headless}.{namespace}.svc.{domain}"),
                None,
                Some(format!(
                    "{pod}.{headless}-{cluster_name}.{namespace}.svc.{domain}"
                )),
            ),
            // Not a DNS name: the IP of the pod's node (the chart's
            // `${HOST_IP}`), known only when the container starts.
            NetworkingMode::Nodeport => (
                format!("<node-ip>:{}", u32::from(n.first_listener_port) + id),
                None,
                None,
            ),
        }
    }

    /// Lays out a role: slices in cluster order, then its nodes.
    #[allow(clippy::too_many_arguments)]
    fn group(
        &self,
        role: Role,
        chart: Chart,
        namespace: &str,
        release: &str,
        fullname: &str,
        field: &str,
        min_id: u32,
        replicas: &[u32],
        block: Option<u32>,
    ) -> RoleGroup {
        let (statefulset, headless) = charts::shape(chart).statefulset_names(role, fullname);
        let mode = self.networking.mode_of(role);
        let mut slices = Vec::new();
        let mut nodes = Vec::new();
        let mut next_start = 0;
        for (cluster, &n) in replicas.iter().enumerate() {
            let block = block.unwrap_or(n);
            slices.push(Slice {
                cluster,
                replicas: n,
                ordinal_start: next_start,
                block,
            });
            for ordinal in next_start..next_start + n {
                let pod = format!("{statefulset}-{ordinal}");
                let id = ordinal + min_id;
                let (address, alias, mirror) =
                    self.address(mode, &pod, id, cluster, &headless, namespace);
                nodes.push(Node {
                    cluster,
                    ordinal,
                    id,
                    pod,
                    address,
                    alias,
                    mirror,
                    weight: 1,
                });
            }
            next_start += block;
        }
        RoleGroup {
            role,
            chart,
            namespace: namespace.to_string(),
            release: release.to_string(),
            fullname: fullname.to_string(),
            statefulset,
            headless,
            mode,
            field: field.to_string(),
            min_id,
            slices,
            nodes,
        }
    }

    fn ensemble(&self, z: &spec::ZooKeeperSpec, errs: &mut Vec<Diagnostic>) -> Option<Ensemble> {
        let before = errs.len();
        errs.extend(charts::shape(z.chart).check_zookeeper());
        check_dns_label(errs, "spec.zookeeper.release", &z.release);
        check_dns_label(errs, "spec.zookeeper.namespace", &z.namespace);
        let replicas = self.per_cluster(errs, "spec.zookeeper.replicas", &z.replicas);
        let total: u32 = replicas.iter().sum();
        if total == 0 {
            errs.push(
                Diagnostic::error("spec.zookeeper.replicas", "no ZooKeeper servers")
                    .fix("give at least one cluster a server count, e.g. replicas: {cluster-0: 3}"),
            );
        }
        if total + z.min_id.unwrap_or(1) > ZK_MAX_ID + 1 {
            errs.push(
                Diagnostic::error(
                    "spec.zookeeper.replicas",
                    format!("{total} servers, but ZooKeeper server ids must be 1..={ZK_MAX_ID}"),
                )
                .fix("run fewer ZooKeeper servers: 3 to 7 per ensemble is the usual range"),
            );
        }
        let q = &z.quorum;
        let voting_clusters = self.voting_clusters(q, errs);
        if q.kind == QuorumType::Majority {
            if q.stage != RolloutStage::Final {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.stage",
                        format!("stage {} needs a hierarchical quorum: a majority quorum cannot weight the other clusters out", q.stage.as_str()),
                    )
                    .fix("set spec.zookeeper.quorum.type: hierarchical, or stage: final"),
                );
            }
            if !q.weights.is_empty() {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.weights",
                        "weights only apply to a hierarchical quorum",
                    )
                    .fix("set spec.zookeeper.quorum.type: hierarchical, or remove the weights"),
                );
            }
        }
        if q.stage != RolloutStage::Final && replicas.first() == Some(&0) {
            errs.push(
                Diagnostic::error(
                    "spec.zookeeper.quorum.stage",
                    format!(
                        "stage {} keeps quorum in the first cluster ({}), which runs no ZooKeeper server",
                        q.stage.as_str(),
                        self.clusters[0].name
                    ),
                )
                .fix("list the cluster that already runs ZooKeeper first in spec.clusters"),
            );
        }
        if errs.len() > before {
            return None;
        }
        let fullname = charts::fullname(
            z.chart,
            charts::Component::ZooKeeper,
            &z.release,
            z.fullname_override.as_deref(),
        );
        let min_id = min_id(errs, z.chart, Role::ZooKeeper, "spec.zookeeper", z.min_id);
        // cp-zookeeper numbers servers by their position in ZOOKEEPER_SERVERS
        // and takes id = ordinal + 1, so ids must be contiguous: no headroom.
        let mut group = self.group(
            Role::ZooKeeper,
            z.chart,
            &z.namespace,
            &z.release,
            &fullname,
            "spec.zookeeper",
            min_id,
            &replicas,
            None,
        );
        for (name, w) in &q.weights {
            let path = format!("spec.zookeeper.quorum.weights.{name}");
            let Some(ci) = self.clusters.iter().position(|c| &c.name == name) else {
                errs.push(unknown_cluster(&path, name, self.clusters));
                continue;
            };
            let n = replicas[ci] as usize;
            let weights: Vec<u32> = match w {
                Weights::Uniform(w) => vec![*w; n],
                Weights::PerServer(list) => {
                    if list.len() != n {
                        errs.push(
                            Diagnostic::error(
                                &path,
                                format!("{} weights for {n} servers in cluster {name:?}", list.len()),
                            )
                            .fix(format!("give exactly {n} weights (one per server, in ordinal order) or a single number")),
                        );
                        continue;
                    }
                    list.clone()
                }
            };
            for (node, w) in group
                .nodes
                .iter_mut()
                .filter(|n| n.cluster == ci)
                .zip(weights)
            {
                node.weight = w;
            }
        }
        if q.kind == QuorumType::Hierarchical && group.nodes.iter().all(|n| n.weight == 0) {
            errs.push(
                Diagnostic::error(
                    "spec.zookeeper.quorum.weights",
                    "every server has weight 0: nothing can vote",
                )
                .fix("give at least a majority of clusters servers with weight >= 1"),
            );
        }
        if errs.len() > before {
            return None;
        }
        Some(Ensemble {
            group,
            quorum: q.kind,
            stage: q.stage,
            voting_clusters,
        })
    }

    /// How many of the first clusters vote at the spec's rollout stage.
    fn voting_clusters(&self, q: &spec::ZooKeeperQuorum, errs: &mut Vec<Diagnostic>) -> usize {
        let all = self.clusters.len();
        match (q.stage, q.voting_clusters) {
            (RolloutStage::FirstClusters, Some(n)) if n >= 1 && (n as usize) < all => n as usize,
            (RolloutStage::FirstClusters, Some(n)) => {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.votingClusters",
                        format!(
                            "{n} voting clusters: with {all} member clusters it must be 1 to {}",
                            all.saturating_sub(1)
                        ),
                    )
                    .fix("use stage: final once every cluster votes"),
                );
                all
            }
            (RolloutStage::FirstClusters, None) => {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.stage",
                        "stage first-clusters needs spec.zookeeper.quorum.votingClusters",
                    )
                    .fix("add votingClusters: 2 (the first two clusters in spec.clusters vote)"),
                );
                all
            }
            (_, Some(_)) => {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.votingClusters",
                        format!(
                            "votingClusters only applies to stage: first-clusters, not {}",
                            q.stage.as_str()
                        ),
                    )
                    .fix("remove votingClusters, or set stage: first-clusters"),
                );
                all
            }
            (RolloutStage::FirstCluster, None) => 1,
            (_, None) => all,
        }
    }

    fn kafka(
        &self,
        k: &spec::KafkaSpec,
        have_zk: bool,
        errs: &mut Vec<Diagnostic>,
    ) -> Option<Kafka> {
        let before = errs.len();
        check_dns_label(errs, "spec.kafka.release", &k.release);
        check_dns_label(errs, "spec.kafka.namespace", &k.namespace);
        errs.extend(charts::shape(k.chart).check_kafka(k));
        match k.mode {
            KafkaMode::Zookeeper => {
                if !have_zk {
                    errs.push(
                        Diagnostic::error(
                            "spec.kafka.mode",
                            "ZooKeeper mode needs a stretched ZooKeeper",
                        )
                        .fix("add spec.zookeeper, or use mode: kraft"),
                    );
                }
                if k.controllers.is_some() {
                    errs.push(
                        Diagnostic::error(
                            "spec.kafka.controllers",
                            "controllers only exist in KRaft mode",
                        )
                        .fix("remove spec.kafka.controllers, or set mode: kraft"),
                    );
                }
                if k.brokers.is_none() {
                    errs.push(
                        Diagnostic::error("spec.kafka.brokers", "no brokers")
                            .fix("add spec.kafka.brokers.replicas with a count per cluster"),
                    );
                }
                if k.cluster_id.is_some() {
                    errs.push(
                        Diagnostic::error("spec.kafka.clusterId", "a cluster ID is only set in KRaft mode; ZooKeeper mode keeps it in ZooKeeper")
                            .fix("remove spec.kafka.clusterId"),
                    );
                }
            }
            KafkaMode::Kraft => {
                match &k.cluster_id {
                    None => errs.push(
                        Diagnostic::error(
                            "spec.kafka.clusterId",
                            "KRaft needs one cluster ID for the whole stretch",
                        )
                        .fix(format!(
                            "add clusterId: {} (or any output of `kafka-storage.sh random-uuid`)",
                            suggested_cluster_id(&k.release)
                        )),
                    ),
                    Some(id) => {
                        if URL_SAFE_NO_PAD.decode(id).map(|b| b.len()) != Ok(16) || id.len() != 22 {
                            errs.push(
                                Diagnostic::error(
                                    "spec.kafka.clusterId",
                                    format!("{id:?} is not a Kafka cluster ID (22 characters of base64url, 16 bytes)"),
                                )
                                .fix("generate one with `kafka-storage.sh random-uuid`"),
                            );
                        }
                    }
                }
                match &k.controllers {
                    None => errs.push(
                        Diagnostic::error("spec.kafka.controllers", "KRaft needs controllers")
                            .fix("add spec.kafka.controllers.replicas, e.g. {east: 1, west: 1, witness: 1}"),
                    ),
                    Some(c) if c.combined && k.brokers.is_some() => errs.push(
                        Diagnostic::error(
                            "spec.kafka.brokers",
                            "combined controllers already act as brokers; the bitnami chart then runs no broker StatefulSet",
                        )
                        .fix("remove spec.kafka.brokers, or set spec.kafka.controllers.combined: false"),
                    ),
                    Some(_) => {}
                }
            }
        }
        if errs.len() > before {
            return None;
        }
        let fullname = charts::fullname(
            k.chart,
            charts::Component::Kafka,
            &k.release,
            k.fullname_override.as_deref(),
        );
        let mut layout = |role: Role, field: &str, r: &spec::RoleSpec| {
            let replicas = self.per_cluster(errs, &format!("{field}.replicas"), &r.replicas);
            let max = replicas.iter().copied().max().unwrap_or(0);
            let block = r
                .id_block_size
                .unwrap_or_else(|| max.max(1).div_ceil(10) * 10);
            if block == 0 {
                errs.push(
                    Diagnostic::error(
                        format!("{field}.idBlockSize"),
                        "an ID block of 0 holds no node",
                    )
                    .fix("use at least the largest replica count"),
                );
            }
            for (ci, &n) in replicas.iter().enumerate() {
                if n > block {
                    errs.push(
                        Diagnostic::error(
                            format!("{field}.replicas.{}", self.clusters[ci].name),
                            format!("{n} nodes do not fit the ID block of {block} IDs per cluster"),
                        )
                        .fix(format!(
                            "raise {field}.idBlockSize to at least {n}, or lower the replicas"
                        )),
                    );
                }
            }
            if replicas.iter().all(|&n| n == 0) {
                errs.push(
                    Diagnostic::error(
                        format!("{field}.replicas"),
                        format!("no {} nodes in any cluster", role.label()),
                    )
                    .fix("give at least one cluster a count"),
                );
            }
            let min_id = min_id(errs, k.chart, role, field, r.min_id);
            self.group(
                role,
                k.chart,
                &k.namespace,
                &k.release,
                &fullname,
                field,
                min_id,
                &replicas,
                Some(block),
            )
        };
        let controllers = k.controllers.as_ref().map(|c| {
            layout(
                Role::Controller {
                    combined: c.combined,
                },
                "spec.kafka.controllers",
                &c.role(),
            )
        });
        let brokers = k
            .brokers
            .as_ref()
            .map(|b| layout(Role::Broker, "spec.kafka.brokers", b));
        if let (Some(c), Some(b)) = (&controllers, &brokers) {
            let (c_lo, c_hi) = c.id_range();
            let (b_lo, b_hi) = b.id_range();
            if c_lo < b_hi && b_lo < c_hi {
                errs.push(
                    Diagnostic::error(
                        "spec.kafka.brokers.minId",
                        format!(
                            "broker IDs {b_lo}..{} overlap controller IDs {c_lo}..{}: KRaft nodes share one ID space",
                            b_hi - 1,
                            c_hi - 1
                        ),
                    )
                    .fix(format!("set spec.kafka.brokers.minId to at least {c_hi}, or shrink the ID blocks")),
                );
            }
        }
        if let Some(b) = brokers
            .as_ref()
            .filter(|b| b.mode == NetworkingMode::Nodeport)
        {
            let first = u32::from(self.networking.first_listener_port);
            let (_, end) = b.id_range();
            let last_id = end.saturating_sub(1);
            if first + last_id > NODE_PORT_MAX {
                errs.push(
                    Diagnostic::error(
                        "spec.kafka.brokers.idBlockSize",
                        format!(
                            "broker IDs reach {last_id}: their NodePorts firstListenerPort + id = {first} + {last_id} exceed {NODE_PORT_MAX}, the top of the NodePort range"
                        ),
                    )
                    .fix("use smaller ID blocks (idBlockSize), or a lower spec.networking.firstListenerPort (and the chart's nodeport.firstListenerPort)"),
                );
            }
        }
        if errs.len() > before {
            return None;
        }
        Some(Kafka {
            mode: k.mode,
            brokers,
            controllers,
            cluster_id: k.cluster_id.clone(),
            follower_fetching: k.follower_fetching,
        })
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
