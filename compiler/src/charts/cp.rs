//! cp-helm-charts 0.6 (cp-zookeeper, cp-kafka; Confluent Platform 6.1
//! images). Ids and advertised listeners are computed in the container
//! command from `${HOSTNAME}`, `${POD_NAME}` and `${POD_NAMESPACE}`; env the
//! command re-exports is ignored. So the policy moves ordinals
//! (`spec.ordinals.start`) and rewrites the inputs the command reads
//! (`ZOOKEEPER_SERVERS`, `POD_NAME`, `POD_NAMESPACE`, ...). ZooKeeper ids are
//! `ordinal + 1` (list position), Kafka broker ids the ordinal.

use straddle_policy::plan::{Check, ObjectKind, Op, PATTERN_INDEX};

use super::{
    ChartLabels, Component, IdRule, PlannedObject, RACK_AWARE_SELECTOR, Shape, ZkStrings, ZkTools,
    field_ref, literal, push, s, statefulset_and_headless, statefulset_base, zk_connect,
    zk_hierarchy,
};
use crate::diag::Diagnostic;
use crate::spec::{KafkaMode, KafkaSpec, NetworkingMode};
use crate::topology::{Ensemble, Role, RoleGroup, Topology};

pub const ZK_CLIENT_PORT: u16 = 2181;
pub const ZK_SERVER_PORT: u16 = 2888;
pub const ZK_ELECTION_PORT: u16 = 3888;
pub const KAFKA_PORT: u16 = 9092;
pub const ZOOKEEPER_CONTAINER: &str = "cp-zookeeper-server";
pub const KAFKA_CONTAINER: &str = "cp-kafka-broker";
/// Holds the real pod name when `POD_NAME` is redefined (mcs).
const STRADDLE_POD_NAME: &str = "STRADDLE_POD_NAME";

pub struct Cp;

impl Shape for Cp {
    fn chart_name(&self, component: Component) -> &'static str {
        match component {
            Component::ZooKeeper => "cp-zookeeper",
            Component::Kafka => "cp-kafka",
        }
    }

    fn statefulset_names(&self, _role: Role, fullname: &str) -> (String, String) {
        (fullname.to_string(), format!("{fullname}-headless"))
    }

    fn ports(&self, role: Role) -> Vec<(&'static str, u16)> {
        match role {
            Role::ZooKeeper => vec![
                ("client", ZK_CLIENT_PORT),
                ("server", ZK_SERVER_PORT),
                ("leader-election", ZK_ELECTION_PORT),
            ],
            _ => vec![("kafka", KAFKA_PORT)],
        }
    }

    fn controller_port(&self) -> u16 {
        0
    }

    fn labels(&self, component: Component) -> ChartLabels {
        let (name, chart) = match component {
            Component::ZooKeeper => ("cp-zookeeper", "cp-helm-charts cp-zookeeper"),
            Component::Kafka => ("cp-kafka", "cp-helm-charts cp-kafka"),
        };
        ChartLabels {
            name_label: "app",
            name,
            release_label: "release",
            chart,
        }
    }

    fn check_kafka(&self, k: &KafkaSpec) -> Vec<Diagnostic> {
        let mut errs = vec![];
        if k.mode == KafkaMode::Kraft {
            errs.push(
                Diagnostic::error(
                    "spec.kafka.mode",
                    "cp-helm-charts (Confluent Platform 6.1) cannot run KRaft",
                )
                .fix("use mode: zookeeper with chart: cp-helm-charts, or chart: bitnami for KRaft"),
            );
        }
        errs
    }

    fn check_broker_mode(&self, _mode: NetworkingMode) -> Option<Diagnostic> {
        None
    }

    fn check_zookeeper(&self) -> Option<Diagnostic> {
        None
    }

    /// cp-zookeeper (`confluent-kafka` package): `zookeeper-shell` on the
    /// PATH, bash but no nc, so `srvr` goes through bash's `/dev/tcp`.
    fn zookeeper_tools(&self, client_port: u16) -> ZkTools {
        ZkTools {
            status_name: "`srvr`",
            status: format!(
                "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{client_port}; echo srvr >&3; cat <&3'"
            ),
            not_serving: "\"not currently serving requests\"",
            list_brokers: format!("zookeeper-shell <zookeeper>:{client_port} ls /brokers/ids"),
        }
    }

    fn zookeeper_strings(
        &self,
        zk: &Ensemble,
        n_clusters: usize,
        viewer: usize,
    ) -> Option<ZkStrings> {
        Some(zk_strings(zk, n_clusters, viewer))
    }

    fn id_rule(&self, role: Role) -> IdRule {
        // ZooKeeper: `$((${HOSTNAME##*-}+1))`, the position in
        // ZOOKEEPER_SERVERS; Kafka: `${HOSTNAME##*-}`.
        IdRule::Fixed(u32::from(role == Role::ZooKeeper))
    }

    fn plan(&self, topo: &Topology, g: &RoleGroup, cluster: usize, out: &mut Vec<PlannedObject>) {
        match (g.role, &topo.zookeeper, &topo.kafka) {
            (Role::ZooKeeper, Some(zk), _) => zookeeper(topo, zk, cluster, out),
            (_, _, Some(k)) => kafka(topo, k.follower_fetching, g, cluster, out),
            _ => {}
        }
    }
}

/// `ZOOKEEPER_SERVERS` etc. as cp-zookeeper reads them (positional,
/// `;`-separated), as cluster `viewer` sees them: identical in every
/// cluster, except with `linkerd`, where remote servers go by their mirror names.
pub fn zk_strings(zk: &Ensemble, n_clusters: usize, viewer: usize) -> ZkStrings {
    let nodes = &zk.group.nodes;
    let servers = nodes
        .iter()
        .map(|n| format!("{}:{ZK_SERVER_PORT}:{ZK_ELECTION_PORT}", n.zk_host(viewer)))
        .collect::<Vec<_>>()
        .join(";");
    let connect = zk_connect(zk, viewer);
    // cp-zookeeper reads them positionally, `;`-separated.
    let (groups, weights) = zk_hierarchy(zk, n_clusters)
        .map(|h| {
            let weights: Vec<String> = h.weights.iter().map(|(_, w)| w.to_string()).collect();
            (h.groups.join(";"), weights.join(";"))
        })
        .unzip();
    ZkStrings {
        settings: ["ZOOKEEPER_SERVERS", "ZOOKEEPER_GROUPS", "ZOOKEEPER_WEIGHTS"],
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
        container: s(ZOOKEEPER_CONTAINER),
        init: false,
        set,
        remove,
    });
    statefulset_and_headless(out, g, cluster, checks, ops);
}

fn kafka(
    topo: &Topology,
    follower_fetching: bool,
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
    if follower_fetching {
        set.push(literal("KAFKA_REPLICA_SELECTOR_CLASS", RACK_AWARE_SELECTOR));
    } else {
        remove.push(s("KAFKA_REPLICA_SELECTOR_CLASS"));
    }
    ops.push(Op::Env {
        container: s(KAFKA_CONTAINER),
        init: false,
        set,
        remove,
    });
    let mut checks = checks;
    checks.extend(nodeport_checks(topo, g, cluster));
    statefulset_and_headless(out, g, cluster, checks, ops);
    nodeport_services(topo, g, cluster, out);
}

/// cp-kafka's `nodeport.enabled` declares one container port `nodeport-<i>`
/// per broker the chart counts (`firstListenerPort + i`) and renders one
/// Service per index; both must fit this cluster's brokers and ID block.
fn nodeport_checks(topo: &Topology, g: &RoleGroup, cluster: usize) -> Vec<Check<'static>> {
    let slice = &g.slices[cluster];
    let first = topo.networking.first_listener_port;
    let port = Check::ContainerPort {
        container: s(KAFKA_CONTAINER),
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
            container: s(KAFKA_CONTAINER),
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
fn nodeport_services(topo: &Topology, g: &RoleGroup, cluster: usize, out: &mut Vec<PlannedObject>) {
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
