//! The Kafka nodes of one case in the network-namespace lab, the clients
//! that run next to them (like `kubectl exec`), and the checks of each step.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use straddle_tests::netns::{self, Lab};
use straddle_tests::process::Process;
use straddle_tests::realkafka::{
    self, CLIENT_JVM_FLAGS, Jars, QuorumStatus, parse_brokers, parse_replication, parse_status,
    parse_topic, producer_acks,
};
use straddle_tests::waiting::Reasons;

use super::{Case, zk};

mod faults;

const TOPIC: &str = "straddle-proof";
const POLL: Duration = Duration::from_millis(500);
const FORMATION_DEADLINE: Duration = Duration::from_secs(120);
/// Room for one restart after Kafka's 60 s initial registration timeout.
const REGISTRATION_DEADLINE: Duration = Duration::from_secs(180);
const PRODUCE_DEADLINE: Duration = Duration::from_secs(90);
const READ_DEADLINE: Duration = Duration::from_secs(120);
const TOOL_DEADLINE: Duration = Duration::from_secs(40);
/// The kubelet's SIGTERM-to-SIGKILL grace (shortened).
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Acknowledgements a producer must get to count as producing.
const PROGRESS: usize = 5;
/// A voter within this many records of the leader's log end has caught up
/// (the leader appends a no-op every 500 ms).
const CAUGHT_UP_LAG: i64 = 50;

pub fn verdict(keeps: bool) -> &'static str {
    if keeps {
        "keeps quorum"
    } else {
        "LOSES QUORUM"
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<String>,
}

impl Report {
    pub fn row(&mut self, spec: &str, event: &str, straddle: &str, real: &str, details: String) {
        let row = format!("{spec:<34} {event:<30} {straddle:<14} {real:<14} {details}");
        eprintln!("  {row}");
        self.rows.push(row);
    }
}

/// One producer (`VerifiableProducer`, acks=all) per cluster, running
/// in a broker pod of that cluster through that broker.
struct Producer {
    cluster: usize,
    process: Process,
}

pub struct KafkaLab<'a> {
    pub(crate) case: &'a Case,
    pub(crate) jars: &'a Jars,
    pub(crate) net: Lab,
    producers: Vec<Producer>,
}

impl<'a> KafkaLab<'a> {
    /// The lab with every node's files written and its storage formatted
    /// as the chart formats it (no server running yet).
    pub fn new(case: &'a Case, jars: &'a Jars) -> KafkaLab<'a> {
        let mut members: Vec<netns::Member> = case
            .nodes
            .iter()
            .map(|n| netns::Member {
                id: n.id,
                cluster: n.cluster,
                name: n.name.clone(),
                ip: n.ip,
            })
            .collect();
        members.extend(case.zookeeper.iter().map(|z| netns::Member {
            id: z.lab_id,
            cluster: z.cluster,
            name: z.name.clone(),
            ip: z.ip,
        }));
        let net = Lab::new("kafka", case.topo.clusters.len(), members, &case.dns);
        realkafka::write_log_configs(&net);
        for n in &case.nodes {
            let home = net.home(n.id);
            let header = format!("{} in {}", n.name, case.cluster_name(n.cluster));
            let props = realkafka::server_properties(&n.config, &header, &home.join("data"));
            fs::write(home.join("server.properties"), props).unwrap();
            fs::write(
                home.join("client.properties"),
                realkafka::client_properties(&n.config, case.client_listener),
            )
            .unwrap();
            // The built-in partitioner keeps a producer on one partition
            // until `batch.size` bytes went there: at 10 records/s the
            // default 16 KiB held it for minutes, so a cut that left that
            // partition unwritable stalled it while others took writes.
            // 256 bytes move it on every few records.
            fs::write(
                home.join("producer.properties"),
                realkafka::client_properties(&n.config, case.client_listener) + "batch.size=256\n",
            )
            .unwrap();
            fs::write(
                home.join("controller.properties"),
                realkafka::client_properties(&n.config, "CONTROLLER"),
            )
            .unwrap();
        }
        for z in &case.zookeeper {
            zk::write_config(
                &net,
                z,
                &format!("{} in {}", z.name, case.cluster_name(z.cluster)),
            );
        }
        let lab = KafkaLab {
            case,
            jars,
            net,
            producers: Vec::new(),
        };
        // KRaft formats storage; ZooKeeper-mode brokers need none.
        if !case.zookeeper_mode() {
            lab.format();
        }
        lab
    }

    /// Starts every Kafka node of the case on its `server.properties`.
    fn start_nodes(&mut self, case: &Case) {
        for n in &case.nodes {
            self.start_node(n.id);
        }
    }

    fn start_node(&mut self, id: u32) {
        let java = self.jars.java(
            &self.net,
            id,
            realkafka::JVM_FLAGS,
            &self.net.dir.join(realkafka::SERVER_LOG4J2),
            "kafka.Kafka",
            &[self.file(id, "server.properties")],
        );
        self.net.start(id, java);
    }

    fn file(&self, id: u32, name: &str) -> String {
        self.net.home(id).join(name).display().to_string()
    }

    /// `kafka-storage.sh format` as the chart runs it, every node at once.
    fn format(&self) {
        let t0 = Instant::now();
        thread::scope(|s| {
            let runs: Vec<_> = self
                .case
                .nodes
                .iter()
                .map(|n| {
                    let mut args = vec![
                        "format".to_string(),
                        "-t".into(),
                        n.config.cluster_id.clone().unwrap(),
                        "-c".into(),
                        self.file(n.id, "server.properties"),
                        "--ignore-formatted".into(),
                    ];
                    // Controllers of a dynamic quorum: the initial
                    // controllers (with directory ids); brokers need none.
                    if let Some(initial) = n
                        .config
                        .initial_controllers
                        .as_ref()
                        .filter(|_| n.controller)
                    {
                        args.extend(["--initial-controllers".into(), initial.clone()]);
                    }
                    let main = "kafka.tools.StorageTool";
                    (n.id, s.spawn(move || self.tool(n.id, main, &args)))
                })
                .collect();
            for (id, run) in runs {
                let (ok, out) = run.join().unwrap();
                assert!(
                    ok,
                    "{}: formatting {} failed:\n{out}",
                    self.case.spec,
                    self.case.who(id)
                );
            }
        });
        eprintln!(
            "{}: {} nodes formatted in {:.1?}",
            self.case.spec,
            self.case.nodes.len(),
            t0.elapsed()
        );
    }

    pub(crate) fn tool(&self, id: u32, main: &str, args: &[String]) -> (bool, String) {
        self.jars.run(&self.net, id, main, args, TOOL_DEADLINE)
    }

    /// The node's own address on `listener` (its advertised one, or its
    /// voter entry for CONTROLLER).
    fn address(&self, id: u32, listener: &str) -> String {
        let config = &self.case.node(id).config;
        if listener == "CONTROLLER" {
            return realkafka::voters(config)[&id].clone();
        }
        let (host, port) = realkafka::advertised(config, listener)
            .unwrap_or_else(|| panic!("{}: no {listener} listener", self.case.who(id)));
        format!("{host}:{port}")
    }

    /// `kafka-metadata-quorum describe --status` through node `id`'s own controller.
    fn status(&self, id: u32) -> Result<QuorumStatus, String> {
        let args = self.quorum_args(id, "--status");
        let (ok, out) = self.tool(id, "org.apache.kafka.tools.MetadataQuorumCommand", &args);
        match (ok, parse_status(&out)) {
            (true, Some(s)) if s.leader >= 0 => Ok(s),
            (true, Some(s)) => Err(format!("no leader (epoch {})", s.epoch)),
            _ => Err(last_line(&out)),
        }
    }

    fn quorum_args(&self, id: u32, what: &str) -> Vec<String> {
        vec![
            "--bootstrap-controller".into(),
            self.address(id, "CONTROLLER"),
            "--command-config".into(),
            self.file(id, "controller.properties"),
            "describe".into(),
            what.into(),
        ]
    }

    /// Every voter's lag behind the leader, through node `id`'s controller.
    fn replication(&self, id: u32) -> Result<BTreeMap<u32, (i64, String)>, String> {
        let args = self.quorum_args(id, "--replication");
        let (ok, out) = self.tool(id, "org.apache.kafka.tools.MetadataQuorumCommand", &args);
        if !ok {
            return Err(last_line(&out));
        }
        Ok(parse_replication(&out)
            .into_iter()
            .map(|r| (r.id, (r.lag, r.status)))
            .collect())
    }

    /// The quorum as seen from one controller per cluster of `clusters`, in
    /// parallel: Ok when all see the same leader, one of `side`'s voters.
    fn side_leader(&self, clusters: &[usize]) -> Result<QuorumStatus, String> {
        if self.case.zookeeper_mode() {
            return zk::side_leader(self, clusters);
        }
        let probes: Vec<u32> = clusters
            .iter()
            .filter_map(|&c| self.case.in_cluster(c).find(|n| n.controller).map(|n| n.id))
            .collect();
        let side: BTreeSet<u32> = self
            .case
            .controllers()
            .filter(|n| clusters.contains(&n.cluster))
            .map(|n| n.id)
            .collect();
        let answers: Vec<(u32, Result<QuorumStatus, String>)> = thread::scope(|s| {
            let runs: Vec<_> = probes
                .iter()
                .map(|&id| (id, s.spawn(move || self.status(id))))
                .collect();
            runs.into_iter()
                .map(|(id, h)| (id, h.join().unwrap()))
                .collect()
        });
        let mut seen = None;
        for (id, answer) in answers {
            let status = answer.map_err(|e| format!("{}: {e}", self.case.who(id)))?;
            if !side.contains(&(status.leader as u32)) {
                return Err(format!(
                    "{} sees leader {} outside this side",
                    self.case.who(id),
                    status.leader
                ));
            }
            if let Some(s) = &seen
                && *s != status.leader
            {
                return Err(format!("two leaders seen: {s} and {}", status.leader));
            }
            seen = Some(status.leader);
            if probes.last() == Some(&id) {
                return Ok(status);
            }
        }
        Err("no controller on this side".into())
    }

    /// Polls `check` until it passes or `deadline` (from `since`) passes.
    /// On failure the reasons seen along the way (each change, with its
    /// time) come after the servers' log tails, so a log shortened in the
    /// middle still shows them.
    fn wait<T>(
        &self,
        what: &str,
        since: Instant,
        deadline: Duration,
        mut check: impl FnMut(&Self) -> Result<T, String>,
    ) -> (T, Duration) {
        let mut reasons = Reasons::default();
        loop {
            match check(self) {
                Ok(t) => return (t, since.elapsed()),
                Err(why) if since.elapsed() > deadline => {
                    reasons.note(since.elapsed(), why);
                    let headline = format!(
                        "{} / {what}: not reached within {deadline:?}",
                        self.case.spec
                    );
                    panic!("{}", reasons.report(&headline, &self.net.log_tails(12)))
                }
                Err(why) => {
                    reasons.note(since.elapsed(), why);
                    thread::sleep(POLL);
                }
            }
        }
    }

    /// The clusters that run brokers (producers and consumers run there).
    fn broker_clusters(&self) -> Vec<usize> {
        self.all_clusters()
            .into_iter()
            .filter(|c| self.broker_in(*c).is_some())
            .collect()
    }

    fn broker_in(&self, cluster: usize) -> Option<u32> {
        self.case
            .in_cluster(cluster)
            .find(|n| n.broker)
            .map(|n| n.id)
    }

    fn all_clusters(&self) -> Vec<usize> {
        (0..self.case.topo.clusters.len()).collect()
    }

    /// Starts every node; waits for one quorum with one leader, the spec's
    /// cluster id and the planned voters, every voter caught up.
    pub fn form(&mut self, report: &mut Report) {
        let case = self.case;
        let t0 = Instant::now();
        if case.zookeeper_mode() {
            zk::start(self);
            let all = self.all_clusters();
            let (status, formed) =
                self.wait("the ZooKeeper ensemble", t0, FORMATION_DEADLINE, |lab| {
                    lab.side_leader(&all)
                });
            report.row(
                case.spec,
                &format!("all {} ZooKeeper servers up", case.zookeeper.len()),
                "keeps quorum",
                "keeps quorum",
                format!(
                    "one leader (myid {}, {}) formed {formed:.1?} after start, every server serving ({:?})",
                    status.leader,
                    case.cluster_name(case.voter_cluster(status.leader as u32)),
                    status.voters,
                ),
            );
            let t1 = Instant::now();
            self.start_nodes(case);
            let via = case.nodes[0].id;
            let (controller, up) = self.wait("a Kafka controller", t1, FORMATION_DEADLINE, |lab| {
                zk::controller(lab, via)
            });
            report.row(
                case.spec,
                &format!("all {} brokers up", case.nodes.len()),
                "unique ids",
                "unique ids",
                format!(
                    "controller broker id {controller} ({}) elected through ZooKeeper {up:.1?} after the brokers started",
                    case.cluster_name(case.node(controller).cluster)
                ),
            );
            return;
        }
        self.start_nodes(case);
        let voters: BTreeSet<u32> = case.quorum.voters.iter().map(|v| v.id).collect();
        let all = self.all_clusters();
        let (status, formed) = self.wait("formation", t0, FORMATION_DEADLINE, |lab| {
            let s = lab.side_leader(&all)?;
            if s.voters != voters {
                return Err(format!("voters {:?}, planned {voters:?}", s.voters));
            }
            Ok(s)
        });
        assert_eq!(
            Some(&status.cluster_id),
            case.cluster_id.as_ref(),
            "{}: the quorum's cluster id",
            case.spec
        );
        let first = case.controllers().next().unwrap().id;
        let (lags, caught_up) = self.wait("every voter caught up", t0, FORMATION_DEADLINE, |lab| {
            caught_up(&lab.replication(first)?, &voters)
        });
        // Directory ids: a dynamic quorum's are planned (initial
        // controllers); a static quorum's voters carry none.
        let kafka = case.topo.kafka.as_ref().unwrap();
        let planned: BTreeMap<u32, String> = case
            .nodes
            .iter()
            .filter(|n| n.controller && n.config.initial_controllers.is_some())
            .map(|n| (n.id, kafka.directory_id(n.id)))
            .collect();
        let dirs = if planned.is_empty() {
            "static quorum (controller.quorum.voters, no directory ids)".to_string()
        } else {
            assert_eq!(
                status.directories, planned,
                "{}: directory ids vs the plan",
                case.spec
            );
            format!("directory ids as planned ({})", planned.len())
        };
        report.row(
            case.spec,
            &format!("all {} nodes up", case.nodes.len()),
            "keeps quorum",
            "keeps quorum",
            format!(
                "one leader (id {}, {}) formed {formed:.1?} after start, cluster id {}, voters {:?} all caught up {caught_up:.1?} (lags {lags:?}); {dirs}",
                status.leader,
                case.cluster_name(case.voter_cluster(status.leader as u32)),
                status.cluster_id,
                status.voters,
            ),
        );
    }

    /// Every broker registered with its id, advertised host and rack.
    pub fn registrations(&mut self, report: &mut Report) {
        let case = self.case;
        let via = case.nodes.iter().find(|n| n.broker).unwrap().id;
        let expected: BTreeMap<u32, (String, String)> = case
            .nodes
            .iter()
            .filter(|n| n.broker)
            .map(|n| {
                let host = realkafka::advertised(&n.config, case.client_listener)
                    .unwrap()
                    .0;
                (n.id, (host, case.topo.clusters[n.cluster].rack.clone()))
            })
            .collect();
        let t0 = Instant::now();
        let mut restarted = Vec::new();
        let took = loop {
            // A broker that is not registered 60 s after it started exits
            // (Kafka's initial registration timeout); seen here when the
            // brokers' channel to the controllers kept an early leader that
            // lost its election. The kubelet restarts a StatefulSet pod's
            // container that exits, and so does the lab, once per broker.
            for &id in expected.keys() {
                if restarted.contains(&id) {
                    continue;
                }
                if let Some(how) = self.net.exited(id) {
                    eprintln!("broker {id} exited before it registered ({how}); restarting it");
                    self.net.stop(id, Duration::ZERO);
                    self.start_node(id);
                    restarted.push(id);
                }
            }
            let args = vec![
                "--bootstrap-server".into(),
                self.address(via, case.client_listener),
                "--command-config".into(),
                self.file(via, "client.properties"),
            ];
            let (_, out) = self.tool(via, self.jars.broker_api_versions(), &args);
            let seen = parse_brokers(&out);
            if seen == expected {
                break t0.elapsed();
            }
            if t0.elapsed() > REGISTRATION_DEADLINE {
                panic!(
                    "{} / broker registrations: not reached within {REGISTRATION_DEADLINE:?}: \
                     registered {seen:?}, expected {expected:?}\n{}",
                    case.spec,
                    self.net.log_tails(12)
                );
            }
            thread::sleep(POLL);
        };
        let restarts = if restarted.is_empty() {
            String::new()
        } else {
            format!("; restarted after Kafka's registration timeout: {restarted:?}")
        };
        let racks: BTreeSet<&String> = expected.values().map(|(_, r)| r).collect();
        report.row(
            case.spec,
            "brokers register",
            "unique ids",
            "unique ids",
            format!(
                "{} brokers with ids {:?}, their advertised hosts and racks {racks:?} \
                 ({took:.1?}{restarts})",
                expected.len(),
                expected.keys().collect::<Vec<_>>()
            ),
        );
    }

    /// The topic (RF 3, min.insync.replicas=2, one replica per cluster),
    /// one acks=all producer per cluster, every cluster reading every
    /// acknowledged record.
    pub fn topic_and_cross_reads(&mut self, report: &mut Report) {
        let case = self.case;
        let via = case.nodes.iter().find(|n| n.broker).unwrap().id;
        let base = vec![
            "--bootstrap-server".to_string(),
            self.address(via, self.case.client_listener),
            "--command-config".into(),
            self.file(via, "client.properties"),
            "--topic".into(),
            TOPIC.into(),
        ];
        let mut create = base.clone();
        create.extend(
            [
                "--create",
                "--partitions",
                "3",
                "--replication-factor",
                "3",
                "--config",
                "min.insync.replicas=2",
            ]
            .map(String::from),
        );
        let (ok, out) = self.tool(via, "org.apache.kafka.tools.TopicCommand", &create);
        assert!(ok, "{}: creating the topic failed:\n{out}", case.spec);
        let (partitions, _) = self.wait(
            "the topic's partitions",
            Instant::now(),
            PRODUCE_DEADLINE,
            |lab| lab.partitions(via),
        );
        for (p, (_, replicas, _)) in &partitions {
            let clusters: BTreeSet<usize> =
                replicas.iter().map(|r| case.node(*r).cluster).collect();
            let racks = self.broker_clusters().len().min(3);
            assert_eq!(
                clusters.len(),
                racks,
                "{}: partition {p}'s replicas {replicas:?} do not span {racks} clusters",
                case.spec
            );
        }
        let t0 = Instant::now();
        for ci in self.broker_clusters() {
            let id = self.broker_in(ci).unwrap();
            let args: Vec<String> = [
                "--bootstrap-server",
                &self.address(id, self.case.client_listener),
                &self.jars.client_config_flag("producer"),
                &self.file(id, "producer.properties"),
                "--topic",
                TOPIC,
                "--acks",
                "-1",
                "--throughput",
                "10",
                "--max-messages",
                "-1",
                "--value-prefix",
                &ci.to_string(),
            ]
            .map(String::from)
            .into();
            let java = self.jars.java(
                &self.net,
                id,
                CLIENT_JVM_FLAGS,
                &self.net.dir.join(realkafka::PRODUCER_LOG4J2),
                "org.apache.kafka.tools.VerifiableProducer",
                &args,
            );
            let log = self.net.home(id).join("producer.log");
            let process = Process::spawn(
                &format!("producer in {}", case.cluster_name(ci)),
                java,
                &log,
            )
            .unwrap_or_else(|e| panic!("{e:#}"));
            self.producers.push(Producer {
                cluster: ci,
                process,
            });
        }
        let all = self.broker_clusters();
        let (_, producing) =
            self.wait("every producer acknowledged", t0, PRODUCE_DEADLINE, |lab| {
                lab.progress(&all, 0, PROGRESS)
            });
        let read = self.expect_read_everywhere("cross-cluster reads");
        report.row(
            case.spec,
            "produce in each, read in every",
            "consistent",
            "consistent",
            format!(
                "topic {TOPIC}: {} partitions, replicas {:?} (each spanning {} clusters, rack-aware); acks=all producers in every cluster with brokers acknowledged {producing:.1?} after start; each of those clusters read all {} acknowledged records ({read:.1?})",
                partitions.len(),
                partitions.values().map(|p| &p.1).collect::<Vec<_>>(),
                self.broker_clusters().len().min(3),
                self.acked().len()
            ),
        );
    }

    /// The topic's partitions as node `via` describes them (an error,
    /// e.g. a timeout under load, is retried by the caller's wait).
    fn partitions(&self, via: u32) -> Result<realkafka::Partitions, String> {
        let args: Vec<String> = [
            "--bootstrap-server",
            &self.address(via, self.case.client_listener),
            "--command-config",
            &self.file(via, "client.properties"),
            "--topic",
            TOPIC,
            "--describe",
        ]
        .map(String::from)
        .into();
        let (ok, out) = self.tool(via, "org.apache.kafka.tools.TopicCommand", &args);
        let parsed = parse_topic(&out);
        if ok && !parsed.is_empty() {
            Ok(parsed)
        } else {
            Err(format!(
                "describing the topic through {} failed: {}",
                self.case.who(via),
                last_line(&out)
            ))
        }
    }

    /// Every acknowledged record: value -> (producer's cluster, ack time ms).
    fn acked(&self) -> BTreeMap<String, (usize, u64)> {
        let mut all = BTreeMap::new();
        for p in &self.producers {
            let log = fs::read_to_string(&p.process.log).unwrap_or_default();
            for (value, ts) in producer_acks(&log) {
                all.insert(value, (p.cluster, ts));
            }
        }
        all
    }

    /// Per producer (by cluster): how many connections its client gave up
    /// on during setup ([`realkafka::SETUP_TIMEOUT`]).
    fn setup_timeouts(&self) -> BTreeMap<usize, usize> {
        self.producers
            .iter()
            .map(|p| {
                let log = fs::read_to_string(&p.process.log).unwrap_or_default();
                (
                    p.cluster,
                    log.lines()
                        .filter(|l| l.contains(realkafka::SETUP_TIMEOUT))
                        .count(),
                )
            })
            .collect()
    }

    /// Acknowledgements of the producers of `clusters` after `since_ms`.
    fn acks_since(&self, clusters: &[usize], since_ms: u64) -> BTreeMap<usize, usize> {
        let mut counts: BTreeMap<usize, usize> = clusters.iter().map(|c| (*c, 0)).collect();
        for (_, (c, ts)) in self.acked() {
            if ts > since_ms
                && let Some(n) = counts.get_mut(&c)
            {
                *n += 1;
            }
        }
        counts
    }

    /// Ok once each producer of `clusters` has `least` acknowledgements after `since_ms`.
    fn progress(&self, clusters: &[usize], since_ms: u64, least: usize) -> Result<(), String> {
        let counts = self.acks_since(clusters, since_ms);
        match counts.iter().find(|(_, n)| **n < least) {
            Some((c, n)) => Err(format!(
                "the producer in {} has {n} acknowledgements",
                self.case.cluster_name(*c)
            )),
            None => Ok(()),
        }
    }

    /// Every record acknowledged so far must be read through node `id`
    /// (a console consumer from the beginning, in its pod).
    fn expect_read(&self, id: u32, what: &str) -> Duration {
        // The producers pause meanwhile (SIGSTOP), so the consumer sees the
        // topic go quiet and ends (`--timeout-ms`) once it has read it all.
        for p in &self.producers {
            let _ = p.process.signal(Signal::STOP);
        }
        let took = self.read_all(id, what);
        for p in &self.producers {
            let _ = p.process.signal(Signal::CONT);
        }
        took
    }

    fn read_all(&self, id: u32, what: &str) -> Duration {
        let t0 = Instant::now();
        let want: BTreeSet<String> = self.acked().into_keys().collect();
        let args: Vec<String> = [
            "--bootstrap-server",
            &self.address(id, self.case.client_listener),
            &self.jars.client_config_flag("consumer"),
            &self.file(id, "client.properties"),
            "--topic",
            TOPIC,
            "--from-beginning",
            "--timeout-ms",
            "8000",
        ]
        .map(String::from)
        .into();
        let mut missing = want.len();
        let mut last = String::new();
        while t0.elapsed() < READ_DEADLINE {
            let (_, out) = self.tool(id, "org.apache.kafka.tools.consumer.ConsoleConsumer", &args);
            let read: BTreeSet<&str> = out.lines().map(str::trim).collect();
            let lost: Vec<&String> = want.iter().filter(|v| !read.contains(v.as_str())).collect();
            if lost.is_empty() {
                return t0.elapsed();
            }
            missing = lost.len();
            last = format!(
                "{missing} missing, e.g. {:?}; consumer said: {}",
                &lost[..lost.len().min(5)],
                last_line(&out)
            );
        }
        panic!(
            "{} / {what}: {missing} of {} acknowledged records are not readable through {} after {READ_DEADLINE:?} (LOST RECORDS?): {last}\n{}",
            self.case.spec,
            want.len(),
            self.case.who(id),
            self.net.log_tails(12)
        );
    }

    fn expect_read_everywhere(&self, what: &str) -> Duration {
        let t0 = Instant::now();
        for ci in self.broker_clusters() {
            let id = self.broker_in(ci).unwrap();
            self.expect_read(id, what);
        }
        t0.elapsed()
    }
}

/// Ok(lags) when every voter of `voters` is a voter within `CAUGHT_UP_LAG`.
fn caught_up(
    replication: &BTreeMap<u32, (i64, String)>,
    voters: &BTreeSet<u32>,
) -> Result<BTreeMap<u32, i64>, String> {
    let mut lags = BTreeMap::new();
    for id in voters {
        match replication.get(id) {
            Some((lag, _)) if *lag <= CAUGHT_UP_LAG => {
                lags.insert(*id, *lag);
            }
            other => return Err(format!("voter {id}: {other:?}")),
        }
    }
    Ok(lags)
}

fn last_line(out: &str) -> String {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .chars()
        .take(300)
        .collect()
}
