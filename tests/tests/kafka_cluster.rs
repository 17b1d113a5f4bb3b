//! Straddle's Kafka, proven on real Kafka servers across the simulated
//! clusters (issue 14).
//!
//! For each spec: compile it, apply the real chart output to one real
//! control plane per cluster with the webhook installed
//! (`straddle_tests::controlplane`), read back the Pods the real
//! StatefulSet controllers made (and the stored ConfigMap), and derive each
//! node's effective configuration from them the way the chart's command
//! and the image would (`straddle_tests::effective`; the in-process model,
//! `straddle_tests::stretch`, must agree). Then each node runs as a real
//! `kafka.Kafka` (jars from Maven Central, `tests/tools/kafka/fetch.sh`) in
//! its own network namespace of the lab (`straddle_tests::netns`: one DNS
//! view per cluster, cuts that drop packets), formatted the way the chart
//! formats it (`straddle_tests::realkafka`).
//!
//! ZooKeeper mode (cp-helm-charts, `cp-kafka` on the stretched
//! `cp-zookeeper`): Kafka 4 has none, so those brokers run Kafka 3.9 (the
//! jars of `tests/tools/kafka/pom-zookeeper.xml`), and the ensemble runs
//! from the ZooKeeper jars that Kafka ships with, each server with the
//! `zoo.cfg` the cp-zookeeper image writes from its mutated pod. There the
//! metadata quorum is ZooKeeper's: "a leader" is one ZooKeeper leader with
//! every server of the side serving (4lw `srvr`), formation also waits for
//! the Kafka controller the brokers elect through ZooKeeper.
//!
//! Checked, per spec:
//! - the controllers form one quorum with one leader, with the spec's
//!   cluster id and exactly the planned voters (`MetadataQuorumCommand`);
//! - every broker registers with its globally unique id, its advertised
//!   host and its cluster's rack (`BrokerApiVersionsCommand`);
//! - a topic with replication factor 3 and `min.insync.replicas=2` places
//!   one replica per cluster (rack-aware); a producer with `acks=all` in
//!   each cluster writes through its own cluster's broker; consumers in
//!   every other cluster read every acknowledged record;
//! - cutting each cluster in turn: each side keeps a metadata-quorum leader
//!   exactly when `straddle explain`'s analysis says so; exactly the
//!   partitions with two replicas outside the cut cluster keep two in-sync
//!   replicas (acks=all writable: explain's warning when brokers run in
//!   fewer than three clusters); the producers of the side that keeps it
//!   are acknowledged again (together: one alone can stall, see `lab.rs`)
//!   and the cut-off producer gets none; after the heal every voter catches up, every
//!   partition's ISR is whole again, the rejoined cluster reads every
//!   acknowledged record and its producer is acknowledged again;
//! - at the end no acknowledged record is lost: every cluster reads all.
//!
//! Needs root, `ip`, `java` (17+), the jars of `tests/tools/kafka/fetch.sh`
//! and the binaries of `tests/tools/build.sh`. Without them it prints why
//! and passes, unless `STRADDLE_REQUIRE_REAL_KAFKA=1` (CI), which turns a
//! skip into a failure. `--nocapture` shows the timings.

#[path = "kafka_cluster/lab.rs"]
mod lab;
#[path = "kafka_cluster/zk.rs"]
mod zk;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use serde_json::{Value, json};
use straddle_compiler::quorum::{self, Quorum, Survivability};
use straddle_compiler::topology::Topology;
use straddle_policy_host::{Runtime, RuntimeConfig};
use straddle_tests::controlplane::Tools;
use straddle_tests::controlplane::stretch::KubeStretch;
use straddle_tests::controlplane::webhook::Certificates;
use straddle_tests::dns::{self, View};
use straddle_tests::effective::{
    KafkaConfig, ZkConfig, bitnami_kafka, cloudpirates_kafka, cp_kafka, cp_zookeeper,
};
use straddle_tests::realkafka::{self, Jars};
use straddle_tests::stretch::Stretch;
use straddle_tests::{netns, realkafka::listener_names};

use lab::{KafkaLab, Report, verdict};

/// The Kafka chart shapes proven here.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum KafkaChart {
    /// CloudPirates `kafka` on apache/kafka: `server.properties` from the
    /// ConfigMap, the container script appends `node.id` and
    /// `advertised.listeners`, formats with `KAFKA_CLUSTER_ID`.
    CloudPirates,
    /// bitnami `kafka` (Kafka 4.0 image), dedicated controllers and brokers:
    /// the `prepare-config` init script writes `server.properties`; the
    /// controllers format with the initial-controllers file (directory ids).
    Bitnami,
    /// cp-helm-charts `cp-kafka` in ZooKeeper mode (release `confluent`):
    /// the image turns `KAFKA_*` env into `server.properties`, the command
    /// exports the broker id and advertised listeners; the brokers use the
    /// stretched `cp-zookeeper` ensemble. Run on Kafka 3.9 (4.x has no
    /// ZooKeeper mode).
    Cp,
}

impl KafkaChart {
    fn variant(self) -> &'static str {
        match self {
            KafkaChart::CloudPirates => "cloudpirates-kafka",
            KafkaChart::Bitnami => "bitnami-kafka-kraft-dedicated-shared-sasl",
            KafkaChart::Cp => "cp-zk-kafka-only",
        }
    }

    fn statefulsets(self) -> &'static [&'static str] {
        match self {
            KafkaChart::CloudPirates => &["kafka"],
            KafkaChart::Bitnami => &["kafka-controller", "kafka-broker"],
            KafkaChart::Cp => &["confluent-cp-kafka"],
        }
    }

    /// The ZooKeeper StatefulSet of ZooKeeper mode.
    fn zookeeper(self) -> Option<&'static str> {
        (self == KafkaChart::Cp).then_some("confluent-cp-zookeeper")
    }

    /// The listener clients use.
    fn client_listener(self) -> &'static str {
        match self {
            KafkaChart::Cp => "PLAINTEXT",
            KafkaChart::CloudPirates | KafkaChart::Bitnami => "CLIENT",
        }
    }

    /// The ConfigMap the pods of `statefulset` read, if any.
    fn configmap(self, statefulset: &str) -> Option<String> {
        match self {
            KafkaChart::CloudPirates => Some("kafka-config".into()),
            KafkaChart::Bitnami => Some(format!("{statefulset}-configuration")),
            KafkaChart::Cp => None,
        }
    }

    /// The chart's Secrets (not applied: the pods only name them). One
    /// value everywhere, as a shared Secret gives.
    fn secret(name: &str, key: &str) -> String {
        format!("{name}-{key}-pw")
    }

    fn config(self, sts: &Value, configmap: Option<&Value>, ns: &str, ordinal: u32) -> KafkaConfig {
        let configmap = || configmap.expect("the chart's ConfigMap");
        match self {
            KafkaChart::Cp => cp_kafka::effective_config(sts, ns, ordinal),
            KafkaChart::CloudPirates => {
                cloudpirates_kafka::effective_config(sts, configmap(), ns, ordinal, &Self::secret)
            }
            KafkaChart::Bitnami => {
                bitnami_kafka::effective_config(sts, configmap(), ns, ordinal, &Self::secret)
            }
        }
        .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// One Kafka pod.
#[derive(Debug)]
pub struct Node {
    pub id: u32,
    pub cluster: usize,
    pub name: String,
    pub ip: Ipv4Addr,
    pub config: KafkaConfig,
    pub controller: bool,
    pub broker: bool,
}

/// One ZooKeeper server of ZooKeeper mode.
#[derive(Debug)]
pub struct ZkServer {
    /// Its lab member id ([`ZK_LAB_ID`] + myid: Kafka's broker ids start at 0).
    pub lab_id: u32,
    pub cluster: usize,
    pub name: String,
    pub ip: Ipv4Addr,
    pub config: ZkConfig,
}

/// ZooKeeper servers are lab members `ZK_LAB_ID + myid`.
pub const ZK_LAB_ID: u32 = 1000;

pub struct Case {
    pub spec: &'static str,
    pub topo: Topology,
    /// The metadata quorum: the KRaft controllers, or ZooKeeper's ensemble.
    pub quorum: Quorum,
    pub survivability: Survivability,
    pub nodes: Vec<Node>,
    /// ZooKeeper mode: the ensemble (empty in KRaft mode).
    pub zookeeper: Vec<ZkServer>,
    pub dns: Vec<View>,
    /// KRaft's cluster id (ZooKeeper mode: none, the brokers make one).
    pub cluster_id: Option<String>,
    pub client_listener: &'static str,
}

impl Case {
    pub fn cluster_name(&self, ci: usize) -> &str {
        &self.topo.clusters[ci].name
    }

    pub fn zookeeper_mode(&self) -> bool {
        !self.zookeeper.is_empty()
    }

    pub fn zk(&self, myid: u32) -> &ZkServer {
        self.zookeeper
            .iter()
            .find(|z| z.config.myid == myid)
            .unwrap()
    }

    /// The cluster of metadata-quorum voter `id` (controller or ZooKeeper server).
    pub fn voter_cluster(&self, id: u32) -> usize {
        if self.zookeeper_mode() {
            self.zk(id).cluster
        } else {
            self.node(id).cluster
        }
    }

    /// `<pod> (id N) in <cluster>` of voter `id`, for messages.
    pub fn who_voter(&self, id: u32) -> String {
        if self.zookeeper_mode() {
            let z = self.zk(id);
            format!("{} (myid {id}) in {}", z.name, self.cluster_name(z.cluster))
        } else {
            self.who(id)
        }
    }

    pub fn node(&self, id: u32) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    pub fn in_cluster(&self, ci: usize) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.cluster == ci)
    }

    fn losses(&self) -> Vec<(&str, bool)> {
        self.survivability.losses()
    }

    pub fn controllers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.controller)
    }

    /// `<pod> (id N) in <cluster>`, for messages.
    pub fn who(&self, id: u32) -> String {
        let n = self.node(id);
        format!("{} (id {id}) in {}", n.name, self.cluster_name(n.cluster))
    }

    /// Compiles `spec`, applies the chart fixture to one real control plane
    /// per cluster, and derives every Kafka node's configuration from the
    /// Pod its StatefulSet controller made (the in-process model must agree).
    fn load(runtime: &Runtime, tools: &Tools, spec: &'static str, chart: KafkaChart) -> Case {
        let started = Instant::now();
        let (real, configmaps) = {
            let kube =
                KubeStretch::new(tools, spec, chart.variant(), Certificates::SelfManaged, &[])
                    .unwrap_or_else(|e| panic!("{spec}: {e:#}"));
            let mut real = BTreeMap::new();
            let mut configmaps = Vec::new();
            for i in 0..kube.planes.clusters.len() {
                let pods = kube
                    .apply(i, &kube.docs)
                    .and_then(|_| kube.wait_for_pods(i))
                    .unwrap_or_else(|e| panic!("{spec}: {e:#}"));
                let mut stored = BTreeMap::new();
                for sts in chart.statefulsets() {
                    let Some(name) = chart.configmap(sts) else {
                        continue;
                    };
                    let cm = kube
                        .cluster(i)
                        .get("configmap", &kube.namespace, &name)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| panic!("{spec}: ConfigMap {name} was not stored"));
                    stored.insert(sts.to_string(), cm);
                }
                configmaps.push(stored);
                for p in pods {
                    let owner = p["metadata"]["ownerReferences"][0]["name"].as_str();
                    if owner.is_some_and(|o| {
                        chart.statefulsets().contains(&o) || chart.zookeeper() == Some(o)
                    }) {
                        let name = p["metadata"]["name"].as_str().unwrap().to_string();
                        real.insert((i, name), p);
                    }
                }
            }
            (real, configmaps)
        };
        eprintln!(
            "{spec}: {} Kafka pods from real API servers in {:.1?}",
            real.len(),
            started.elapsed()
        );
        let tests = straddle_tests::root().join("tests");
        let fixture = tests.join(format!("fixtures/charts/{}/rendered.yaml", chart.variant()));
        let stretch = Stretch::load(runtime, &tests.join(spec), &fixture)
            .unwrap_or_else(|e| panic!("{spec}: {e:#}"));
        let kafka = stretch.topo.kafka.as_ref().expect("a Kafka spec");
        let mut nodes = Vec::new();
        let mut addresses = Vec::new();
        let mut seen = BTreeSet::new();
        for group in kafka.groups() {
            for r in stretch.pods(group).unwrap_or_else(|e| panic!("{e:#}")) {
                if !seen.insert((r.cluster, r.name.clone())) {
                    continue;
                }
                let pod = real.get(&(r.cluster, r.name.clone())).unwrap_or_else(|| {
                    panic!(
                        "{spec}: the StatefulSet controller of {} made no pod {}",
                        stretch.cluster_name(r.cluster),
                        r.name
                    )
                });
                let sts = group.statefulset.as_str();
                let from_pod = json!({
                    "metadata": {"name": sts},
                    "spec": {"template": {"spec": pod["spec"]}},
                });
                let config = chart.config(
                    &from_pod,
                    configmaps[r.cluster].get(sts),
                    &r.namespace,
                    r.ordinal,
                );
                let model_cm = chart.configmap(sts).map(|name| {
                    &stretch
                        .object(r.cluster, "ConfigMap", &name)
                        .unwrap_or_else(|e| panic!("{e:#}"))
                        .after
                });
                let modelled = chart.config(r.statefulset, model_cm, &r.namespace, r.ordinal);
                assert_eq!(
                    config, modelled,
                    "{spec} {}: the real pod's configuration differs from the model's",
                    r.name
                );
                let roles = config.properties.get("process.roles").unwrap_or("broker");
                let id = config
                    .id()
                    .unwrap_or_else(|| panic!("{spec} {}: no node.id", r.name));
                nodes.push(Node {
                    id,
                    cluster: r.cluster,
                    name: r.name.clone(),
                    ip: Ipv4Addr::UNSPECIFIED,
                    controller: roles.contains("controller"),
                    broker: roles.contains("broker"),
                    config,
                });
                addresses.push(r.address(Ipv4Addr::UNSPECIFIED));
            }
        }
        // ZooKeeper mode: the ensemble's servers, from their real pods
        // (cp-zookeeper's command and image; the model must agree).
        let mut zookeeper = Vec::new();
        let mut zk_addresses = Vec::new();
        if let Some(zk) = stretch.topo.zookeeper.as_ref() {
            for r in stretch.pods(&zk.group).unwrap_or_else(|e| panic!("{e:#}")) {
                let pod = real.get(&(r.cluster, r.name.clone())).unwrap_or_else(|| {
                    panic!(
                        "{spec}: the StatefulSet controller of {} made no pod {}",
                        stretch.cluster_name(r.cluster),
                        r.name
                    )
                });
                let from_pod = json!({
                    "metadata": {"name": zk.group.statefulset},
                    "spec": {"template": {"spec": pod["spec"]}},
                });
                let config = cp_zookeeper::effective_config(&from_pod, &r.namespace, r.ordinal)
                    .unwrap_or_else(|e| panic!("{e:#}"));
                let modelled =
                    cp_zookeeper::effective_config(r.statefulset, &r.namespace, r.ordinal)
                        .unwrap_or_else(|e| panic!("{e:#}"));
                assert_eq!(
                    config, modelled,
                    "{spec} {}: the real pod's configuration differs from the model's",
                    r.name
                );
                zookeeper.push(ZkServer {
                    lab_id: ZK_LAB_ID + config.myid,
                    cluster: r.cluster,
                    name: r.name.clone(),
                    ip: Ipv4Addr::UNSPECIFIED,
                    config,
                });
                zk_addresses.push(r.address(Ipv4Addr::UNSPECIFIED));
            }
        }
        assert_eq!(
            nodes.len() + zookeeper.len(),
            real.len(),
            "{spec}: the real controllers made other pods than the spec's"
        );
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by_key(|&i| nodes[i].id);
        for (n, &i) in order.iter().enumerate() {
            nodes[i].ip = netns::address(n);
            addresses[i].ip = nodes[i].ip;
        }
        zookeeper.sort_by_key(|z| z.lab_id);
        zk_addresses.sort_by_key(|a| (a.cluster, a.pod.clone()));
        for (n, z) in zookeeper.iter_mut().enumerate() {
            z.ip = netns::address(nodes.len() + n);
            let a = zk_addresses
                .iter_mut()
                .find(|a| a.cluster == z.cluster && a.pod == z.name)
                .unwrap();
            a.ip = z.ip;
        }
        addresses.extend(zk_addresses);
        let dns = dns::views(&stretch.topo, &addresses);
        nodes.sort_by_key(|n| n.id);
        let cluster_id = kafka.cluster_id.clone();
        drop(real);
        let topo = stretch.topo;
        let name = if zookeeper.is_empty() {
            "kraft-controllers"
        } else {
            "zookeeper"
        };
        let quorum = quorum::quorums(&topo)
            .into_iter()
            .find(|q| q.name == name)
            .unwrap_or_else(|| panic!("{spec}: no {name} quorum"));
        let survivability = quorum::analyse(&topo, &quorum);
        let case = Case {
            spec,
            topo,
            quorum,
            survivability,
            nodes,
            zookeeper,
            dns,
            cluster_id,
            client_listener: chart.client_listener(),
        };
        case.check_configs();
        case
    }

    /// What the nodes run with is what the analysis reasons about: unique
    /// ids, the same voters everywhere (the analysed ones), the spec's
    /// cluster id, every voter and advertised host resolvable where it is used.
    fn check_configs(&self) {
        let spec = self.spec;
        let ids: BTreeSet<u32> = self.nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids.len(), self.nodes.len(), "{spec}: two nodes share an id");
        let analysed: BTreeMap<u32, usize> = self
            .quorum
            .voters
            .iter()
            .map(|v| (v.id, v.cluster))
            .collect();
        let voters: BTreeMap<u32, usize> = if self.zookeeper_mode() {
            self.zookeeper
                .iter()
                .map(|z| (z.config.myid, z.cluster))
                .collect()
        } else {
            self.controllers().map(|n| (n.id, n.cluster)).collect()
        };
        assert_eq!(voters, analysed, "{spec}: voters vs analysed voters");
        self.check_zookeeper();
        for n in &self.nodes {
            let what = format!("{spec} {} ({})", n.name, self.cluster_name(n.cluster));
            assert_eq!(
                n.config.cluster_id, self.cluster_id,
                "{what}: formatted with another cluster id"
            );
            let voters = realkafka::voters(&n.config);
            assert!(
                !n.controller || !voters.is_empty(),
                "{what}: a controller with neither static voters nor initial controllers"
            );
            if !voters.is_empty() {
                assert_eq!(
                    voters.keys().copied().collect::<BTreeSet<_>>(),
                    analysed.keys().copied().collect(),
                    "{what}: the voters it knows are not the analysed voters"
                );
            }
            let controller_ips: BTreeSet<Ipv4Addr> = self.controllers().map(|c| c.ip).collect();
            for addr in realkafka::bootstrap_controllers(&n.config) {
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                assert!(
                    self.dns[n.cluster]
                        .get(host)
                        .is_some_and(|ip| controller_ips.contains(ip)),
                    "{what}: bootstrap controller {host} does not resolve to a controller in {}",
                    self.cluster_name(n.cluster)
                );
            }
            for (id, addr) in &voters {
                let host = addr.rsplit_once(':').unwrap().0;
                let ip = self.dns[n.cluster].get(host);
                assert_eq!(
                    ip,
                    Some(&self.node(*id).ip),
                    "{what}: voter {id} at {host} does not resolve to its pod in {}",
                    self.cluster_name(n.cluster)
                );
            }
            for (listener, host, _) in n.config.advertised() {
                // ZooKeeper mode: cp-kafka's EXTERNAL listener advertises
                // the node's host IP (NodePort); only the client listener
                // is the stretch's.
                if self.zookeeper_mode() && listener != self.client_listener {
                    continue;
                }
                for ci in 0..self.topo.clusters.len() {
                    assert_eq!(
                        self.dns[ci].get(&host),
                        Some(&n.ip),
                        "{what}: advertised {listener} host {host} does not resolve to it in {}",
                        self.cluster_name(ci)
                    );
                }
            }
            assert!(
                !n.controller || listener_names(&n.config).iter().any(|l| l == "CONTROLLER"),
                "{what}: a controller without a CONTROLLER listener"
            );
        }
    }
}

impl Case {
    /// ZooKeeper mode: every server's `server.<myid>` list names every
    /// server (its own entry `0.0.0.0`, the chart's command), each entry
    /// resolving in its cluster to that server; the groups and weights are
    /// the analysed ones' count; each broker's `zookeeper.connect` names
    /// every server, resolvable in its cluster.
    fn check_zookeeper(&self) {
        let spec = self.spec;
        if !self.zookeeper_mode() {
            return;
        }
        let myids: BTreeSet<u32> = self.zookeeper.iter().map(|z| z.config.myid).collect();
        for z in &self.zookeeper {
            let what = format!("{spec} {} ({})", z.name, self.cluster_name(z.cluster));
            let servers = z.config.properties.indexed("server");
            assert_eq!(
                servers.keys().copied().collect::<BTreeSet<_>>(),
                myids,
                "{what}: server list vs the ensemble"
            );
            for (id, entry) in &servers {
                let host = entry.split(':').next().unwrap();
                if *id == z.config.myid {
                    assert_eq!(host, "0.0.0.0", "{what}: its own entry");
                    continue;
                }
                assert_eq!(
                    self.dns[z.cluster].get(host),
                    Some(&self.zk(*id).ip),
                    "{what}: server.{id} {host} does not resolve to its pod"
                );
            }
        }
        let zk_ips: BTreeSet<Ipv4Addr> = self.zookeeper.iter().map(|z| z.ip).collect();
        for n in &self.nodes {
            let what = format!("{spec} {} ({})", n.name, self.cluster_name(n.cluster));
            let connect = n
                .config
                .properties
                .get("zookeeper.connect")
                .unwrap_or_else(|| panic!("{what}: no zookeeper.connect"));
            let resolved: BTreeSet<Ipv4Addr> = connect
                .split('/')
                .next()
                .unwrap()
                .split(',')
                .map(|a| {
                    let host = a.rsplit_once(':').map_or(a, |(h, _)| h);
                    *self.dns[n.cluster].get(host).unwrap_or_else(|| {
                        panic!("{what}: zookeeper.connect host {host} does not resolve")
                    })
                })
                .collect();
            assert_eq!(
                resolved, zk_ips,
                "{what}: zookeeper.connect does not name every server"
            );
        }
    }
}

/// Why this machine cannot run real Kafka, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if let Some(why) = netns::missing_prerequisite(&["java"]) {
        return Some(why);
    }
    if let Err(why) = Tools::find() {
        return Some(why);
    }
    realkafka::jars()
        .and_then(|_| realkafka::zookeeper_mode_jars())
        .err()
}

/// One stretch, all nodes of every cluster: formation, registrations,
/// cross-cluster produce/consume, then each cluster cut and healed.
fn prove(case: &Case, jars: &Jars, cuts: &[usize], report: &mut Report) {
    let mut lab = KafkaLab::new(case, jars);
    lab.form(report);
    lab.registrations(report);
    lab.topic_and_cross_reads(report);
    for &cluster in cuts {
        let keeps = case.survivability.cluster_losses[cluster].keeps_quorum;
        let isolated_keeps = case.quorum.has_quorum(|v| v.cluster == cluster);
        let details = lab.cut(cluster, keeps, isolated_keeps);
        report.row(
            case.spec,
            &format!("lose {}", case.cluster_name(cluster)),
            verdict(keeps),
            verdict(keeps),
            details,
        );
        let details = lab.heal(cluster);
        report.row(
            case.spec,
            &format!("restore {}", case.cluster_name(cluster)),
            "heals",
            "heals",
            details,
        );
    }
    let details = lab.finish();
    report.row(
        case.spec,
        "no acknowledged record lost",
        "all readable",
        "all readable",
        details,
    );
}

#[test]
fn real_kafka_agrees_with_the_survivability_analysis() {
    if let Some(reason) = missing_prerequisite() {
        if std::env::var("STRADDLE_REQUIRE_REAL_KAFKA").as_deref() == Ok("1") {
            panic!(
                "STRADDLE_REQUIRE_REAL_KAFKA=1 but this machine cannot run real Kafka: {reason}"
            );
        }
        eprintln!("skipped: {reason} (set STRADDLE_REQUIRE_REAL_KAFKA=1 to fail instead)");
        return;
    }
    let started = Instant::now();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let tools = Tools::find().expect("checked above");
    let jars = realkafka::jars().expect("checked above");
    let zk_jars = realkafka::zookeeper_mode_jars().expect("checked above");
    let mut report = Report::default();

    // `STRADDLE_KAFKA_CASES=bitnami` (a comma list) runs only those cases.
    let only = std::env::var("STRADDLE_KAFKA_CASES").ok();
    let wanted = |case: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|c| c == case))
    };
    // The cuts of a case: by default (CI) the ones that show something the
    // other cases do not; `STRADDLE_KAFKA_ALL_CUTS=1` cuts every cluster.
    let all_cuts = std::env::var("STRADDLE_KAFKA_ALL_CUTS").as_deref() == Ok("1");
    let cuts = |ci: &'static [usize], all: &'static [usize]| if all_cuts { all } else { ci };

    // CloudPirates on apache/kafka: combined nodes 2 + 2 + 1, static
    // quorum, over MCS: any one cluster can go.
    if wanted("cloudpirates") {
        let official = Case::load(
            &runtime,
            &tools,
            "specs/cloudpirates-kraft-mcs.yaml",
            KafkaChart::CloudPirates,
        );
        assert_eq!(
            official.losses(),
            [("east", true), ("west", true), ("witness", true)]
        );
        prove(&official, &jars, &[0, 1, 2], &mut report);
    }

    // bitnami (Kafka 4.0 image; run on the same 4.x jars), dedicated:
    // controllers 1 + 1 + 1 with a dynamic quorum (directory ids),
    // brokers 3 + 3 + 0, over MCS. Cutting east shows the brokers' side.
    if wanted("bitnami") {
        let bitnami = Case::load(
            &runtime,
            &tools,
            "../examples/bitnami-kraft-three-clusters.yaml",
            KafkaChart::Bitnami,
        );
        assert_eq!(
            bitnami.losses(),
            [("east", true), ("west", true), ("witness", true)]
        );
        prove(&bitnami, &jars, &[0, 2], &mut report);
    }

    // bitnami, dedicated roles stretched: controllers 2 + 2 + 1 (a
    // dynamic quorum of five, directory ids planned), brokers 3 + 3 + 0,
    // over MCS: any one cluster can go (three voters remain).
    if wanted("dedicated") {
        let dedicated = Case::load(
            &runtime,
            &tools,
            "specs/bitnami-kraft-dedicated-stretch.yaml",
            KafkaChart::Bitnami,
        );
        assert_eq!(
            dedicated.losses(),
            [("east", true), ("west", true), ("witness", true)]
        );
        assert_eq!(dedicated.controllers().count(), 5);
        // West (not cut in the bitnami example's run) shows acks=all on
        // the partitions with two replicas there stopping while east's go on.
        prove(&dedicated, &jars, cuts(&[1], &[0, 1, 2]), &mut report);
    }

    // cp-helm-charts in ZooKeeper mode (Kafka 3.9): ZooKeeper 3 + 3 + 1
    // (hierarchical: one group per cluster), brokers 3 + 3 + 0, over MCS.
    // The quorum survives any one cluster; with brokers in two clusters
    // RF 3 puts two replicas of some partitions in one cluster, and losing
    // it stops acks=all writes to those (explain's warning).
    if wanted("cp") {
        let cp = Case::load(
            &runtime,
            &tools,
            "specs/cp-three-clusters-mcs.yaml",
            KafkaChart::Cp,
        );
        assert_eq!(
            cp.losses(),
            [
                ("cluster-0", true),
                ("cluster-1", true),
                ("tie-breaker", true)
            ]
        );
        // cluster-0: ZooKeeper keeps its quorum (groups 2 of 3), partitions
        // with two replicas there stop taking acks=all writes.
        prove(&cp, &zk_jars, cuts(&[0], &[0, 1, 2]), &mut report);
    }

    println!(
        "real Kafka {} (ZooKeeper mode: {}) vs `straddle explain` ({:.1?} in all):\n{:<34} {:<30} {:<14} {:<14} details\n{}",
        jars.version,
        zk_jars.version,
        started.elapsed(),
        "spec",
        "event",
        "straddle",
        "real",
        report.rows.join("\n")
    );
}
