//! bitnami/zookeeper 13 (ZooKeeper 3.9, `bitnami/zookeeper` image), the
//! ZooKeeper half of [`super::bitnami::Bitnami`].
//!
//! The image's `libzookeeper.sh` writes `zoo.cfg` from env: `ZOO_SERVERS`
//! (`host:2888:3888::id`, space-separated; with `::id` the ids are explicit),
//! and every `ZOO_CFG_<key>` as `<key>` with `_` read as `.` (so
//! `ZOO_CFG_group_1` is `group.1`). The chart's `setup.sh` (ConfigMap
//! `<fullname>-scripts`) numbers servers `ordinal + minServerId` (chart
//! value, default 1) and writes `myid` once. So the policy moves ordinals and
//! rewrites `ZOO_SERVERS`, the groups and the weights.

use straddle_policy::plan::{Check, ObjectKind, Op};

use super::{
    PlannedObject, ZkStrings, default_port_checks, literal, push, push_statefulset, s,
    statefulset_base, zk_connect, zk_hierarchy,
};
use crate::topology::{Ensemble, Topology};

pub const CONTAINER: &str = "zookeeper";
pub const CLIENT_PORT: u16 = 2181;
pub const FOLLOWER_PORT: u16 = 2888;
pub const ELECTION_PORT: u16 = 3888;
pub const SERVERS: &str = "ZOO_SERVERS";
/// `group.<n>` as the image's `ZOO_CFG_` convention spells it.
pub const GROUP_PREFIX: &str = "ZOO_CFG_group_";
pub const WEIGHT_PREFIX: &str = "ZOO_CFG_weight_";
/// The chart's `minServerId` default, which the ids assume.
pub const MIN_SERVER_ID: u32 = 1;

pub fn ports() -> Vec<(&'static str, u16)> {
    vec![
        ("client", CLIENT_PORT),
        ("follower", FOLLOWER_PORT),
        ("election", ELECTION_PORT),
    ]
}

/// `ZOO_SERVERS` and the `ZOO_CFG_group_<n>` / `ZOO_CFG_weight_<id>` values,
/// as cluster `viewer` sees them.
pub struct Lists {
    pub servers: String,
    pub groups: Vec<(String, String)>,
    pub weights: Vec<(String, String)>,
}

pub fn lists(zk: &Ensemble, n_clusters: usize, viewer: usize) -> Lists {
    let nodes = &zk.group.nodes;
    let servers = nodes
        .iter()
        .map(|n| {
            format!(
                "{}:{FOLLOWER_PORT}:{ELECTION_PORT}::{}",
                n.zk_host(viewer),
                n.id
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let h = zk_hierarchy(zk, n_clusters).unwrap_or_default();
    let groups = h
        .groups
        .into_iter()
        .enumerate()
        .map(|(i, ids)| (format!("{GROUP_PREFIX}{}", i + 1), ids))
        .collect();
    let weights = h
        .weights
        .into_iter()
        .map(|(id, w)| (format!("{WEIGHT_PREFIX}{id}"), w.to_string()))
        .collect();
    Lists {
        servers,
        groups,
        weights,
    }
}

pub fn zookeeper_strings(zk: &Ensemble, n_clusters: usize, viewer: usize) -> ZkStrings {
    let l = lists(zk, n_clusters, viewer);
    let join = |vars: Vec<(String, String)>| {
        (!vars.is_empty()).then(|| {
            vars.into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    ZkStrings {
        settings: [SERVERS, "ZOO_CFG_group_<n>", "ZOO_CFG_weight_<id>"],
        servers: l.servers,
        groups: join(l.groups),
        weights: join(l.weights),
        connect: zk_connect(zk, viewer),
    }
}

/// Chart variants whose objects cannot be made right in every cluster.
fn refusals(fullname: &str) -> Vec<Check<'static>> {
    let random = |secret: String, what: &str, value: &str| Check::NoSecret {
        name: s(secret),
        message: s(format!(
            "the chart generates the {what} per install, so servers in different clusters \
             cannot trust each other; create one Secret with the same content in every \
             cluster and set the chart value {value} to its name"
        )),
    };
    vec![
        random(
            format!("{fullname}-quorum-auth"),
            "quorum SASL passwords at random",
            "auth.quorum.existingSecret",
        ),
        random(
            format!("{fullname}-client-auth"),
            "client SASL passwords at random",
            "auth.client.existingSecret",
        ),
        random(
            format!("{fullname}-quorum-crt"),
            "quorum TLS certificate authority",
            "tls.quorum.existingSecret (certificates from one CA, naming every cluster's servers)",
        ),
        random(
            format!("{fullname}-client-crt"),
            "client TLS certificate authority",
            "tls.client.existingSecret (certificates from one CA, naming every cluster's servers)",
        ),
        Check::NoVolume {
            name: s("config"),
            message: s(
                "a zoo.cfg from the chart value configuration or existingConfigmap replaces \
                 the one the image writes from ZOO_SERVERS, so the stretched server list would \
                 be ignored; remove the value and pass other settings as ZOO_CFG_<key> in \
                 extraEnvVars",
            ),
        },
    ]
}

pub fn plan(topo: &Topology, zk: &Ensemble, cluster: usize, out: &mut Vec<PlannedObject>) {
    let g = &zk.group;
    let n_clusters = topo.clusters.len();
    let (mut checks, mut ops) = statefulset_base(g, cluster, &topo.clusters[cluster].name);
    checks.extend(refusals(&g.fullname));
    checks.extend(default_port_checks(g, CONTAINER, |name| {
        format!("containerPorts.{name}")
    }));
    let l = lists(zk, n_clusters, cluster);
    let mut set = vec![
        literal(SERVERS, l.servers),
        // A server's own name may resolve to an address that is not on the
        // pod (a mesh or LoadBalancer address); listen on all of them.
        literal("ZOO_LISTEN_ALLIPS_ENABLED", "yes"),
    ];
    // Groups and weights not set now go (a change of quorum type or of the
    // servers converges).
    let remove = vec![
        s(format!("{GROUP_PREFIX}*")),
        s(format!("{WEIGHT_PREFIX}*")),
    ];
    set.extend(
        l.groups
            .into_iter()
            .chain(l.weights)
            .map(|(k, v)| literal(&k, v)),
    );
    ops.push(Op::Env {
        container: s(CONTAINER),
        init: false,
        set,
        remove,
    });
    push_statefulset(out, g, cluster, checks, ops);
    super::headless(out, g, cluster);
    // `networkPolicy.enabled` (the default) admits 2888/3888 only from pods
    // the podSelector matches in this cluster: peers elsewhere are dropped.
    let refuse = Check::Refuse {
        message: s(
            "the chart's NetworkPolicy admits the quorum and election ports (2888, 3888) only \
             from ZooKeeper pods of this cluster, so servers in other clusters cannot join; set \
             the chart value networkPolicy.enabled=false and, if you need one, create a \
             NetworkPolicy of your own (another name) that admits those ports from the other \
             clusters' pod addresses",
        ),
    };
    push(
        out,
        cluster,
        ObjectKind::NetworkPolicy,
        g,
        &g.fullname,
        vec![refuse],
        vec![],
    );
}
