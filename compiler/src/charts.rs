//! Chart shapes: how each supported chart names its objects, computes IDs,
//! lists and listeners, and so which values the policy must set for a
//! topology. This is the only place that knows the charts.
//!
//! cp-helm-charts 0.6 (cp-zookeeper, cp-kafka): ids and advertised listeners
//! are computed in the container command from `${HOSTNAME}`, `${POD_NAME}` and
//! `${POD_NAMESPACE}`; env the command re-exports is ignored. So the policy
//! moves ordinals (`spec.ordinals.start`) and rewrites the inputs the command
//! reads (`ZOOKEEPER_SERVERS`, `POD_NAME`, `POD_NAMESPACE`, ...).
//!
//! bitnami/kafka 32 (KRaft): node.id = ordinal + `KAFKA_MIN_ID` and the
//! advertised host is built by the `prepare-config` init script from
//! `MY_POD_NAME`, `KAFKA_FULLNAME`, `MY_POD_NAMESPACE` and `CLUSTER_DOMAIN`;
//! `server.properties` comes from a per-role ConfigMap.

use std::borrow::Cow;

use straddle_policy::plan::{
    Check, EnvValue, EnvVar, ObjectKind, ObjectRule, Op, PATTERN_INDEX, PropEdit, Watch,
};

use crate::spec::{Chart, NetworkingMode};
use crate::topology::{Ensemble, Kafka, Role, RoleGroup, Topology};

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

pub const ZK_CLIENT_PORT: u16 = 2181;
pub const ZK_SERVER_PORT: u16 = 2888;
pub const ZK_ELECTION_PORT: u16 = 3888;
pub const CP_KAFKA_PORT: u16 = 9092;
pub const BITNAMI_CLIENT_PORT: u16 = 9092;
pub const BITNAMI_CONTROLLER_PORT: u16 = 9093;
pub const BITNAMI_INTERBROKER_PORT: u16 = 9094;

const CP_ZK_CONTAINER: &str = "cp-zookeeper-server";
const CP_KAFKA_CONTAINER: &str = "cp-kafka-broker";
const BITNAMI_INIT: &str = "prepare-config";
const BITNAMI_MAIN: &str = "kafka";
const BITNAMI_PROPERTIES: &str = "server.properties";
/// Holds the real pod name when `POD_NAME` is redefined (cp-kafka, mcs).
const STRADDLE_POD_NAME: &str = "STRADDLE_POD_NAME";
const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    ZooKeeper,
    Kafka,
}

/// The chart's fullname helper: override, else the release if it already
/// contains the chart name, else `<release>-<chart>`; at most 63 characters.
pub fn fullname(
    chart: Chart,
    component: Component,
    release: &str,
    override_: Option<&str>,
) -> String {
    let name = match (chart, component) {
        (Chart::CpHelmCharts, Component::ZooKeeper) => "cp-zookeeper",
        (Chart::CpHelmCharts, Component::Kafka) => "cp-kafka",
        (Chart::Bitnami, Component::ZooKeeper) => "zookeeper",
        (Chart::Bitnami, Component::Kafka) => "kafka",
    };
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

/// (StatefulSet, governing headless Service) of a role.
pub fn statefulset_names(chart: Chart, role: Role, fullname: &str) -> (String, String) {
    match (chart, role) {
        (Chart::CpHelmCharts, _) => (fullname.to_string(), format!("{fullname}-headless")),
        (Chart::Bitnami, Role::Broker) => (
            format!("{fullname}-broker"),
            format!("{fullname}-broker-headless"),
        ),
        (Chart::Bitnami, _) => (
            format!("{fullname}-controller"),
            format!("{fullname}-controller-headless"),
        ),
    }
}

/// Container ports a role serves (for per-node Services).
pub fn ports(group: &RoleGroup) -> Vec<(&'static str, u16)> {
    match (group.chart, group.role) {
        (_, Role::ZooKeeper) => vec![
            ("client", ZK_CLIENT_PORT),
            ("server", ZK_SERVER_PORT),
            ("leader-election", ZK_ELECTION_PORT),
        ],
        (Chart::CpHelmCharts, _) => vec![("kafka", CP_KAFKA_PORT)],
        (Chart::Bitnami, Role::Broker) => vec![
            ("client", BITNAMI_CLIENT_PORT),
            ("interbroker", BITNAMI_INTERBROKER_PORT),
        ],
        (Chart::Bitnami, Role::Controller { combined: false }) => {
            vec![("controller", BITNAMI_CONTROLLER_PORT)]
        }
        (Chart::Bitnami, Role::Controller { combined: true }) => vec![
            ("client", BITNAMI_CLIENT_PORT),
            ("controller", BITNAMI_CONTROLLER_PORT),
            ("interbroker", BITNAMI_INTERBROKER_PORT),
        ],
    }
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
        if let Some(zk) = &topo.zookeeper {
            zookeeper(topo, zk, cluster, &mut out);
        }
        if let Some(k) = &topo.kafka {
            for group in k.groups() {
                match group.chart {
                    Chart::CpHelmCharts => cp_kafka(topo, k, group, cluster, &mut out),
                    Chart::Bitnami => bitnami_kafka(topo, k, group, cluster, &mut out),
                }
            }
        }
    }
    out
}

/// The labels by which each stretched component's chart is recognised on
/// objects the plan does not name (a release or namespace the spec gets wrong).
pub fn watches(topo: &Topology) -> Vec<Watch<'static>> {
    let mut out: Vec<Watch<'static>> = Vec::new();
    let zk = topo.zookeeper.iter().map(|z| (&z.group, "spec.zookeeper"));
    let kafka = topo
        .kafka
        .iter()
        .flat_map(|k| k.groups().next().map(|g| (g, "spec.kafka")));
    for (g, field) in zk.chain(kafka) {
        let (label, value, release_label, chart) = match (g.chart, g.role) {
            (Chart::CpHelmCharts, Role::ZooKeeper) => (
                "app",
                "cp-zookeeper",
                "release",
                "cp-helm-charts cp-zookeeper",
            ),
            (Chart::CpHelmCharts, _) => ("app", "cp-kafka", "release", "cp-helm-charts cp-kafka"),
            (Chart::Bitnami, Role::ZooKeeper) => (
                "app.kubernetes.io/name",
                "zookeeper",
                "app.kubernetes.io/instance",
                "bitnami/zookeeper",
            ),
            (Chart::Bitnami, _) => (
                "app.kubernetes.io/name",
                "kafka",
                "app.kubernetes.io/instance",
                "bitnami/kafka",
            ),
        };
        out.push(Watch {
            label: s(label),
            value: s(value),
            release_label: s(release_label),
            release: s(g.release.clone()),
            namespace: s(g.namespace.clone()),
            chart: s(chart),
            field: s(field),
        });
    }
    out
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

/// The rule of a role's StatefulSet and of its headless Service.
fn statefulset_and_headless(
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
    headless(out, g, cluster);
}

/// `ZOOKEEPER_SERVERS` etc. as cp-zookeeper reads them: positional, `;`-separated.
pub struct ZkStrings {
    pub servers: String,
    pub groups: Option<String>,
    pub weights: Option<String>,
    pub connect: String,
}

/// The strings as cluster `viewer` sees them: identical in every cluster,
/// except with `linkerd`, where remote servers go by their mirror names.
pub fn zk_strings(zk: &Ensemble, n_clusters: usize, viewer: usize) -> ZkStrings {
    let nodes = &zk.group.nodes;
    let servers = nodes
        .iter()
        .map(|n| format!("{}:{ZK_SERVER_PORT}:{ZK_ELECTION_PORT}", n.zk_host(viewer)))
        .collect::<Vec<_>>()
        .join(";");
    let connect = nodes
        .iter()
        .map(|n| format!("{}:{ZK_CLIENT_PORT}", n.zk_host(viewer)))
        .collect::<Vec<_>>()
        .join(",");
    let (groups, weights) = match zk.quorum {
        crate::spec::QuorumType::Majority => (None, None),
        crate::spec::QuorumType::Hierarchical => {
            let groups = (0..n_clusters)
                .map(|c| {
                    zk.group
                        .nodes_in(c)
                        .map(|n| n.id.to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                })
                .filter(|g| !g.is_empty())
                .collect::<Vec<_>>()
                .join(";");
            let weights = nodes
                .iter()
                .map(|n| zk.staged_weight(n).to_string())
                .collect::<Vec<_>>()
                .join(";");
            (Some(groups), Some(weights))
        }
    };
    ZkStrings {
        servers,
        groups,
        weights,
        connect,
    }
}

fn zookeeper(topo: &Topology, zk: &Ensemble, cluster: usize, out: &mut Vec<PlannedObject>) {
    let g = &zk.group;
    let strings = zk_strings(zk, topo.clusters.len(), cluster);
    let (checks, mut ops) = statefulset_base(g, cluster, &topo.clusters[cluster].name);
    let mut set = vec![literal("ZOOKEEPER_SERVERS", strings.servers)];
    let mut remove = vec![];
    match (strings.groups, strings.weights) {
        (Some(groups), Some(weights)) => {
            set.push(literal("ZOOKEEPER_GROUPS", groups));
            set.push(literal("ZOOKEEPER_WEIGHTS", weights));
        }
        _ => remove.extend([s("ZOOKEEPER_GROUPS"), s("ZOOKEEPER_WEIGHTS")]),
    }
    ops.push(Op::Env {
        container: s(CP_ZK_CONTAINER),
        init: false,
        set,
        remove,
    });
    statefulset_and_headless(out, g, cluster, checks, ops);
}

fn cp_kafka(
    topo: &Topology,
    k: &Kafka,
    g: &RoleGroup,
    cluster: usize,
    out: &mut Vec<PlannedObject>,
) {
    let (checks, mut ops) = statefulset_base(g, cluster, &topo.clusters[cluster].name);
    let zk = topo
        .zookeeper
        .as_ref()
        .expect("ZooKeeper-mode Kafka is validated to have a ZooKeeper");
    let zk_connect = zk_strings(zk, topo.clusters.len(), cluster).connect;
    let c = &topo.clusters[cluster];
    let mut set = vec![
        literal("KAFKA_ZOOKEEPER_CONNECT", zk_connect),
        literal("KAFKA_BROKER_RACK", c.rack.clone()),
    ];
    let mut remove = vec![];
    // The command advertises PLAINTEXT://${POD_NAME}.<headless>.${POD_NAMESPACE}:9092
    // and EXTERNAL://${HOST_IP}:$((firstListenerPort + broker id)).
    match g.mode {
        NetworkingMode::Mcs => {
            set.push(field_ref(
                STRADDLE_POD_NAME,
                "metadata.name",
                Some("POD_NAME"),
            ));
            set.push(literal(
                "POD_NAME",
                format!("$({STRADDLE_POD_NAME}).{}", c.name),
            ));
            set.push(literal(
                "POD_NAMESPACE",
                format!("{}.svc.clusterset.local", g.namespace),
            ));
        }
        NetworkingMode::ExternalDns => {
            set.push(field_ref("POD_NAME", "metadata.name", None));
            set.push(literal(
                "POD_NAMESPACE",
                format!("{}.svc.{}", g.namespace, topo.networking.zone),
            ));
            remove.push(s(STRADDLE_POD_NAME));
        }
        // The native name, fully qualified (Linkerd never reaches here: it
        // is refused for brokers).
        NetworkingMode::Cilium | NetworkingMode::Linkerd => {
            set.push(field_ref("POD_NAME", "metadata.name", None));
            set.push(literal(
                "POD_NAMESPACE",
                format!("{}.svc.{}", g.namespace, topo.networking.cluster_domain),
            ));
            remove.push(s(STRADDLE_POD_NAME));
        }
        // Brokers replicate over the EXTERNAL listener (node IP + NodePort);
        // PLAINTEXT keeps the chart's in-cluster name for local clients.
        NetworkingMode::Nodeport => {
            set.push(field_ref("POD_NAME", "metadata.name", None));
            set.push(field_ref("POD_NAMESPACE", "metadata.namespace", None));
            set.push(field_ref("HOST_IP", "status.hostIP", None));
            set.push(literal("KAFKA_INTER_BROKER_LISTENER_NAME", "EXTERNAL"));
            remove.push(s(STRADDLE_POD_NAME));
        }
    }
    if g.mode != NetworkingMode::Nodeport {
        remove.push(s("KAFKA_INTER_BROKER_LISTENER_NAME"));
    }
    if k.follower_fetching {
        set.push(literal("KAFKA_REPLICA_SELECTOR_CLASS", RACK_AWARE_SELECTOR));
    } else {
        remove.push(s("KAFKA_REPLICA_SELECTOR_CLASS"));
    }
    ops.push(Op::Env {
        container: s(CP_KAFKA_CONTAINER),
        init: false,
        set,
        remove,
    });
    let mut checks = checks;
    checks.extend(cp_nodeport_checks(topo, g, cluster));
    statefulset_and_headless(out, g, cluster, checks, ops);
    cp_nodeport_services(topo, g, cluster, out);
}

/// cp-kafka's `nodeport.enabled` declares one container port `nodeport-<i>`
/// per broker the chart counts (`firstListenerPort + i`) and renders one
/// Service per index; both must fit this cluster's brokers and ID block.
fn cp_nodeport_checks(topo: &Topology, g: &RoleGroup, cluster: usize) -> Vec<Check<'static>> {
    let slice = &g.slices[cluster];
    let first = topo.networking.first_listener_port;
    let port = Check::ContainerPort {
        container: s(CP_KAFKA_CONTAINER),
        name: s("nodeport-0"),
        port: first,
        message: s(format!(
            "brokers advertise firstListenerPort + broker id; set spec.networking.\
             firstListenerPort to the chart value cp-kafka.nodeport.firstListenerPort, or \
             the chart value to {first}"
        )),
    };
    if g.mode == NetworkingMode::Nodeport {
        // The chart's Services are refused or are render's own (see below).
        return vec![port];
    }
    vec![
        port,
        Check::PortCount {
            container: s(CP_KAFKA_CONTAINER),
            prefix: s("nodeport-"),
            min: slice.replicas,
            max: slice.block,
            message: s(format!(
                "with cp-kafka.nodeport.enabled the chart renders one NodePort Service per \
                 broker it counts; set the chart value cp-kafka.brokers in cluster \"{}\" to \
                 {} (at most {}.idBlockSize = {})",
                topo.clusters[cluster].name, slice.replicas, g.field, slice.block
            )),
        },
    ]
}

/// cp-kafka's per-broker NodePort Services `<fullname>-<i>-nodeport` select
/// pod `<fullname>-<i>` on nodePort `firstListenerPort + i`: right only where
/// ordinals start at 0. Each is re-pointed at this cluster's `i`-th pod and
/// its broker id's port. With `networking.mode: nodeport`, `straddle render`
/// emits these Services itself (`<pod>-nodeport`): in the first cluster the
/// chart's names are those and already right; elsewhere the chart's indices
/// (below the ID block) are refused and render's (this cluster's ordinals) pass.
fn cp_nodeport_services(
    topo: &Topology,
    g: &RoleGroup,
    cluster: usize,
    out: &mut Vec<PlannedObject>,
) {
    let slice = &g.slices[cluster];
    let name = format!("{}-{}-nodeport", g.fullname, PATTERN_INDEX);
    let (checks, ops) = if g.mode == NetworkingMode::Nodeport {
        if slice.ordinal_start == 0 {
            return;
        }
        let checks = vec![
            Check::Indices {
                count: slice.ordinal_start,
                beyond: s(""),
            },
            Check::Refuse {
                message: s(
                    "with networking.mode nodeport, `straddle render` emits the per-broker \
                     NodePort Services (<pod>-nodeport); set the chart value \
                     cp-kafka.nodeport.enabled=false",
                ),
            },
        ];
        (checks, vec![])
    } else {
        let first = u32::from(topo.networking.first_listener_port);
        let checks = vec![Check::Indices {
            count: slice.block,
            beyond: s(format!(
                "{} gives cluster \"{}\" {} broker IDs; set the chart value cp-kafka.brokers \
                 to at most that",
                g.field, topo.clusters[cluster].name, slice.block
            )),
        }];
        let ops = vec![
            Op::PodIndex {
                selector: s("statefulset.kubernetes.io/pod-name"),
                label: s("pod"),
                pod_prefix: s(format!("{}-", g.statefulset)),
                start: slice.ordinal_start,
            },
            Op::IndexedPort {
                name: s("external-broker"),
                base: first + g.min_id + slice.ordinal_start,
            },
        ];
        (checks, ops)
    };
    push(out, cluster, ObjectKind::Service, g, &name, checks, ops);
}

/// KRaft quorum strings, identical in every cluster.
pub struct KraftStrings {
    pub bootstrap_servers: String,
    pub voters: String,
    pub initial_controllers: String,
}

pub fn kraft_strings(k: &Kafka) -> Option<KraftStrings> {
    let c = k.controllers.as_ref()?;
    let port = BITNAMI_CONTROLLER_PORT;
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

/// What bitnami/kafka's StatefulSet must say for the spec to be true of it:
/// the process roles (dedicated or combined) and the listener ports the plan
/// writes into lists and Services.
fn bitnami_shape_checks(g: &RoleGroup) -> Vec<Check<'static>> {
    let (roles, fix) = match g.role {
        Role::Broker => (
            "broker",
            "the chart's broker StatefulSet runs brokers only".to_string(),
        ),
        Role::Controller { combined: false } => (
            "controller",
            format!(
                "{} declares dedicated controllers; set the chart value \
                 controller.controllerOnly=true (and broker.replicaCount for the brokers), or \
                 declare combined: true in {} and recompile",
                g.field, g.field
            ),
        ),
        Role::Controller { combined: true } | Role::ZooKeeper => (
            "controller,broker",
            format!(
                "{} declares combined controller+broker nodes; set the chart value \
                 controller.controllerOnly=false, or remove combined: true from {} and recompile",
                g.field, g.field
            ),
        ),
    };
    let mut checks = vec![Check::Env {
        container: s(BITNAMI_MAIN),
        init: false,
        name: s("KAFKA_CFG_PROCESS_ROLES"),
        value: s(roles),
        message: s(fix),
    }];
    for (name, port) in ports(g) {
        checks.push(Check::ContainerPort {
            container: s(BITNAMI_MAIN),
            name: s(name),
            port,
            message: s(format!(
                "Straddle assumes the chart's default listener ports; set the chart value \
                 listeners.{name}.containerPort={port}"
            )),
        });
    }
    checks
}

fn bitnami_kafka(
    topo: &Topology,
    k: &Kafka,
    g: &RoleGroup,
    cluster: usize,
    out: &mut Vec<PlannedObject>,
) {
    let c = &topo.clusters[cluster];
    let quorum = kraft_strings(k).expect("KRaft is validated to have controllers");
    let is_controller = matches!(g.role, Role::Controller { .. });
    let is_broker = matches!(g.role, Role::Broker | Role::Controller { combined: true });

    let (mut checks, mut ops) = statefulset_base(g, cluster, &topo.clusters[cluster].name);
    checks.extend(bitnami_shape_checks(g));
    checks.extend(external_access_checks(g));
    // The init script advertises
    // ${MY_POD_NAME}.${KAFKA_FULLNAME}-${POD_ROLE}-headless.${MY_POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}.
    let (fullname, domain) = match g.mode {
        NetworkingMode::Mcs => (
            format!("{}.{}", c.name, g.fullname),
            "clusterset.local".to_string(),
        ),
        NetworkingMode::ExternalDns => (g.fullname.clone(), topo.networking.zone.clone()),
        // The chart's own name (nodeport and linkerd are refused for bitnami).
        NetworkingMode::Cilium | NetworkingMode::Linkerd | NetworkingMode::Nodeport => {
            (g.fullname.clone(), topo.networking.cluster_domain.clone())
        }
    };
    let mut init_env = vec![
        literal("KAFKA_MIN_ID", g.min_id.to_string()),
        literal("KAFKA_FULLNAME", fullname),
        literal("CLUSTER_DOMAIN", domain),
    ];
    init_env.extend(external_access_lists(g, cluster));
    ops.push(Op::Env {
        container: s(BITNAMI_INIT),
        init: true,
        set: init_env,
        remove: vec![],
    });
    let cluster_id = k.cluster_id.clone().unwrap_or_default();
    let mut set = vec![literal("KAFKA_KRAFT_CLUSTER_ID", cluster_id)];
    let mut remove = vec![];
    if is_controller {
        // The init script's initial-controllers file lists only local pods with
        // per-install directory ids; the whole stretch must format with one list.
        set.push(literal(
            "KAFKA_INITIAL_CONTROLLERS",
            quorum.initial_controllers.clone(),
        ));
        remove.push(s("KAFKA_INITIAL_CONTROLLERS_FILE"));
    }
    ops.push(Op::Env {
        container: s(BITNAMI_MAIN),
        init: false,
        set,
        remove,
    });
    push(
        out,
        cluster,
        ObjectKind::StatefulSet,
        g,
        &g.statefulset,
        checks,
        ops,
    );

    let mut edits = vec![
        PropEdit::Replace {
            key: s("controller.quorum.bootstrap.servers"),
            value: s(quorum.bootstrap_servers.clone()),
        },
        PropEdit::Replace {
            key: s("controller.quorum.voters"),
            value: s(quorum.voters.clone()),
        },
    ];
    if is_controller {
        edits.push(PropEdit::Listener {
            key: s("advertised.listeners"),
            listener: s("CONTROLLER"),
            entry: s(format!(
                "CONTROLLER://advertised-address-placeholder:{BITNAMI_CONTROLLER_PORT}"
            )),
        });
    }
    if is_broker {
        edits.push(PropEdit::Set {
            key: s("broker.rack"),
            value: s(c.rack.clone()),
        });
        if k.follower_fetching {
            edits.push(PropEdit::Set {
                key: s("replica.selector.class"),
                value: s(RACK_AWARE_SELECTOR),
            });
        }
    }
    let role = if matches!(g.role, Role::Broker) {
        "broker"
    } else {
        "controller"
    };
    push(
        out,
        cluster,
        ObjectKind::ConfigMap,
        g,
        &format!("{}-{role}-configuration", g.fullname),
        vec![],
        vec![Op::Properties {
            data_key: s(BITNAMI_PROPERTIES),
            edits,
        }],
    );
    headless(out, g, cluster);
    external_access_services(topo, g, cluster, out);
}

/// The chart value prefix of a bitnami role (`controller.*`, `broker.*`).
fn bitnami_role_key(g: &RoleGroup) -> &'static str {
    match g.role {
        Role::Broker => "broker",
        _ => "controller",
    }
}

/// bitnami `externalAccess`: the `prepare-config` script picks this pod's
/// entry of `EXTERNAL_ACCESS_HOSTS_LIST` / `EXTERNAL_ACCESS_PORTS_LIST` (one
/// per pod, from `loadBalancerNames`, `loadBalancerIPs`, `externalIPs` or
/// `nodePorts`) by its ordinal. Where ordinals start at S, the chart's list
/// gets S placeholders in front (the script splits on `,` and drops empty
/// fields, hence `-`), so ordinal S + i reads the chart's entry i.
fn external_access_lists(g: &RoleGroup, cluster: usize) -> Vec<EnvVar<'static>> {
    let start = g.slices[cluster].ordinal_start as usize;
    if start == 0 {
        return vec![];
    }
    let prefix = "-,".repeat(start);
    ["EXTERNAL_ACCESS_HOSTS_LIST", "EXTERNAL_ACCESS_PORTS_LIST"]
        .into_iter()
        .map(|name| EnvVar {
            name: s(name),
            value: EnvValue::Prefixed {
                saved: s(format!("STRADDLE_{name}")),
                prefix: s(prefix.clone()),
            },
            before: None,
        })
        .collect()
}

/// Dedicated controllers serve no client listener; the policy gives them a
/// CONTROLLER advertised listener, to which `prepare-config` would append
/// EXTERNAL, a listener they do not define (Kafka refuses to start).
const FORCE_EXPOSE_FIX: &str = "dedicated controllers serve no clients, and their advertised \
    listeners would name EXTERNAL, which they do not define (Kafka refuses to start); set the \
    chart value externalAccess.controller.forceExpose=false";

/// The `externalAccess` variants that cannot work across clusters.
fn external_access_checks(g: &RoleGroup) -> Vec<Check<'static>> {
    let role = bitnami_role_key(g);
    let mut checks = vec![];
    if g.role == (Role::Controller { combined: false }) {
        checks.push(Check::Env {
            container: s(BITNAMI_INIT),
            init: true,
            name: s("EXTERNAL_ACCESS_LISTENER_NAME"),
            value: s(""),
            message: s(FORCE_EXPOSE_FIX),
        });
    }
    checks.extend([
        Check::NoContainer {
            name: s("auto-discovery"),
            init: true,
            message: s(format!(
                "auto-discovery looks up the Service <pod>-external, but the chart names \
                 its per-pod Services by index from 0 in every cluster; set the chart value \
                 defaultInitContainers.autoDiscovery.enabled=false and list the hosts in \
                 externalAccess.{role}.service.loadBalancerNames (or loadBalancerIPs, \
                 nodePorts)"
            )),
        },
        Check::Env {
            container: s(BITNAMI_INIT),
            init: true,
            name: s("EXTERNAL_ACCESS_PORT_AUTOINCREMENT"),
            value: s(""),
            message: s(format!(
                "externalAccess.{role}.service.type=ClusterIP advertises port + ordinal, which \
                 the per-index Services do not follow in other clusters; use type \
                 LoadBalancer or NodePort"
            )),
        },
    ]);
    checks
}

/// bitnami `externalAccess` renders `<statefulset>-<i>-external` for i in
/// 0..replicaCount, selecting pod `<statefulset>-<i>`; each is re-pointed at
/// this cluster's `i`-th pod (whose list entry is the chart's entry i).
fn external_access_services(
    topo: &Topology,
    g: &RoleGroup,
    cluster: usize,
    out: &mut Vec<PlannedObject>,
) {
    let slice = &g.slices[cluster];
    let role = bitnami_role_key(g);
    let mut checks = vec![Check::Indices {
        count: slice.block,
        beyond: s(format!(
            "{} gives cluster \"{}\" {} IDs; set the chart value {role}.replicaCount to at \
             most that",
            g.field, topo.clusters[cluster].name, slice.block
        )),
    }];
    if g.role == (Role::Controller { combined: false }) {
        checks.push(Check::Refuse {
            message: s(FORCE_EXPOSE_FIX),
        });
    }
    let ops = vec![Op::PodIndex {
        selector: s("statefulset.kubernetes.io/pod-name"),
        label: s("pod"),
        pod_prefix: s(format!("{}-", g.statefulset)),
        start: slice.ordinal_start,
    }];
    let name = format!("{}-{}-external", g.statefulset, PATTERN_INDEX);
    push(out, cluster, ObjectKind::Service, g, &name, checks, ops);
}
