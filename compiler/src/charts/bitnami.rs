//! bitnami/kafka 32 (KRaft, Kafka 4.0) and, in [`super::bitnami_zookeeper`],
//! bitnami/zookeeper 13. node.id = ordinal + `KAFKA_MIN_ID`
//! and the advertised host is built by the `prepare-config` init script from
//! `MY_POD_NAME`, `KAFKA_FULLNAME`, `MY_POD_NAMESPACE` and `CLUSTER_DOMAIN`;
//! `server.properties` comes from a per-role ConfigMap. `externalAccess`
//! renders one Service per pod and per-pod host/port lists indexed by ordinal.

use straddle_policy::plan::{Check, EnvValue, EnvVar, Op, PropEdit};

use super::{
    ChartLabels, Component, IdRule, PlannedObject, RACK_AWARE_SELECTOR, Shape, ZkStrings, ZkTools,
    bitnami_zookeeper, default_port_checks, headless, kraft_strings, literal, per_pod_services,
    push_properties, push_statefulset, s, statefulset_base,
};
use crate::diag::Diagnostic;
use crate::spec::{KafkaMode, KafkaSpec, NetworkingMode};
use crate::topology::{Ensemble, Kafka, Role, RoleGroup, Topology};

pub const CLIENT_PORT: u16 = 9092;
pub const CONTROLLER_PORT: u16 = 9093;
pub const INTERBROKER_PORT: u16 = 9094;
pub const INIT_CONTAINER: &str = "prepare-config";
pub const MAIN_CONTAINER: &str = "kafka";
pub const PROPERTIES_KEY: &str = "server.properties";

pub struct Bitnami;

impl Shape for Bitnami {
    fn chart_name(&self, component: Component) -> &'static str {
        match component {
            Component::ZooKeeper => "zookeeper",
            Component::Kafka => "kafka",
        }
    }

    fn statefulset_names(&self, role: Role, fullname: &str) -> (String, String) {
        let role = match role {
            Role::ZooKeeper => return (fullname.to_string(), format!("{fullname}-headless")),
            Role::Broker => "broker",
            Role::Controller { .. } => "controller",
        };
        (
            format!("{fullname}-{role}"),
            format!("{fullname}-{role}-headless"),
        )
    }

    fn ports(&self, role: Role) -> Vec<(&'static str, u16)> {
        match role {
            Role::Broker => vec![("client", CLIENT_PORT), ("interbroker", INTERBROKER_PORT)],
            Role::ZooKeeper => bitnami_zookeeper::ports(),
            Role::Controller { combined: false } => vec![("controller", CONTROLLER_PORT)],
            Role::Controller { combined: true } => vec![
                ("client", CLIENT_PORT),
                ("controller", CONTROLLER_PORT),
                ("interbroker", INTERBROKER_PORT),
            ],
        }
    }

    fn controller_port(&self) -> u16 {
        CONTROLLER_PORT
    }

    fn labels(&self, component: Component) -> ChartLabels {
        let (name, chart) = match component {
            Component::ZooKeeper => ("zookeeper", "bitnami/zookeeper"),
            Component::Kafka => ("kafka", "bitnami/kafka"),
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
                    "bitnami/kafka 32 runs Kafka 4, which has no ZooKeeper mode",
                )
                .fix("use mode: kraft with chart: bitnami, or chart: cp-helm-charts for ZooKeeper mode"),
            );
        }
        errs
    }

    fn check_broker_mode(&self, mode: NetworkingMode) -> Option<Diagnostic> {
        (mode == NetworkingMode::Nodeport).then(|| {
            Diagnostic::error(
                "spec.networking.mode",
                "nodeport is only available for cp-helm-charts brokers: bitnami/kafka builds its advertised host from the pod's DNS name in its init script, with no per-node address to switch to",
            )
            .fix("use mode: external-dns, mcs or cilium for bitnami/kafka")
        })
    }

    fn check_zookeeper(&self) -> Option<Diagnostic> {
        None
    }

    /// bitnami/zookeeper: ZooKeeper's own scripts in
    /// /opt/bitnami/zookeeper/bin (also on the image's PATH).
    fn zookeeper_tools(&self, client_port: u16) -> ZkTools {
        ZkTools {
            status_name: "`zkServer.sh status`",
            status: "/opt/bitnami/zookeeper/bin/zkServer.sh status".into(),
            not_serving: "\"Error contacting service\"",
            list_brokers: format!(
                "/opt/bitnami/zookeeper/bin/zkCli.sh -server <zookeeper>:{client_port} ls /brokers/ids"
            ),
        }
    }

    fn zookeeper_strings(
        &self,
        zk: &Ensemble,
        n_clusters: usize,
        viewer: usize,
    ) -> Option<ZkStrings> {
        Some(bitnami_zookeeper::zookeeper_strings(zk, n_clusters, viewer))
    }

    fn id_rule(&self, role: Role) -> IdRule {
        match role {
            // `setup.sh`: ordinal + minServerId, a chart value the policy
            // cannot set (it is baked into the script).
            Role::ZooKeeper => IdRule::Fixed(bitnami_zookeeper::MIN_SERVER_ID),
            Role::Broker => IdRule::Offset(100),
            Role::Controller { .. } => IdRule::Offset(0),
        }
    }

    fn plan(&self, topo: &Topology, g: &RoleGroup, cluster: usize, out: &mut Vec<PlannedObject>) {
        match (g.role, &topo.zookeeper, &topo.kafka) {
            (Role::ZooKeeper, Some(zk), _) => bitnami_zookeeper::plan(topo, zk, cluster, out),
            (_, _, Some(k)) => kafka(topo, k, g, cluster, out),
            _ => {}
        }
    }
}

/// What bitnami/kafka's StatefulSet must say for the spec to be true of it:
/// the process roles (dedicated or combined) and the listener ports the plan
/// writes into lists and Services.
fn shape_checks(g: &RoleGroup) -> Vec<Check<'static>> {
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
    let mut checks = vec![
        Check::Env {
            container: s(MAIN_CONTAINER),
            init: false,
            name: s("KAFKA_CFG_PROCESS_ROLES"),
            value: s(roles),
            message: s(fix),
        },
        Check::NoSecret {
            name: s(format!("{}-user-passwords", g.fullname)),
            message: s(
                "the chart generates SASL passwords at random per install, so nodes in \
                 different clusters cannot authenticate to each other; create a Secret with \
                 the same client-passwords, inter-broker-password and controller-password in \
                 every cluster and set the chart value sasl.existingSecret to its name",
            ),
        },
    ];
    checks.extend(default_port_checks(g, MAIN_CONTAINER, |name| {
        format!("listeners.{name}.containerPort")
    }));
    checks
}

fn kafka(topo: &Topology, k: &Kafka, g: &RoleGroup, cluster: usize, out: &mut Vec<PlannedObject>) {
    let c = &topo.clusters[cluster];
    let quorum = kraft_strings(k).expect("KRaft is validated to have controllers");
    let is_controller = matches!(g.role, Role::Controller { .. });
    let is_broker = matches!(g.role, Role::Broker | Role::Controller { combined: true });

    let (mut checks, mut ops) = statefulset_base(g, cluster, &topo.clusters[cluster].name);
    checks.extend(shape_checks(g));
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
    init_env.extend(external_access_lists(topo, g, cluster));
    ops.push(Op::Env {
        container: s(INIT_CONTAINER),
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
        container: s(MAIN_CONTAINER),
        init: false,
        set,
        remove,
    });
    push_statefulset(out, g, cluster, checks, ops);

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
                "CONTROLLER://advertised-address-placeholder:{CONTROLLER_PORT}"
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
    push_properties(
        out,
        g,
        cluster,
        &format!("{}-{role}-configuration", g.fullname),
        PROPERTIES_KEY,
        edits,
    );
    headless(out, g, cluster);
    external_access_services(topo, g, cluster, out);
}

/// The chart value prefix of a bitnami role (`controller.*`, `broker.*`).
fn role_key(g: &RoleGroup) -> &'static str {
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
/// fields, hence `-`), so ordinal S + i reads the chart's entry i. In every
/// cluster the list must have an entry for each of its pods (the chart
/// counts its own `replicaCount`, which the policy overrides).
fn external_access_lists(topo: &Topology, g: &RoleGroup, cluster: usize) -> Vec<EnvVar<'static>> {
    let slice = &g.slices[cluster];
    let prefix = "-,".repeat(slice.ordinal_start as usize);
    let role = role_key(g);
    let short = format!(
        "the chart renders one external address per pod it counts; in cluster \"{}\" set the \
         chart value {role}.replicaCount to {} and give externalAccess.{role}.service one entry \
         per pod (loadBalancerNames, loadBalancerIPs, externalIPs or nodePorts)",
        topo.clusters[cluster].name, slice.replicas
    );
    ["EXTERNAL_ACCESS_HOSTS_LIST", "EXTERNAL_ACCESS_PORTS_LIST"]
        .into_iter()
        .map(|name| EnvVar {
            name: s(name),
            value: EnvValue::Prefixed {
                saved: s(format!("STRADDLE_{name}")),
                prefix: s(prefix.clone()),
                entries: slice.replicas,
                short: s(short.clone()),
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
    let role = role_key(g);
    let mut checks = vec![];
    if g.role == (Role::Controller { combined: false }) {
        checks.push(Check::Env {
            container: s(INIT_CONTAINER),
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
            container: s(INIT_CONTAINER),
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
/// 0..replicaCount; each serves this cluster's `i`-th pod (whose list entry
/// is the chart's entry i). Dedicated controllers' are refused.
fn external_access_services(
    topo: &Topology,
    g: &RoleGroup,
    cluster: usize,
    out: &mut Vec<PlannedObject>,
) {
    let refuse = (g.role == (Role::Controller { combined: false })).then(|| Check::Refuse {
        message: s(FORCE_EXPOSE_FIX),
    });
    let count_value = format!("{}.replicaCount", role_key(g));
    per_pod_services(topo, g, cluster, &count_value, refuse, out);
}
