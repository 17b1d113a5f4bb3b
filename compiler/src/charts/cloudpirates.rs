//! CloudPirates-io/helm-charts `kafka` 0.1 (the official `apache/kafka` 4.3
//! image; KRaft only). One StatefulSet of combined broker+controller nodes
//! (`process.roles=broker,controller` is fixed) with a static quorum: the
//! ConfigMap's `controller.quorum.voters` is rendered from `replicaCount`,
//! and the container script formats storage without initial controllers.
//! The script derives `node.id = ordinal + NODE_ID_OFFSET` from
//! `${HOSTNAME}` and writes `ADVERTISED_HOST`, a name fixed at render time
//! with no input to change, so the policy rewrites that script line.

use straddle_policy::plan::{Check, ObjectKind, Op, PropEdit};

use super::{
    ChartLabels, Component, PlannedObject, RACK_AWARE_SELECTOR, Shape, headless, kraft_strings,
    literal, push, s, statefulset_base,
};
use crate::diag::Diagnostic;
use crate::spec::{KafkaMode, KafkaSpec, NetworkingMode};
use crate::topology::{Kafka, MCS_ZONE, Role, RoleGroup, Topology};

pub const CLIENT_PORT: u16 = 9092;
pub const CONTROLLER_PORT: u16 = 9093;
pub const INTERNAL_PORT: u16 = 9094;
pub const KAFKA_CONTAINER: &str = "kafka";
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

    fn ports(&self, _role: Role) -> Vec<(&'static str, u16)> {
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
        Some(
            Diagnostic::error(
                "spec.zookeeper.chart",
                "ZooKeeper from the cloudpirates chart is not supported yet",
            )
            .fix("use chart: cp-helm-charts (cp-zookeeper), or stretch Kafka in KRaft mode without ZooKeeper"),
        )
    }

    fn default_min_id(&self, _role: Role) -> Option<u32> {
        Some(0)
    }

    fn plan(&self, topo: &Topology, g: &RoleGroup, cluster: usize, out: &mut Vec<PlannedObject>) {
        if let Some(k) = &topo.kafka {
            kafka(topo, k, g, cluster, out);
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
    for (name, port) in CloudPirates.ports(g.role) {
        checks.push(Check::ContainerPort {
            container: s(KAFKA_CONTAINER),
            name: s(name),
            port,
            message: s(format!(
                "Straddle assumes the chart's default ports; set the chart value for the \
                 {name} port back to {port}"
            )),
        });
    }
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
    push(
        out,
        cluster,
        ObjectKind::ConfigMap,
        g,
        &format!("{}-config", g.fullname),
        vec![],
        vec![Op::Properties {
            data_key: s(PROPERTIES_KEY),
            edits,
        }],
    );
    headless(out, g, cluster);
}
