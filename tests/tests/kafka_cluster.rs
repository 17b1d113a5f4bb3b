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
//!   exactly when `straddle explain`'s analysis says so; the producers of
//!   the side that keeps it keep getting acknowledgements and the cut-off
//!   producer gets none; after the heal every voter catches up, every
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

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};
use straddle_compiler::quorum::{self, Quorum, Survivability};
use straddle_compiler::topology::Topology;
use straddle_policy_host::{Runtime, RuntimeConfig};
use straddle_tests::controlplane::Tools;
use straddle_tests::controlplane::stretch::KubeStretch;
use straddle_tests::controlplane::webhook::Certificates;
use straddle_tests::dns::{self, View};
use straddle_tests::effective::{KafkaConfig, bitnami_kafka, cloudpirates_kafka};
use straddle_tests::realkafka::{self, Jars};
use straddle_tests::stretch::Stretch;
use straddle_tests::{netns, realkafka::listener_names};

use lab::{KafkaLab, Report, verdict};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

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
}

impl KafkaChart {
    fn variant(self) -> &'static str {
        match self {
            KafkaChart::CloudPirates => "cloudpirates-kafka",
            KafkaChart::Bitnami => "bitnami-kafka-kraft-dedicated-shared-sasl",
        }
    }

    fn statefulsets(self) -> &'static [&'static str] {
        match self {
            KafkaChart::CloudPirates => &["kafka"],
            KafkaChart::Bitnami => &["kafka-controller", "kafka-broker"],
        }
    }

    /// The ConfigMap the pods of `statefulset` read.
    fn configmap(self, statefulset: &str) -> String {
        match self {
            KafkaChart::CloudPirates => "kafka-config".into(),
            KafkaChart::Bitnami => format!("{statefulset}-configuration"),
        }
    }

    /// The chart's Secrets (not applied: the pods only name them). One
    /// value everywhere, as a shared Secret gives.
    fn secret(name: &str, key: &str) -> String {
        format!("{name}-{key}-pw")
    }

    fn config(self, sts: &Value, configmap: &Value, ns: &str, ordinal: u32) -> KafkaConfig {
        match self {
            KafkaChart::CloudPirates => {
                cloudpirates_kafka::effective_config(sts, configmap, ns, ordinal, &Self::secret)
            }
            KafkaChart::Bitnami => {
                bitnami_kafka::effective_config(sts, configmap, ns, ordinal, &Self::secret)
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

pub struct Case {
    pub spec: &'static str,
    pub topo: Topology,
    pub quorum: Quorum,
    pub survivability: Survivability,
    pub nodes: Vec<Node>,
    pub dns: Vec<View>,
    pub cluster_id: String,
}

impl Case {
    pub fn cluster_name(&self, ci: usize) -> &str {
        &self.topo.clusters[ci].name
    }

    pub fn node(&self, id: u32) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    pub fn in_cluster(&self, ci: usize) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.cluster == ci)
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
                    let name = chart.configmap(sts);
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
                    if owner.is_some_and(|o| chart.statefulsets().contains(&o)) {
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
        let fixture = root().join(format!("fixtures/charts/{}/rendered.yaml", chart.variant()));
        let stretch = Stretch::load(runtime, &root().join(spec), &fixture)
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
                    &configmaps[r.cluster][sts],
                    &r.namespace,
                    r.ordinal,
                );
                let model_cm = &stretch
                    .object(r.cluster, "ConfigMap", &chart.configmap(sts))
                    .unwrap_or_else(|e| panic!("{e:#}"))
                    .after;
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
        assert_eq!(
            nodes.len(),
            real.len(),
            "{spec}: the real controllers made other Kafka pods than the spec's"
        );
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by_key(|&i| nodes[i].id);
        for (n, &i) in order.iter().enumerate() {
            nodes[i].ip = netns::address(n);
            addresses[i].ip = nodes[i].ip;
        }
        let dns = dns::views(&stretch.topo, &addresses);
        nodes.sort_by_key(|n| n.id);
        let cluster_id = kafka
            .cluster_id
            .clone()
            .expect("KRaft specs name a cluster id");
        drop(real);
        let topo = stretch.topo;
        let quorum = quorum::quorums(&topo)
            .into_iter()
            .find(|q| q.name == "kraft-controllers")
            .expect("a KRaft controller quorum");
        let survivability = quorum::analyse(&topo, &quorum);
        let case = Case {
            spec,
            topo,
            quorum,
            survivability,
            nodes,
            dns,
            cluster_id,
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
        let controllers: BTreeMap<u32, usize> =
            self.controllers().map(|n| (n.id, n.cluster)).collect();
        assert_eq!(
            controllers, analysed,
            "{spec}: controllers vs analysed voters"
        );
        for n in &self.nodes {
            let what = format!("{spec} {} ({})", n.name, self.cluster_name(n.cluster));
            assert_eq!(
                n.config.cluster_id.as_deref(),
                Some(self.cluster_id.as_str()),
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

/// Why this machine cannot run real Kafka, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if let Some(why) = netns::missing_prerequisite(&["java"]) {
        return Some(why);
    }
    if let Err(why) = Tools::find() {
        return Some(why);
    }
    realkafka::jars().err()
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
    let mut report = Report::default();

    // `STRADDLE_KAFKA_CASES=bitnami` (a comma list) runs only those cases.
    let only = std::env::var("STRADDLE_KAFKA_CASES").ok();
    let wanted = |case: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|c| c == case))
    };

    // CloudPirates on apache/kafka: combined nodes 2 + 2 + 1, static
    // quorum, over MCS: any one cluster can go.
    if wanted("cloudpirates") {
        let official = Case::load(
            &runtime,
            &tools,
            "specs/cloudpirates-kraft-mcs.yaml",
            KafkaChart::CloudPirates,
        );
        let losses: Vec<(&str, bool)> = official
            .survivability
            .cluster_losses
            .iter()
            .map(|l| (l.cluster.as_str(), l.keeps_quorum))
            .collect();
        assert_eq!(losses, [("east", true), ("west", true), ("witness", true)]);
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
        let losses: Vec<(&str, bool)> = bitnami
            .survivability
            .cluster_losses
            .iter()
            .map(|l| (l.cluster.as_str(), l.keeps_quorum))
            .collect();
        assert_eq!(losses, [("east", true), ("west", true), ("witness", true)]);
        prove(&bitnami, &jars, &[0, 2], &mut report);
    }

    println!(
        "real Kafka {} vs `straddle explain` ({:.1?} in all):\n{:<34} {:<30} {:<14} {:<14} details\n{}",
        jars.version,
        started.elapsed(),
        "spec",
        "event",
        "straddle",
        "real",
        report.rows.join("\n")
    );
}
