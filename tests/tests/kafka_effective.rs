//! Kafka cannot run here, so its effective configuration is checked
//! statically, in every cluster of every Kafka spec, on real chart output
//! mutated by the compiled wasm policy:
//!
//! - broker/node IDs are unique across all clusters (and are the IDs
//!   `straddle explain` shows);
//! - every advertised host resolves, in every cluster's DNS view (the same
//!   builder as the real-ZooKeeper proof), to the pod that advertises it,
//!   and no two nodes advertise the same endpoint;
//! - `zookeeper.connect`, controller voters / bootstrap servers, initial
//!   controllers and the cluster ID are identical everywhere, and each of
//!   their hosts resolves everywhere to the right ZooKeeper server or
//!   controller (with the ID it claims);
//! - `broker.rack` is the cluster's rack on every broker.
//!
//! The effective configuration comes from `straddle_tests::effective`
//! (the chart commands run for real, the images' rules modelled). The same
//! checks on the unmutated charts must fail: that is what a stretch without
//! Straddle looks like.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;
use straddle_compiler::preview::Outcome;
use straddle_compiler::spec::Chart;
use straddle_compiler::topology::{Role, RoleGroup};
use straddle_policy::Verdict;
use straddle_policy_host::{Runtime, RuntimeConfig};
use straddle_tests::dns::{self, View};
use straddle_tests::effective::{
    KafkaConfig, bitnami_kafka, cloudpirates_kafka, cp_kafka, listeners,
};
use straddle_tests::root;
use straddle_tests::stretch::{PodRef, Stretch};

const CASES: &[(&str, &[&str])] = &[
    (
        "../examples/cp-two-clusters.yaml",
        &["cp-zk-kafka-only", "cp-default", "cp-kafka-nodeport"],
    ),
    (
        "specs/cp-three-clusters-mcs.yaml",
        &["cp-zk-kafka-only", "cp-kafka-nodeport"],
    ),
    (
        "../examples/bitnami-kraft-three-clusters.yaml",
        &[
            "bitnami-kafka-kraft-dedicated-shared-sasl",
            "bitnami-kafka-kraft-external",
            "bitnami-kafka-kraft-external-nodeport",
        ],
    ),
    (
        "specs/bitnami-kraft-combined.yaml",
        &["bitnami-kafka-kraft-combined-shared-sasl"],
    ),
    ("specs/cloudpirates-kraft-mcs.yaml", &["cloudpirates-kafka"]),
];

/// One broken expectation, with where it broke.
#[derive(Debug)]
struct Failure {
    cluster: String,
    pod: String,
    expectation: String,
}

struct Node<'a> {
    pod: PodRef<'a>,
    ip: Ipv4Addr,
    /// Kafka nodes only.
    config: Option<KafkaConfig>,
}

/// The effective configuration of every pod of the stretch, with one
/// address each, and every cluster's DNS view.
fn nodes(s: &Stretch) -> (Vec<Node<'_>>, Vec<View>) {
    let pods = s.all_pods().unwrap();
    let mut nodes = Vec::new();
    for (i, pod) in pods.into_iter().enumerate() {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 1);
        let config = match (pod.group.role, pod.group.chart) {
            (Role::ZooKeeper, _) => None,
            (_, Chart::CpHelmCharts) => Some(
                cp_kafka::effective_config(pod.statefulset, &pod.namespace, pod.ordinal)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", s.spec)),
            ),
            (_, Chart::Cloudpirates) => {
                let cm_name = format!("{}-config", pod.group.fullname);
                let cm = &s.object(pod.cluster, "ConfigMap", &cm_name).unwrap().after;
                let secret = |n: &str, k: &str| format!("secret({n}/{k})");
                Some(
                    cloudpirates_kafka::effective_config(
                        pod.statefulset,
                        cm,
                        &pod.namespace,
                        pod.ordinal,
                        &secret,
                    )
                    .unwrap_or_else(|e| panic!("{}: {e:#}", s.spec)),
                )
            }
            (role, Chart::Bitnami) => {
                let cm_name = format!(
                    "{}-{}-configuration",
                    pod.group.fullname,
                    if role == Role::Broker {
                        "broker"
                    } else {
                        "controller"
                    }
                );
                let cm = &s.object(pod.cluster, "ConfigMap", &cm_name).unwrap().after;
                // A per-install Secret: random, so different in every cluster.
                let cluster = s.cluster_name(pod.cluster).to_string();
                let secret = move |n: &str, k: &str| format!("random({cluster}:{n}/{k})");
                Some(
                    bitnami_kafka::effective_config(
                        pod.statefulset,
                        cm,
                        &pod.namespace,
                        pod.ordinal,
                        &secret,
                    )
                    .unwrap_or_else(|e| panic!("{}: {e:#}", s.spec)),
                )
            }
        };
        nodes.push(Node { pod, ip, config });
    }
    let addresses: Vec<_> = nodes.iter().map(|n| n.pod.address(n.ip)).collect();
    let views = dns::views(&s.topo, &addresses);
    (nodes, views)
}

/// Reads one value every node must agree on.
type SharedValue = dyn Fn(&KafkaConfig) -> Option<String>;

fn is_broker(g: &RoleGroup) -> bool {
    matches!(g.role, Role::Broker | Role::Controller { combined: true })
}

fn is_ip(host: &str) -> bool {
    host.parse::<Ipv4Addr>().is_ok()
}

const POD_NAME_SELECTOR: &str = "statefulset.kubernetes.io/pod-name";

/// The EXTERNAL listener (the charts' per-pod external access: cp-kafka
/// `nodeport`, bitnami `externalAccess`) must be the one of the per-pod
/// Service that selects this pod in its cluster: that Service's nodePort
/// (NodePort) or port (LoadBalancer), and, where the chart lists one host
/// per pod, the entry of that Service's index. Charts that render no
/// per-pod Service expose nothing to check.
fn external_listener(s: &Stretch, n: &Node, host: &str, port: u16) -> Result<(), String> {
    let per_pod: Vec<&Value> = s.mutated[n.pod.cluster]
        .iter()
        .map(|o| &o.after)
        .filter(|o| o["kind"] == "Service" && o["spec"]["selector"][POD_NAME_SELECTOR].is_string())
        .collect();
    if per_pod.is_empty() {
        return Ok(());
    }
    let mine: Vec<&&Value> = per_pod
        .iter()
        .filter(|o| o["spec"]["selector"][POD_NAME_SELECTOR] == n.pod.name.as_str())
        .collect();
    let [svc] = mine[..] else {
        return Err(format!("{} per-pod Services select this pod", mine.len()));
    };
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    let index: usize = name
        .rsplit('-')
        .nth(1)
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| format!("Service {name} has no index"))?;
    let spec_port = &svc["spec"]["ports"][0];
    let exposed = match svc["spec"]["type"].as_str() {
        Some("NodePort") => &spec_port["nodePort"],
        _ => &spec_port["port"],
    };
    if exposed.as_u64() != Some(u64::from(port)) {
        return Err(format!("Service {name} exposes {exposed}, not {port}"));
    }
    // The chart's own list, as rendered (the policy only moves it).
    let sts = &s
        .object(n.pod.cluster, "StatefulSet", &n.pod.group.statefulset)
        .unwrap()
        .before;
    let init = &sts["spec"]["template"]["spec"]["initContainers"];
    let chart_env = |var: &str| {
        init.as_array()?
            .iter()
            .flat_map(|c| c["env"].as_array().into_iter().flatten())
            .find(|e| e["name"] == var)
            .and_then(|e| e["value"].as_str())
    };
    let want = match (
        chart_env("EXTERNAL_ACCESS_HOSTS_LIST"),
        chart_env("EXTERNAL_ACCESS_HOST"),
    ) {
        (Some(list), _) => list.split(',').nth(index),
        (None, Some(one)) => Some(one),
        // cp-kafka: `${HOST_IP}`, the node's address.
        (None, None) => return Ok(()),
    };
    if want != Some(host) {
        return Err(format!(
            "Service {name} is entry {index} of the chart's hosts, {want:?}"
        ));
    }
    Ok(())
}

/// Every check of the module docs; returns what broke.
fn check(s: &Stretch, nodes: &[Node], views: &[View]) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut fail = |n: &Node, expectation: String| {
        failures.push(Failure {
            cluster: s.cluster_name(n.pod.cluster).to_string(),
            pod: n.pod.name.clone(),
            expectation,
        })
    };
    let by_ip: BTreeMap<Ipv4Addr, &Node> = nodes.iter().map(|n| (n.ip, n)).collect();
    let kafka: Vec<(&Node, &KafkaConfig)> = nodes
        .iter()
        .filter_map(|n| n.config.as_ref().map(|c| (n, c)))
        .collect();
    assert!(!kafka.is_empty(), "{}: no Kafka pods", s.spec);

    // Where a host resolves in every cluster; `want` names the right pod.
    let resolve_everywhere = |host: &str, want: &dyn Fn(&Node) -> Result<(), String>| {
        let mut broken = Vec::new();
        for (ci, view) in views.iter().enumerate() {
            let cluster = s.cluster_name(ci);
            match view.get(host).map(|ip| by_ip[ip]) {
                None => broken.push(format!("{host} does not resolve in {cluster}")),
                Some(target) => {
                    if let Err(why) = want(target) {
                        broken.push(format!(
                            "{host} resolves in {cluster} to {} ({}): {why}",
                            target.pod.name,
                            s.cluster_name(target.pod.cluster)
                        ))
                    }
                }
            }
        }
        broken
    };

    // IDs: unique, and the ones the topology (`straddle explain`) shows.
    let mut ids: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut endpoints: BTreeMap<(String, u16), Vec<String>> = BTreeMap::new();
    for &(n, c) in &kafka {
        let who = format!("{} in {}", n.pod.name, s.cluster_name(n.pod.cluster));
        match c.id() {
            Some(id) => ids.entry(id).or_default().push(who),
            None => fail(n, "has no broker.id / node.id".into()),
        }
        let planned = n
            .pod
            .group
            .nodes
            .iter()
            .find(|p| p.pod == n.pod.name && p.cluster == n.pod.cluster);
        match planned {
            Some(p) if c.id() != Some(p.id) => fail(
                n,
                format!("runs as id {:?}, the plan says {}", c.id(), p.id),
            ),
            None => fail(n, "is a pod the plan does not know".into()),
            _ => {}
        }

        // Kafka refuses to start when `advertised.listeners` names a
        // listener that `listeners` does not define (KafkaConfig's check).
        if let Some(defined) = c.properties.get("listeners") {
            let defined: BTreeSet<String> = listeners(defined)
                .into_iter()
                .map(|(name, _, _)| name)
                .collect();
            for (name, _, _) in c.advertised() {
                if !defined.contains(&name) {
                    fail(
                        n,
                        format!("advertises listener {name}, which `listeners` does not define"),
                    );
                }
            }
        }

        // Advertised listeners resolve everywhere to this pod.
        for (name, host, port) in c.advertised() {
            endpoints
                .entry((host.clone(), port))
                .or_default()
                .push(n.pod.name.clone());
            if name == "EXTERNAL" {
                if let Err(why) = external_listener(s, n, &host, port) {
                    fail(
                        n,
                        format!("advertised listener EXTERNAL {host}:{port}: {why}"),
                    );
                }
                continue;
            }
            if is_ip(&host) {
                continue;
            }
            let me = n.ip;
            for why in resolve_everywhere(&host, &|t| {
                if t.ip == me {
                    Ok(())
                } else {
                    Err("not the advertising pod".into())
                }
            }) {
                fail(n, format!("advertised listener {name}: {why}"));
            }
        }

        // Rack.
        if is_broker(n.pod.group) {
            let rack = &s.topo.clusters[n.pod.cluster].rack;
            if c.properties.get("broker.rack") != Some(rack.as_str()) {
                fail(
                    n,
                    format!(
                        "broker.rack is {:?}, expected the cluster's rack {rack:?}",
                        c.properties.get("broker.rack")
                    ),
                );
            }
        }
    }
    for (id, who) in ids.iter().filter(|(_, w)| w.len() > 1) {
        let n = kafka[0].0;
        fail(
            n,
            format!("id {id} is used by {} nodes: {who:?}", who.len()),
        );
    }
    for ((host, port), who) in endpoints.iter().filter(|(_, w)| w.len() > 1) {
        let n = kafka[0].0;
        fail(n, format!("{host}:{port} is advertised by {who:?}"));
    }

    // Shared values: identical everywhere, and pointing at the right pods.
    let shared: [(&str, &SharedValue); 5] = [
        ("zookeeper.connect", &|c| {
            c.properties.get("zookeeper.connect").map(str::to_string)
        }),
        ("controller.quorum.bootstrap.servers", &|c| {
            c.properties
                .get("controller.quorum.bootstrap.servers")
                .map(str::to_string)
        }),
        ("controller.quorum.voters", &|c| {
            c.properties
                .get("controller.quorum.voters")
                .map(str::to_string)
        }),
        ("cluster id", &|c| c.cluster_id.clone()),
        ("initial controllers", &|c| c.initial_controllers.clone()),
    ];
    for (what, get) in shared {
        let holders: Vec<_> = kafka
            .iter()
            .filter(|(n, _)| {
                what != "initial controllers" || matches!(n.pod.group.role, Role::Controller { .. })
            })
            .collect();
        if holders.is_empty() {
            continue;
        }
        let values: BTreeSet<Option<String>> = holders.iter().map(|h| get(h.1)).collect();
        let reference = get(holders[0].1);
        for &&(n, c) in &holders {
            if values.len() > 1 && get(c) != reference {
                fail(
                    n,
                    format!(
                        "{what} differs between clusters: {:?} here, {:?} on {} in {}",
                        get(c),
                        reference,
                        holders[0].0.pod.name,
                        s.cluster_name(holders[0].0.pod.cluster)
                    ),
                );
            }
        }
    }

    // zookeeper.connect: every ZooKeeper server, resolvable everywhere.
    if let Some(zk) = &s.topo.zookeeper {
        for &(n, c) in &kafka {
            let connect = c.properties.get("zookeeper.connect").unwrap_or("");
            let mut reached = BTreeSet::new();
            for entry in connect.split('/').next().unwrap_or("").split(',') {
                let host = entry.rsplit_once(':').map_or(entry, |(h, _)| h);
                for why in resolve_everywhere(host, &|t| {
                    if t.pod.group.role == Role::ZooKeeper {
                        Ok(())
                    } else {
                        Err("not a ZooKeeper server".into())
                    }
                }) {
                    fail(n, format!("zookeeper.connect: {why}"));
                }
                if let Some(ip) = views[n.pod.cluster].get(host) {
                    reached.insert(by_ip[ip].pod.name.clone());
                }
            }
            let all: BTreeSet<String> = zk.group.nodes.iter().map(|z| z.pod.clone()).collect();
            if reached != all {
                fail(
                    n,
                    format!("zookeeper.connect reaches {reached:?}, not every server {all:?}"),
                );
            }
        }
    }

    // KRaft: cluster id as the spec says; voters and initial controllers
    // name every controller by its own id and a host that reaches it.
    if let Some(k) = &s.topo.kafka
        && let Some(controllers) = &k.controllers
    {
        let want_ids: BTreeSet<u32> = controllers.nodes.iter().map(|n| n.id).collect();
        for &(n, c) in &kafka {
            if c.cluster_id != k.cluster_id {
                fail(
                    n,
                    format!(
                        "cluster id {:?}, the spec says {:?}",
                        c.cluster_id, k.cluster_id
                    ),
                );
            }
            let mut lists = vec![];
            if let Some(v) = c.properties.get("controller.quorum.voters") {
                lists.push(("controller.quorum.voters", v.to_string()));
            }
            if let Some(v) = &c.initial_controllers {
                lists.push(("initial controllers", v.clone()));
            }
            for (what, list) in lists {
                let mut seen = BTreeSet::new();
                for entry in list.split(',') {
                    let Some((id, rest)) = entry.split_once('@') else {
                        fail(n, format!("{what}: {entry} is not id@host:port"));
                        continue;
                    };
                    let id: u32 = id.parse().unwrap_or(u32::MAX);
                    seen.insert(id);
                    let host = rest.split(':').next().unwrap_or("");
                    for why in resolve_everywhere(host, &|t| match &t.config {
                        Some(tc) if matches!(t.pod.group.role, Role::Controller { .. }) => {
                            if tc.id() == Some(id) {
                                Ok(())
                            } else {
                                Err(format!(
                                    "a controller with id {:?}, listed as {id}",
                                    tc.id()
                                ))
                            }
                        }
                        _ => Err("not a controller".into()),
                    }) {
                        fail(n, format!("{what}: {why}"));
                    }
                }
                if seen != want_ids {
                    fail(
                        n,
                        format!("{what} lists ids {seen:?}, the controllers are {want_ids:?}"),
                    );
                }
            }
            if let Some(bootstrap) = c.properties.get("controller.quorum.bootstrap.servers") {
                for entry in bootstrap.split(',') {
                    let host = entry.rsplit_once(':').map_or(entry, |(h, _)| h);
                    for why in resolve_everywhere(host, &|t| {
                        if matches!(t.pod.group.role, Role::Controller { .. }) {
                            Ok(())
                        } else {
                            Err("not a controller".into())
                        }
                    }) {
                        fail(n, format!("controller.quorum.bootstrap.servers: {why}"));
                    }
                }
            }
            // A dynamic quorum (KIP-853) registers each controller's advertised
            // CONTROLLER endpoint; a static one dials the voters list instead.
            if !listeners(c.properties.get("listeners").unwrap_or("")).is_empty()
                && c.properties
                    .get("controller.quorum.bootstrap.servers")
                    .is_some()
                && matches!(n.pod.group.role, Role::Controller { .. })
                && !c.advertised().iter().any(|(l, _, _)| l == "CONTROLLER")
            {
                fail(
                    n,
                    "a controller without a CONTROLLER advertised listener".into(),
                );
            }
        }
    }
    failures
}

fn report(s: &Stretch, fixture: &str, failures: &[Failure]) -> String {
    let mut out = format!(
        "{} on {fixture}: {} broken expectations\n",
        s.spec,
        failures.len()
    );
    for f in failures {
        out.push_str(&format!(
            "  cluster {:<12} node {:<28} {}\n",
            f.cluster, f.pod, f.expectation
        ));
    }
    out
}

#[test]
fn every_cluster_runs_a_consistent_kafka() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut checked = 0;
    for (spec, fixtures) in CASES {
        for fixture in *fixtures {
            let s = Stretch::load(
                &runtime,
                &root().join("tests").join(spec),
                &root()
                    .join("tests")
                    .join("fixtures/charts")
                    .join(fixture)
                    .join("rendered.yaml"),
            )
            .unwrap();
            let (nodes, views) = nodes(&s);
            let failures = check(&s, &nodes, &views);
            assert!(failures.is_empty(), "{}", report(&s, fixture, &failures));
            checked += nodes.iter().filter(|n| n.config.is_some()).count();
        }
    }
    assert!(checked >= 30, "only {checked} Kafka pods checked");
}

/// The same checks on the charts as rendered (no policy): every cluster
/// reuses IDs 0.. and advertises names only it can resolve. The checks must
/// say so, naming cluster, node and expectation.
#[test]
fn the_unmutated_charts_fail_the_checks() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    for (spec, fixture, expected) in [
        (
            "../examples/cp-two-clusters.yaml",
            "cp-zk-kafka-only",
            &[
                "id 0 is used by 2 nodes",
                "advertised listener PLAINTEXT: confluent-cp-kafka-0.confluent-cp-kafka-headless.confluent resolves in cluster-1 to confluent-cp-kafka-0 (cluster-1): not the advertising pod",
                "broker.rack is None",
            ][..],
        ),
        (
            "../examples/bitnami-kraft-three-clusters.yaml",
            "bitnami-kafka-kraft-dedicated-shared-sasl",
            &[
                "id 100 is used by 3 nodes",
                "cluster id differs between clusters",
                "initial controllers differs between clusters",
                "a controller without a CONTROLLER advertised listener",
            ][..],
        ),
        (
            "specs/cloudpirates-kraft-mcs.yaml",
            "cloudpirates-kafka",
            &[
                "id 0 is used by 3 nodes",
                "controller.quorum.voters lists ids {0, 1, 2}, the controllers are {0, 1, 10, 11, 20}",
                "broker.rack is None",
            ][..],
        ),
    ] {
        let mutated = Stretch::load(
            &runtime,
            &root().join("tests").join(spec),
            &root()
                .join("tests")
                .join("fixtures/charts")
                .join(fixture)
                .join("rendered.yaml"),
        )
        .unwrap();
        // Every cluster gets the chart as rendered.
        let s = Stretch {
            spec: format!("{spec} (unmutated)"),
            mutated: mutated
                .mutated
                .iter()
                .map(|docs| {
                    docs.iter()
                        .map(|o| Outcome {
                            after: o.before.clone(),
                            verdict: Verdict::Allow,
                            ..o.clone()
                        })
                        .collect()
                })
                .collect(),
            topo: mutated.topo,
        };
        let (nodes, views) = nodes(&s);
        let failures = check(&s, &nodes, &views);
        let text = report(&s, fixture, &failures);
        for e in expected {
            assert!(text.contains(e), "expected {e:?} among:\n{text}");
        }
    }
}
