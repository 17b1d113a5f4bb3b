//! CloudPirates-io/helm-charts `kafka` 0.1 and `zookeeper` 0.13, on the
//! official images.
//!
//! `kafka` (apache/kafka 4.3; KRaft only). One StatefulSet of combined broker+controller nodes
//! (`process.roles=broker,controller` is fixed) with a static quorum: the
//! ConfigMap's `controller.quorum.voters` is rendered from `replicaCount`,
//! and the container script formats storage without initial controllers.
//! The script derives `node.id = ordinal + NODE_ID_OFFSET` from
//! `${HOSTNAME}` and writes `ADVERTISED_HOST`, a name fixed at render time
//! with no input to change, so the policy rewrites that script line.
//!
//! `zookeeper` (zookeeper 3.9): `zoo.cfg` comes from a ConfigMap with one
//! `server.<id>=<host>:2888:3888` line per server, rendered from
//! `replicaCount`; the script exports `ZOO_MY_ID = pod-index label +
//! SERVER_ID_OFFSET`, which the image's entrypoint writes to `myid` (once).
//! `externalAccess` adds one client LoadBalancer per server, by index.

use straddle_policy::plan::{Check, Op, PropEdit};

use crate::topology::Ensemble;

use super::{
    ChartLabels, Component, IdRule, PlannedObject, RACK_AWARE_SELECTOR, Shape, ZkStrings, ZkTools,
    default_port_checks, headless, kraft_strings, literal, per_pod_services, push_properties,
    push_statefulset, s, statefulset_base, zk_connect, zk_hierarchy,
};
use crate::diag::Diagnostic;
use crate::spec::{KafkaMode, KafkaSpec, NetworkingMode};
use crate::topology::{Kafka, MCS_ZONE, Role, RoleGroup, Topology};

pub const CLIENT_PORT: u16 = 9092;
pub const CONTROLLER_PORT: u16 = 9093;
pub const INTERNAL_PORT: u16 = 9094;
pub const KAFKA_CONTAINER: &str = "kafka";
pub const ZOOKEEPER_CONTAINER: &str = "zookeeper";
pub const ZOOKEEPER_CONFIG_KEY: &str = "zoo.cfg";
pub const ZK_CLIENT_PORT: u16 = 2181;
pub const ZK_QUORUM_PORT: u16 = 2888;
pub const ZK_ELECTION_PORT: u16 = 3888;
pub const PROPERTIES_KEY: &str = "server.properties";
/// The script line that names the advertised host.
pub const ADVERTISED_HOST: &str = "ADVERTISED_HOST=";

pub struct CloudPirates;

impl Shape for CloudPirates {
    fn chart_name(&self, component: Component) -> &'static str {
        match component {
            Component::ZooKeeper => "zookeeper",
            Component::Kafka => "kafka",
        }
    }

    fn statefulset_names(&self, _role: Role, fullname: &str) -> (String, String) {
        (fullname.to_string(), format!("{fullname}-headless"))
    }

    fn ports(&self, role: Role) -> Vec<(&'static str, u16)> {
        if role == Role::ZooKeeper {
            return vec![
                ("client", ZK_CLIENT_PORT),
                ("quorum", ZK_QUORUM_PORT),
                ("leader-election", ZK_ELECTION_PORT),
            ];
        }
        vec![
            ("client", CLIENT_PORT),
            ("internal", INTERNAL_PORT),
            ("controller", CONTROLLER_PORT),
        ]
    }

    fn controller_port(&self) -> u16 {
        CONTROLLER_PORT
    }

    fn static_quorum(&self) -> bool {
        true
    }

    fn labels(&self, component: Component) -> ChartLabels {
        let (name, chart) = match component {
            Component::ZooKeeper => ("zookeeper", "cloudpirates/zookeeper"),
            Component::Kafka => ("kafka", "cloudpirates/kafka"),
        };
        ChartLabels {
            name_label: "app.kubernetes.io/name",
            name,
            release_label: "app.kubernetes.io/instance",
            chart,
        }
    }

    fn check_kafka(&self, k: &KafkaSpec) -> Vec<Diagnostic> {
        let mut errs = vec![];
        if k.mode == KafkaMode::Zookeeper {
            errs.push(
                Diagnostic::error(
                    "spec.kafka.mode",
                    "the cloudpirates kafka chart runs Kafka 4, which has no ZooKeeper mode",
                )
                .fix("use mode: kraft"),
            );
        }
        if k.brokers.is_some() {
            errs.push(
                Diagnostic::error(
                    "spec.kafka.brokers",
                    "the cloudpirates kafka chart runs combined broker+controller nodes only",
                )
                .fix("remove spec.kafka.brokers and count the nodes in spec.kafka.controllers (combined: true)"),
            );
        }
        if k.controllers.as_ref().is_some_and(|c| !c.combined) {
            errs.push(
                Diagnostic::error(
                    "spec.kafka.controllers.combined",
                    "the cloudpirates kafka chart runs combined broker+controller nodes (process.roles=broker,controller)",
                )
                .fix("set combined: true"),
            );
        }
        errs
    }

    fn check_broker_mode(&self, mode: NetworkingMode) -> Option<Diagnostic> {
        (mode == NetworkingMode::Nodeport).then(|| {
            Diagnostic::error(
                "spec.networking.mode",
                "nodeport is only available for cp-helm-charts brokers: the cloudpirates kafka chart advertises a DNS name, with no per-node address to switch to",
            )
            .fix("use mode: external-dns, mcs or cilium")
        })
    }

    fn check_zookeeper(&self) -> Option<Diagnostic> {
        None
    }

    /// The official `zookeeper` image: ZooKeeper's scripts on the PATH
    /// (`/apache-zookeeper-<version>-bin/bin`), `ZOOCFGDIR=/conf`.
    fn zookeeper_tools(&self, client_port: u16) -> ZkTools {
        ZkTools {
            status_name: "`zkServer.sh status`",
            status: "zkServer.sh status".into(),
            not_serving: "\"Error contacting service\"",
            list_brokers: format!("zkCli.sh -server <zookeeper>:{client_port} ls /brokers/ids"),
        }
    }

    fn zookeeper_strings(
        &self,
        zk: &Ensemble,
        n_clusters: usize,
        viewer: usize,
    ) -> Option<ZkStrings> {
        let [servers, groups, weights] = zoo_cfg_lines(zk, n_clusters, viewer).map(|(_, l)| l);
        let join = |lines: Vec<String>| (!lines.is_empty()).then(|| lines.join(" "));
        Some(ZkStrings {
            settings: [
                "zoo.cfg server.<id>",
                "zoo.cfg group.<n>",
                "zoo.cfg weight.<id>",
            ],
            servers: servers.join(" "),
            groups: join(groups),
            weights: join(weights),
            connect: zk_connect(zk, viewer),
        })
    }

    fn id_rule(&self, _role: Role) -> IdRule {
        // `NODE_ID_OFFSET` (Kafka), `SERVER_ID_OFFSET` (ZooKeeper).
        IdRule::Offset(0)
    }

    fn plan(&self, topo: &Topology, g: &RoleGroup, cluster: usize, out: &mut Vec<PlannedObject>) {
        match (g.role, &topo.zookeeper, &topo.kafka) {
            (Role::ZooKeeper, Some(zk), _) => zookeeper(topo, zk, cluster, out),
            (_, _, Some(k)) => kafka(topo, k, g, cluster, out),
            _ => {}
        }
    }
}

/// The script's `ADVERTISED_HOST`, for pod `<statefulset>-${ORDINAL}`: the
/// node's address in the networking mode (as `topology` builds it).
fn advertised_host(topo: &Topology, g: &RoleGroup, cluster: usize) -> String {
    let pod = format!("{}-${{ORDINAL}}", g.statefulset);
    let (headless, ns) = (&g.headless, &g.namespace);
    let n = &topo.networking;
    match g.mode {
        NetworkingMode::Mcs => {
            let c = &topo.clusters[cluster].name;
            format!("{pod}.{c}.{headless}.{ns}.svc.{MCS_ZONE}")
        }
        NetworkingMode::ExternalDns => format!("{pod}.{headless}.{ns}.svc.{}", n.zone),
        // The native name (linkerd and nodeport are refused for brokers).
        NetworkingMode::Cilium | NetworkingMode::Linkerd | NetworkingMode::Nodeport => {
            format!("{pod}.{headless}.{ns}.svc.{}", n.cluster_domain)
        }
    }
}

fn kafka(topo: &Topology, k: &Kafka, g: &RoleGroup, cluster: usize, out: &mut Vec<PlannedObject>) {
    let c = &topo.clusters[cluster];
    let quorum = kraft_strings(k).expect("KRaft is validated to have controllers");
    let (mut checks, mut ops) = statefulset_base(g, cluster, &c.name);
    checks.push(Check::NoSecret {
        name: s(g.fullname.clone()),
        message: s(
            "the chart generates SASL passwords at random per install, so nodes in different \
             clusters cannot authenticate to each other; create a Secret with the same \
             client-password, inter-broker-password and controller-password in every cluster \
             and set the chart value auth.existingSecret to its name",
        ),
    });
    checks.extend(default_port_checks(g, KAFKA_CONTAINER, |name| {
        format!("service.ports.{name}")
    }));
    ops.push(Op::Env {
        container: s(KAFKA_CONTAINER),
        init: false,
        set: vec![
            literal("KAFKA_CLUSTER_ID", k.cluster_id.clone().unwrap_or_default()),
            literal("NODE_ID_OFFSET", g.min_id.to_string()),
        ],
        remove: vec![],
    });
    ops.push(Op::ScriptLine {
        container: s(KAFKA_CONTAINER),
        prefix: s(ADVERTISED_HOST),
        line: s(format!(
            "{ADVERTISED_HOST}\"{}\"",
            advertised_host(topo, g, cluster)
        )),
    });
    push_statefulset(out, g, cluster, checks, ops);
    let mut edits = vec![
        PropEdit::Replace {
            key: s("controller.quorum.voters"),
            value: s(quorum.voters),
        },
        PropEdit::Set {
            key: s("broker.rack"),
            value: s(c.rack.clone()),
        },
    ];
    if k.follower_fetching {
        edits.push(PropEdit::Set {
            key: s("replica.selector.class"),
            value: s(RACK_AWARE_SELECTOR),
        });
    }
    push_properties(
        out,
        g,
        cluster,
        &format!("{}-config", g.fullname),
        PROPERTIES_KEY,
        edits,
    );
    headless(out, g, cluster);
}

/// `zoo.cfg`'s id-keyed lines as cluster `viewer` sees them: `server.<id>`
/// for every server, and for a hierarchical quorum `group.<n>` (one per
/// cluster with servers) and `weight.<id>`; none of those for a majority.
pub fn zoo_cfg_lines(
    zk: &Ensemble,
    n_clusters: usize,
    viewer: usize,
) -> [(&'static str, Vec<String>); 3] {
    let nodes = &zk.group.nodes;
    let servers = nodes
        .iter()
        .map(|n| {
            format!(
                "server.{}={}:{ZK_QUORUM_PORT}:{ZK_ELECTION_PORT}",
                n.id,
                n.zk_host(viewer)
            )
        })
        .collect();
    let h = zk_hierarchy(zk, n_clusters).unwrap_or_default();
    let groups = h
        .groups
        .into_iter()
        .enumerate()
        .map(|(i, ids)| format!("group.{}={ids}", i + 1))
        .collect();
    let weights = h
        .weights
        .into_iter()
        .map(|(id, w)| format!("weight.{id}={w}"))
        .collect();
    [
        ("server.", servers),
        ("group.", groups),
        ("weight.", weights),
    ]
}

fn zookeeper(topo: &Topology, zk: &Ensemble, cluster: usize, out: &mut Vec<PlannedObject>) {
    let g = &zk.group;
    let (mut checks, mut ops) = statefulset_base(g, cluster, &topo.clusters[cluster].name);
    checks.extend(default_port_checks(g, ZOOKEEPER_CONTAINER, |name| {
        // The port names are the chart's, the values camelCase.
        let value = if name == "leader-election" {
            "leaderElection"
        } else {
            name
        };
        format!("service.ports.{value}")
    }));
    ops.push(Op::Env {
        container: s(ZOOKEEPER_CONTAINER),
        init: false,
        set: vec![literal("SERVER_ID_OFFSET", g.min_id.to_string())],
        remove: vec![],
    });
    push_statefulset(out, g, cluster, checks, ops);
    let edits = zoo_cfg_lines(zk, topo.clusters.len(), cluster)
        .into_iter()
        .map(|(prefix, lines)| PropEdit::Family {
            prefix: s(prefix),
            lines: lines.into_iter().map(s).collect(),
        })
        .collect();
    push_properties(
        out,
        g,
        cluster,
        &format!("{}-config", g.fullname),
        ZOOKEEPER_CONFIG_KEY,
        edits,
    );
    headless(out, g, cluster);
    // `externalAccess`: one client LoadBalancer per server, by index.
    per_pod_services(topo, g, cluster, "replicaCount", None, out);
}
