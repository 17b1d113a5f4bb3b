//! The stretch spec: what the user writes (`apiVersion: straddle.dev/v1alpha1`,
//! `kind: StretchCluster`). Types only; checks live in `validate`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "straddle.dev/v1alpha1";
pub const KIND: &str = "StretchCluster";

/// One Kafka and/or ZooKeeper deployment stretched across Kubernetes clusters.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StretchCluster {
    /// Must be `straddle.dev/v1alpha1`.
    pub api_version: String,
    /// Must be `StretchCluster`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: StretchSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name of the stretch; shown by `describe()` and in OCI annotations.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StretchSpec {
    /// Member clusters, in a fixed order. The order decides ID blocks and
    /// server-list order: append new clusters at the end, never reorder.
    pub clusters: Vec<ClusterSpec>,
    pub networking: Networking,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zookeeper: Option<ZooKeeperSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSpec>,
    /// Losses every quorum must survive; the compiler refuses a spec whose
    /// quorums cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_survive: Option<MustSurvive>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Cluster name; also its MCS cluster id (`cluster.clusterset.k8s.io`).
    /// An RFC 1123 label.
    pub name: String,
    /// Rack / zone label; becomes Kafka `broker.rack`. Defaults to the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

impl ClusterSpec {
    pub fn rack(&self) -> &str {
        self.rack.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkingMode {
    /// Multi-Cluster Services (Submariner, Cilium MCS, GKE MCS): per-pod names
    /// `<pod>.<cluster>.<svc>.<ns>.svc.clusterset.local`, one `ServiceExport`
    /// per headless Service.
    Mcs,
    /// One LoadBalancer Service per node with an external-dns hostname under
    /// `zone`; other clusters reach it through an `ExternalName` Service.
    ExternalDns,
    /// Cilium ClusterMesh global services: the headless Services are annotated
    /// `service.cilium.io/global: "true"`, remote endpoints are synced into
    /// every cluster, and every node keeps its native name
    /// `<pod>.<svc>.<ns>.svc.<clusterDomain>` (pod names are globally unique
    /// because each cluster has its own ordinal block).
    Cilium,
    /// Linkerd multicluster (headless mirroring): other clusters reach a node
    /// as `<pod>.<svc>-<cluster>.<ns>.svc.<clusterDomain>`. Mirror names exist
    /// only in the *other* clusters, so this works for peer lists that are
    /// per-server configuration (ZooKeeper), never for Kafka advertised
    /// listeners: use it as `quorumMode`.
    Linkerd,
    /// Kafka brokers only (cp-helm-charts): one NodePort Service per broker;
    /// each broker advertises `<IP of its node>:<firstListenerPort + id>`
    /// (the chart's EXTERNAL listener) and brokers replicate over it.
    Nodeport,
}

impl NetworkingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkingMode::Mcs => "mcs",
            NetworkingMode::ExternalDns => "external-dns",
            NetworkingMode::Cilium => "cilium",
            NetworkingMode::Linkerd => "linkerd",
            NetworkingMode::Nodeport => "nodeport",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Networking {
    /// How nodes reach each other across clusters: Kafka brokers always, and
    /// the quorum (ZooKeeper servers, KRaft controllers) unless `quorumMode` is set.
    pub mode: NetworkingMode,
    /// A different mode for the quorum's peer lists (ZooKeeper servers, KRaft
    /// controllers), e.g. `linkerd` for ZooKeeper with `nodeport` brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_mode: Option<NetworkingMode>,
    /// `nodeport` only: the cp-kafka chart's `nodeport.firstListenerPort`; broker
    /// `id` listens and is exposed on `firstListenerPort + id`. Default 31090.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_listener_port: Option<u16>,
    /// DNS zone for `external-dns` hostnames, e.g. `stretch.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Kubernetes cluster domain of every member cluster.
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
}

fn default_cluster_domain() -> String {
    "cluster.local".to_string()
}

/// The Helm chart whose rendered objects the policy expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Chart {
    /// confluentinc/cp-helm-charts 0.6 (cp-zookeeper, cp-kafka subcharts).
    CpHelmCharts,
    /// bitnami/kafka 32.x (KRaft).
    Bitnami,
    /// CloudPirates-io/helm-charts `kafka` 0.1 (official apache/kafka image, KRaft).
    Cloudpirates,
}

impl Chart {
    pub fn as_str(self) -> &'static str {
        match self {
            Chart::CpHelmCharts => "cp-helm-charts",
            Chart::Bitnami => "bitnami",
            Chart::Cloudpirates => "cloudpirates",
        }
    }
}

/// Replicas per member cluster (clusters left out run none).
pub type PerCluster = BTreeMap<String, u32>;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ZooKeeperSpec {
    pub chart: Chart,
    /// Helm release name.
    pub release: String,
    pub namespace: String,
    /// The chart's `fullnameOverride`, if the release sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fullname_override: Option<String>,
    /// The server id of ordinal 0, where the chart has a value for it
    /// (CloudPirates `serverIdOffset`, default 0); cp-zookeeper's is fixed (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_id: Option<u32>,
    /// ZooKeeper servers per cluster.
    pub replicas: PerCluster,
    #[serde(default)]
    pub quorum: ZooKeeperQuorum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuorumType {
    /// A majority of all servers.
    #[default]
    Majority,
    /// One group per cluster (ZooKeeper hierarchical quorums): a majority of
    /// groups, each with a majority of its weight.
    Hierarchical,
}

impl QuorumType {
    /// The spec's spelling (`spec.zookeeper.quorum.type`).
    pub fn as_str(self) -> &'static str {
        match self {
            QuorumType::Majority => "majority",
            QuorumType::Hierarchical => "hierarchical",
        }
    }
}

/// Where a hierarchical rollout stands (seed 000 steps 8-12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStage {
    /// Only the first cluster's servers carry weight; the others join as
    /// weight-0 followers, so the first cluster keeps quorum alone.
    FirstCluster,
    /// Only the servers of the first `votingClusters` clusters carry weight:
    /// the step between `first-cluster` and `final` that keeps every quorum of
    /// the old and the new configuration overlapping when three or more
    /// clusters vote (see `straddle plan`).
    FirstClusters,
    /// Every server carries its configured weight.
    #[default]
    Final,
}

impl RolloutStage {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStage::FirstCluster => "first-cluster",
            RolloutStage::FirstClusters => "first-clusters",
            RolloutStage::Final => "final",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ZooKeeperQuorum {
    #[serde(default, rename = "type")]
    pub kind: QuorumType,
    #[serde(default)]
    pub stage: RolloutStage,
    /// With `stage: first-clusters`: how many of the first clusters (in
    /// `spec.clusters` order) vote; the others' servers have weight 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voting_clusters: Option<u32>,
    /// Hierarchical only: server weights per cluster (group), either one
    /// weight for every server of the cluster or one per server in ordinal
    /// order. Weight 0 servers replicate but never vote or lead. Default 1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, Weights>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Weights {
    Uniform(u32),
    PerServer(Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaMode {
    /// Brokers keep metadata in the stretched ZooKeeper of `spec.zookeeper`.
    Zookeeper,
    /// KRaft: controllers keep metadata; one cluster ID for the whole stretch.
    Kraft,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSpec {
    pub chart: Chart,
    pub release: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fullname_override: Option<String>,
    pub mode: KafkaMode,
    /// Broker-only nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<RoleSpec>,
    /// KRaft controllers (dedicated, or combined controller+broker nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controllers: Option<ControllerSpec>,
    /// KRaft cluster ID shared by every cluster: 22 characters of base64url
    /// (`kafka-storage.sh random-uuid`). Replaces the chart's per-install
    /// random one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// KRaft quorum: 1 = dynamic (`controller.quorum.bootstrap.servers` +
    /// initial controllers, bitnami default), 0 = static `controller.quorum.voters`.
    #[serde(default = "default_kraft_version")]
    pub kraft_version: u8,
    /// Set `replica.selector.class` to the rack-aware selector so consumers
    /// with `client.rack` read from their own cluster.
    #[serde(default)]
    pub follower_fetching: bool,
}

fn default_kraft_version() -> u8 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleSpec {
    /// Nodes per cluster.
    pub replicas: PerCluster,
    /// IDs reserved per cluster, so a cluster can grow without renumbering
    /// the others. Default: the largest replica count rounded up to a multiple of 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_block_size: Option<u32>,
    /// bitnami `*.minId`: added to the ordinal to make `node.id`
    /// (defaults: controllers 0, brokers 100, as the chart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_id: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerSpec {
    /// Controllers per cluster.
    pub replicas: PerCluster,
    /// As for brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_block_size: Option<u32>,
    /// As for brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_id: Option<u32>,
    /// Controllers also act as brokers (bitnami `controller.controllerOnly: false`).
    #[serde(default)]
    pub combined: bool,
}

impl ControllerSpec {
    pub fn role(&self) -> RoleSpec {
        RoleSpec {
            replicas: self.replicas.clone(),
            id_block_size: self.id_block_size,
            min_id: self.min_id,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MustSurvive {
    /// The loss of any one whole cluster.
    #[serde(default)]
    pub any_cluster: bool,
    /// The loss of any one node.
    #[serde(default)]
    pub any_node: bool,
    /// The loss of each of these clusters (one at a time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
}
