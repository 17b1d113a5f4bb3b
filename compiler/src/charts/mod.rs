//! Chart shapes: how each supported chart names its objects, computes IDs,
//! lists and listeners, and so which values the policy must set for a
//! topology. One module per chart shape ([`cp`], [`bitnami`] with
//! [`bitnami_zookeeper`], [`cloudpirates`]) answers everything chart-specific through [`Shape`];
//! this module holds what is common (the plan's objects, headless Services,
//! meshes, KRaft lists).
//! Adding a chart is one module, one arm in [`shape`], fixtures and goldens.

use std::borrow::Cow;

use straddle_policy::plan::{
    Check, EnvValue, EnvVar, ObjectKind, ObjectRule, Op, PATTERN_INDEX, PropEdit, Watch,
};

use crate::diag::Diagnostic;
use crate::spec::{Chart, KafkaSpec, NetworkingMode, QuorumType};
use crate::topology::{Ensemble, Kafka, Role, RoleGroup, Topology};

pub mod bitnami;
pub mod bitnami_zookeeper;
pub mod cloudpirates;
pub mod cp;

pub const DIGEST_ANNOTATION: &str = "straddle.dev/policy-digest";
/// Cilium ClusterMesh: the Service is merged with its namesakes in the other clusters.
pub const CILIUM_GLOBAL: &str = "service.cilium.io/global";
/// Cilium ClusterMesh: this cluster's endpoints are offered to the others.
pub const CILIUM_SHARED: &str = "service.cilium.io/shared";
/// Cilium ClusterMesh: remote EndpointSlices (with pod hostnames) are synced
/// into this cluster, which is what makes remote per-pod names resolve.
pub const CILIUM_SYNC_ENDPOINT_SLICES: &str = "service.cilium.io/global-sync-endpoint-slices";
/// Linkerd multicluster: the Service is mirrored into linked clusters
/// (`true` = through the gateway, the mode Linkerd documents for StatefulSets).
pub const LINKERD_EXPORTED: &str = "mirror.linkerd.io/exported";
pub const STRETCH_ANNOTATION: &str = "straddle.dev/stretch";
pub(crate) const RACK_AWARE_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    ZooKeeper,
    Kafka,
}

/// The labels that identify a chart's objects (see [`Watch`]).
pub struct ChartLabels {
    pub name_label: &'static str,
    pub name: &'static str,
    pub release_label: &'static str,
    /// The chart, for messages.
    pub chart: &'static str,
}

/// Everything chart-specific the compiler asks.
pub trait Shape: Sync {
    /// The chart name its fullname helper appends to the release.
    fn chart_name(&self, component: Component) -> &'static str;
    /// (StatefulSet, governing headless Service) of a role.
    fn statefulset_names(&self, role: Role, fullname: &str) -> (String, String);
    /// Container ports a role serves (for per-node Services).
    fn ports(&self, role: Role) -> Vec<(&'static str, u16)>;
    /// The KRaft controller port.
    fn controller_port(&self) -> u16;
    /// KRaft with a static voter set (`controller.quorum.voters`, formatted
    /// without initial controllers) rather than a dynamic quorum.
    fn static_quorum(&self) -> bool {
        false
    }
    fn labels(&self, component: Component) -> ChartLabels;
    /// Errors for a Kafka spec this chart cannot run (modes, IDs).
    fn check_kafka(&self, k: &KafkaSpec) -> Vec<Diagnostic>;
    /// Whether the chart's brokers can be reached through `mode` (else: why).
    fn check_broker_mode(&self, mode: NetworkingMode) -> Option<Diagnostic>;
    /// Whether the chart's ZooKeeper can be stretched (else: why, and the fix).
    fn check_zookeeper(&self) -> Option<Diagnostic>;
    /// The ZooKeeper lists as the chart reads them, as cluster `viewer`
    /// sees them (for `explain`); `None` where ZooKeeper is refused.
    fn zookeeper_strings(
        &self,
        _zk: &Ensemble,
        _n_clusters: usize,
        _viewer: usize,
    ) -> Option<ZkStrings> {
        None
    }
    /// How a role's node ids follow from pod ordinals.
    fn id_rule(&self, role: Role) -> IdRule;
    /// The rules of one role in one cluster.
    fn plan(&self, topo: &Topology, g: &RoleGroup, cluster: usize, out: &mut Vec<PlannedObject>);
    /// The ZooKeeper tools of the chart's ZooKeeper image, for the commands
    /// `straddle plan` prints; `client_port` is the servers' client port.
    fn zookeeper_tools(&self, client_port: u16) -> ZkTools;
}

/// How to ask a ZooKeeper server about itself and the ensemble with the
/// tools its image has (the names differ per image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkTools {
    /// What to call the check in prose (e.g. `` `srvr` ``).
    pub status_name: &'static str,
    /// Run in a server's pod: prints `Mode: leader` or `Mode: follower`
    /// while the server serves.
    pub status: String,
    /// What the check prints instead while the server has no quorum.
    pub not_serving: &'static str,
    /// Lists the registered brokers (`ls /brokers/ids`) through
    /// `<zookeeper>`, the address of any server.
    pub list_brokers: String,
}

/// How a chart numbers nodes: id = ordinal + an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// A fixed offset: the chart has no value for it, so a spec `minId` is an error.
    Fixed(u32),
    /// The offset is a chart value (`minId`, `nodeIdOffset`, ...): the
    /// spec's `minId`, or this default (the chart's).
    Offset(u32),
}

/// The module of a chart.
pub fn shape(chart: Chart) -> &'static dyn Shape {
    match chart {
        Chart::CpHelmCharts => &cp::Cp,
        Chart::Bitnami => &bitnami::Bitnami,
        Chart::Cloudpirates => &cloudpirates::CloudPirates,
    }
}

/// The chart's fullname helper: override, else the release if it already
/// contains the chart name, else `<release>-<chart>`; at most 63 characters.
pub fn fullname(
    chart: Chart,
    component: Component,
    release: &str,
    override_: Option<&str>,
) -> String {
    let name = shape(chart).chart_name(component);
    let full = match override_ {
        Some(o) => o.to_string(),
        None if release.contains(name) => release.to_string(),
        None => format!("{release}-{name}"),
    };
    let mut full: String = full.chars().take(63).collect();
    while full.ends_with('-') {
        full.pop();
    }
    full
}

/// Container ports a role serves (for per-node Services).
pub fn ports(group: &RoleGroup) -> Vec<(&'static str, u16)> {
    shape(group.chart).ports(group.role)
}

/// One object's rule, before the digest annotation is added.
pub struct PlannedObject {
    pub cluster: usize,
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub rule: ObjectRule<'static>,
}

/// Everything the policy does, for every cluster.
pub fn plan_objects(topo: &Topology) -> Vec<PlannedObject> {
    let mut out = Vec::new();
    for cluster in 0..topo.clusters.len() {
        for g in topo.groups() {
            shape(g.chart).plan(topo, g, cluster, &mut out);
        }
    }
    out
}

/// The labels by which each stretched component's chart is recognised on
/// objects the plan does not name (a release or namespace the spec gets wrong).
pub fn watches(topo: &Topology) -> Vec<Watch<'static>> {
    let zk = topo
        .zookeeper
        .iter()
        .map(|z| (&z.group, Component::ZooKeeper, "spec.zookeeper"));
    let kafka = topo.kafka.iter().flat_map(|k| {
        k.groups()
            .next()
            .map(|g| (g, Component::Kafka, "spec.kafka"))
    });
    zk.chain(kafka)
        .map(|(g, component, field)| {
            let labels = shape(g.chart).labels(component);
            Watch {
                label: s(labels.name_label),
                value: s(labels.name),
                release_label: s(labels.release_label),
                release: s(g.release.clone()),
                namespace: s(g.namespace.clone()),
                chart: s(labels.chart),
                field: s(field),
            }
        })
        .collect()
}

fn s(v: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(v.into())
}

fn literal(name: &str, value: impl Into<String>) -> EnvVar<'static> {
    EnvVar {
        name: s(name),
        value: EnvValue::Literal(s(value)),
        before: None,
    }
}

fn field_ref(name: &str, path: &str, before: Option<&str>) -> EnvVar<'static> {
    EnvVar {
        name: s(name),
        value: EnvValue::FieldRef(s(path)),
        before: before.map(s),
    }
}

/// Rules every StatefulSet of a role gets: size, ordinals, the ID-block guard.
fn statefulset_base(
    group: &RoleGroup,
    cluster: usize,
    cluster_name: &str,
) -> (Vec<Check<'static>>, Vec<Op<'static>>) {
    let slice = &group.slices[cluster];
    // Quorum members are listed in every cluster's configuration; brokers are
    // not, so they may scale within their ID block.
    let check = match group.role {
        Role::ZooKeeper | Role::Controller { .. } => Check::ScaleLimit {
            max: slice.replicas,
            exact: true,
            field: s(format!("{}.replicas.{cluster_name}", group.field)),
        },
        Role::Broker => Check::ScaleLimit {
            max: slice.block,
            exact: false,
            field: s(format!("{}.idBlockSize", group.field)),
        },
    };
    (
        vec![check],
        vec![
            Op::Replicas(slice.replicas),
            Op::OrdinalsStart(slice.ordinal_start),
        ],
    )
}

fn push(
    out: &mut Vec<PlannedObject>,
    cluster: usize,
    kind: ObjectKind,
    group: &RoleGroup,
    name: &str,
    checks: Vec<Check<'static>>,
    ops: Vec<Op<'static>>,
) {
    out.push(PlannedObject {
        cluster,
        kind,
        namespace: group.namespace.clone(),
        name: name.to_string(),
        rule: ObjectRule {
            field: s(group.field.clone()),
            checks,
            ops,
        },
    });
}

/// Headless Services must publish not-ready pods: a quorum member has to be
/// resolvable before it is ready, or the ensemble can never form. Meshes that
/// are configured on the Service itself get their annotations or labels here.
fn headless(out: &mut Vec<PlannedObject>, group: &RoleGroup, cluster: usize) {
    push(
        out,
        cluster,
        ObjectKind::Service,
        group,
        &group.headless,
        vec![],
        headless_ops(group),
    );
}

/// The end values of a role's headless Service.
pub fn headless_ops(group: &RoleGroup) -> Vec<Op<'static>> {
    let mut ops = vec![Op::PublishNotReadyAddresses(true)];
    let annotation = |k: &str, v: &str| Op::Annotation {
        key: s(k),
        value: s(v),
    };
    match group.mode {
        NetworkingMode::Cilium => ops.extend([
            annotation(CILIUM_GLOBAL, "true"),
            annotation(CILIUM_SHARED, "true"),
            annotation(CILIUM_SYNC_ENDPOINT_SLICES, "true"),
        ]),
        NetworkingMode::Linkerd => {
            ops.push(Op::Label {
                key: s(LINKERD_EXPORTED),
                value: s("true"),
            });
            // Endpoint mirrors are ClusterIP Services that forward only the
            // declared ports; cp-zookeeper's headless Service lacks the client
            // port that Kafka brokers in other clusters dial.
            ops.extend(
                ports(group)
                    .into_iter()
                    .map(|(name, port)| Op::ServicePort {
                        name: s(name),
                        port,
                    }),
            );
        }
        NetworkingMode::Mcs | NetworkingMode::ExternalDns | NetworkingMode::Nodeport => {}
    }
    ops
}

/// The rule of a role's StatefulSet.
fn push_statefulset(
    out: &mut Vec<PlannedObject>,
    g: &RoleGroup,
    cluster: usize,
    checks: Vec<Check<'static>>,
    ops: Vec<Op<'static>>,
) {
    push(
        out,
        cluster,
        ObjectKind::StatefulSet,
        g,
        &g.statefulset,
        checks,
        ops,
    );
}

/// The rule of a role's StatefulSet and of its headless Service.
fn statefulset_and_headless(
    out: &mut Vec<PlannedObject>,
    g: &RoleGroup,
    cluster: usize,
    checks: Vec<Check<'static>>,
    ops: Vec<Op<'static>>,
) {
    push_statefulset(out, g, cluster, checks, ops);
    headless(out, g, cluster);
}

/// A chart's per-pod Services `<statefulset>-<i>-external` (i from 0 in
/// every cluster, selecting pod `<statefulset>-<i>`) serve this cluster's
/// `i`-th pod instead: selector and `pod` label. Indices beyond the ID block
/// are refused, naming the chart value that counts them.
fn per_pod_services(
    topo: &Topology,
    g: &RoleGroup,
    cluster: usize,
    count_value: &str,
    extra: Option<Check<'static>>,
    out: &mut Vec<PlannedObject>,
) {
    let slice = &g.slices[cluster];
    let mut checks = vec![Check::Indices {
        count: slice.block,
        beyond: s(format!(
            "{} gives cluster \"{}\" {} IDs; set the chart value {count_value} to at most that",
            g.field, topo.clusters[cluster].name, slice.block
        )),
    }];
    checks.extend(extra);
    let ops = vec![Op::PodIndex {
        selector: s("statefulset.kubernetes.io/pod-name"),
        label: s("pod"),
        pod_prefix: s(format!("{}-", g.statefulset)),
        start: slice.ordinal_start,
    }];
    let name = format!("{}-{}-external", g.statefulset, PATTERN_INDEX);
    push(out, cluster, ObjectKind::Service, g, &name, checks, ops);
}

/// The rule of a ConfigMap holding a properties file the plan edits.
fn push_properties(
    out: &mut Vec<PlannedObject>,
    g: &RoleGroup,
    cluster: usize,
    name: &str,
    data_key: &str,
    edits: Vec<PropEdit<'static>>,
) {
    let ops = vec![Op::Properties {
        data_key: s(data_key),
        edits,
    }];
    push(out, cluster, ObjectKind::ConfigMap, g, name, vec![], ops);
}

/// The chart's default container ports, which the plan's lists and
/// Services assume: a changed one is denied, naming the chart value
/// (`value(port name)`) to set back.
fn default_port_checks(
    g: &RoleGroup,
    container: &str,
    value: impl Fn(&str) -> String,
) -> Vec<Check<'static>> {
    shape(g.chart)
        .ports(g.role)
        .into_iter()
        .map(|(name, port)| Check::ContainerPort {
            container: s(container),
            name: s(name),
            port,
            message: s(format!(
                "Straddle assumes the chart's default ports; set the chart value {}={port}",
                value(name)
            )),
        })
        .collect()
}

/// A stretched ZooKeeper's lists, in the chart's format.
pub struct ZkStrings {
    /// Where the chart reads the servers, groups and weights.
    pub settings: [&'static str; 3],
    pub servers: String,
    pub groups: Option<String>,
    pub weights: Option<String>,
    pub connect: String,
}

/// A hierarchical quorum's groups (one per cluster with servers, its ids
/// joined by `:`) and every server's (id, weight at the rollout stage);
/// `None` for a majority. Each chart spells them its own way.
pub fn zk_hierarchy(zk: &Ensemble, n_clusters: usize) -> Option<Hierarchy> {
    if zk.quorum == QuorumType::Majority {
        return None;
    }
    let groups = (0..n_clusters)
        .map(|c| {
            zk.group
                .nodes_in(c)
                .map(|n| n.id.to_string())
                .collect::<Vec<_>>()
                .join(":")
        })
        .filter(|g| !g.is_empty())
        .collect();
    let weights = zk
        .group
        .nodes
        .iter()
        .map(|n| (n.id, zk.staged_weight(n)))
        .collect();
    Some(Hierarchy { groups, weights })
}

/// See [`zk_hierarchy`].
#[derive(Default)]
pub struct Hierarchy {
    pub groups: Vec<String>,
    /// (server id, weight)
    pub weights: Vec<(u32, u32)>,
}

/// `zookeeper.connect`: every server's client port, as `viewer` names them.
pub fn zk_connect(zk: &Ensemble, viewer: usize) -> String {
    zk.group
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{}:{}",
                n.zk_host(viewer),
                shape(zk.group.chart).ports(Role::ZooKeeper)[0].1
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// KRaft quorum strings, identical in every cluster.
pub struct KraftStrings {
    pub bootstrap_servers: String,
    pub voters: String,
    pub initial_controllers: String,
}

pub fn kraft_strings(k: &Kafka) -> Option<KraftStrings> {
    let c = k.controllers.as_ref()?;
    let port = shape(c.chart).controller_port();
    let join = |f: &dyn Fn(&crate::topology::Node) -> String| {
        c.nodes.iter().map(f).collect::<Vec<_>>().join(",")
    };
    Some(KraftStrings {
        bootstrap_servers: join(&|n| format!("{}:{port}", n.address)),
        voters: join(&|n| format!("{}@{}:{port}", n.id, n.address)),
        initial_controllers: join(&|n| {
            format!("{}@{}:{port}:{}", n.id, n.address, k.directory_id(n.id))
        }),
    })
}
