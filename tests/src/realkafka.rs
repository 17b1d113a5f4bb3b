//! Real Kafka in the lab ([`crate::netns`]): the jars `tests/tools/kafka/fetch.sh`
//! fetched from Maven Central, each node's `server.properties` (its
//! effective configuration, [`crate::effective`], with the few test
//! settings named in [`TEST_OVERRIDES`]), and the Kafka tools the proof
//! asks (storage format, metadata quorum, broker registrations, topics,
//! the verifiable producer, the console consumer) with their answers parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::effective::{KafkaConfig, listeners};
use crate::netns::Lab;

/// Small JVMs: 2 cores run every node and client.
pub const JVM_FLAGS: &[&str] = &[
    "-Xmx256m",
    "-Xss512k",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];
pub const CLIENT_JVM_FLAGS: &[&str] = &[
    "-Xmx160m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
];

/// Where the image's settings are replaced, and why. Everything else in
/// each node's `server.properties` is what the image would run with.
pub const TEST_OVERRIDES: &[(&str, &str)] = &[
    // Speed: a cut replica leaves the ISR after 10 s instead of 30 s, so
    // acks=all producing resumes sooner on the surviving side.
    ("replica.lag.time.max.ms", "10000"),
    // Speed: consumers join at once.
    ("group.initial.rebalance.delay.ms", "0"),
];

/// Settings of an image that the Apache Kafka jars cannot run, left out:
/// (property, value prefix). cp-kafka's chart names Confluent's metrics
/// reporter (`KAFKA_METRIC_REPORTERS`), a class only Confluent's image ships.
pub const TEST_UNAVAILABLE: &[(&str, &str)] = &[("metric.reporters", "io.confluent.")];

/// The jars: `$STRADDLE_KAFKA_JARS`, else the `current` link
/// `tests/tools/kafka/fetch.sh` leaves in its cache.
pub fn jars() -> Result<Jars, String> {
    jars_of("STRADDLE_KAFKA_JARS", "current", "")
}

/// The Kafka 3.9 jars of ZooKeeper mode (`tests/tools/kafka/pom-zookeeper.xml`):
/// `$STRADDLE_KAFKA_ZK_JARS`, else the `current-pom-zookeeper` link.
pub fn zookeeper_mode_jars() -> Result<Jars, String> {
    jars_of(
        "STRADDLE_KAFKA_ZK_JARS",
        "current-pom-zookeeper",
        " tests/tools/kafka/pom-zookeeper.xml",
    )
}

fn jars_of(var: &str, link: &str, pom: &str) -> Result<Jars, String> {
    let dir = match std::env::var_os(var) {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                .ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
            cache.join("straddle/kafka").join(link)
        }
    };
    let version = fs::read_dir(&dir)
        .map_err(|e| {
            format!(
                "{}: {e} (run tests/tools/kafka/fetch.sh{pom} or set {var})",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("kafka_2.13-")?
                .strip_suffix(".jar")
                .map(str::to_string)
        })
        .ok_or_else(|| format!("{}: no kafka_2.13-*.jar", dir.display()))?;
    Ok(Jars { dir, version })
}

pub struct Jars {
    pub dir: PathBuf,
    /// Of `kafka_2.13-<version>.jar`.
    pub version: String,
}

impl Jars {
    /// Kafka 3.x: ZooKeeper mode, and the tools' older names (the
    /// `--producer.config`/`--consumer.config` flags, the Scala
    /// `kafka.admin.BrokerApiVersionsCommand`).
    pub fn legacy(&self) -> bool {
        self.version.starts_with("3.")
    }

    /// The class of `kafka-broker-api-versions.sh`.
    pub fn broker_api_versions(&self) -> &'static str {
        if self.legacy() {
            "kafka.admin.BrokerApiVersionsCommand"
        } else {
            "org.apache.kafka.tools.BrokerApiVersionsCommand"
        }
    }

    /// The flag that names a client's properties file (`producer` or `consumer`).
    pub fn client_config_flag(&self, client: &str) -> String {
        if self.legacy() {
            format!("--{client}.config")
        } else {
            "--command-config".into()
        }
    }

    /// `java <flags> -cp <jars>/* <main> <args>` in pod `id`'s namespace,
    /// logging through `log4j2` (a properties file).
    pub fn java(
        &self,
        lab: &Lab,
        id: u32,
        flags: &[&str],
        log4j2: &Path,
        main: &str,
        args: &[String],
    ) -> Command {
        let mut cmd = lab.command(id, "java");
        cmd.args(flags)
            .arg(format!("-Dlog4j2.configurationFile={}", log4j2.display()))
            .arg("-cp")
            .arg(format!("{}/*", self.dir.display()))
            .arg(main)
            .args(args);
        cmd
    }

    /// The same as [`Jars::java`], run to completion (like `kubectl exec`).
    pub fn run(
        &self,
        lab: &Lab,
        id: u32,
        main: &str,
        args: &[String],
        deadline: Duration,
    ) -> (bool, String) {
        let mut all: Vec<String> = CLIENT_JVM_FLAGS.iter().map(|f| f.to_string()).collect();
        all.push(format!(
            "-Dlog4j2.configurationFile={}",
            lab.dir.join(TOOLS_LOG4J2).display()
        ));
        all.push("-cp".into());
        all.push(format!("{}/*", self.dir.display()));
        all.push(main.into());
        all.extend(args.iter().cloned());
        lab.run(id, "java", &all, deadline)
    }
}

pub const SERVER_LOG4J2: &str = "server-log4j2.properties";
pub const TOOLS_LOG4J2: &str = "tools-log4j2.properties";
/// The producers': the tools' plus the client's connection and metadata
/// events (a connection that times out, a leader that moved), to explain
/// a producer that stalls during a cut.
pub const PRODUCER_LOG4J2: &str = "producer-log4j2.properties";
/// The client's line for a connection whose setup timed out (a peer whose
/// packets are dropped: `socket.connection.setup.timeout.ms`, 10 s doubling
/// to 30 s).
pub const SETUP_TIMEOUT: &str = "due to socket connection setup timeout";

/// Writes the two logging configurations into the lab's directory.
pub fn write_log_configs(lab: &Lab) {
    let common = "status = warn\n\
         appender.out.type = Console\n\
         appender.out.name = OUT\n\
         appender.out.target = SYSTEM_ERR\n\
         appender.out.layout.type = PatternLayout\n\
         appender.out.layout.pattern = [%d] %p %m (%c)%n\n\
         rootLogger.appenderRef.out.ref = OUT\n";
    fs::write(
        lab.dir.join(SERVER_LOG4J2),
        format!(
            "{common}rootLogger.level = INFO\n\
             logger.state.name = state.change.logger\nlogger.state.level = WARN\n\
             logger.clients.name = org.apache.kafka.clients\nlogger.clients.level = WARN\n\
             logger.netclient.name = org.apache.kafka.common.network\nlogger.netclient.level = WARN\n"
        ),
    )
    .unwrap();
    fs::write(
        lab.dir.join(TOOLS_LOG4J2),
        format!("{common}rootLogger.level = ERROR\n"),
    )
    .unwrap();
    fs::write(
        lab.dir.join(PRODUCER_LOG4J2),
        format!(
            "{common}rootLogger.level = ERROR\n\
             logger.net.name = org.apache.kafka.clients.NetworkClient\nlogger.net.level = INFO\n\
             logger.meta.name = org.apache.kafka.clients.Metadata\nlogger.meta.level = INFO\n"
        ),
    )
    .unwrap();
}

/// The node's `server.properties`: its effective configuration with the
/// data directory on its volume and [`TEST_OVERRIDES`].
pub fn server_properties(config: &KafkaConfig, header: &str, data: &Path) -> String {
    let mut lines = config.properties.lines.clone();
    for (k, v) in lines.iter_mut() {
        if k == "log.dirs" || k == "metadata.log.dir" || k == "log.dir" {
            *v = data.display().to_string();
        }
    }
    lines.retain(|(k, v)| {
        !TEST_UNAVAILABLE
            .iter()
            .any(|(key, prefix)| k == key && v.starts_with(prefix))
    });
    for (key, value) in TEST_OVERRIDES {
        lines.retain(|(k, _)| k != key);
        lines.push((key.to_string(), value.to_string()));
    }
    let mut out = format!("# {header}\n");
    for (k, v) in &lines {
        let _ = writeln!(out, "{k}={v}");
    }
    out
}

/// The SASL/PLAIN accounts the listener `name` accepts (`user_<name>="pw"`
/// entries of `listener.name.<name>.plain.sasl.jaas.config`).
pub fn plain_users(config: &KafkaConfig, listener: &str) -> BTreeMap<String, String> {
    let key = format!(
        "listener.name.{}.plain.sasl.jaas.config",
        listener.to_lowercase()
    );
    let mut users = BTreeMap::new();
    let Some(jaas) = config.properties.get(&key) else {
        return users;
    };
    let mut rest = jaas;
    while let Some(at) = rest.find(" user_") {
        rest = &rest[at + 6..];
        let Some((user, after)) = rest.split_once("=\"") else {
            break;
        };
        let Some((password, after)) = after.split_once('"') else {
            break;
        };
        users.insert(user.to_string(), password.to_string());
        rest = after;
    }
    users
}

/// A client's properties for `listener` of `config`: its security protocol
/// (from `listener.security.protocol.map`) and, for SASL/PLAIN, the first
/// account the listener accepts; plus short timeouts.
pub fn client_properties(config: &KafkaConfig, listener: &str) -> String {
    let protocol = config
        .properties
        .get("listener.security.protocol.map")
        .unwrap_or("")
        .split(',')
        .find_map(|e| {
            let (l, p) = e.trim().split_once(':')?;
            l.eq_ignore_ascii_case(listener).then(|| p.to_string())
        })
        .unwrap_or_else(|| "PLAINTEXT".into());
    let mut out = format!(
        "security.protocol={protocol}\nrequest.timeout.ms=5000\ndefault.api.timeout.ms=8000\n"
    );
    if protocol.starts_with("SASL")
        && let Some((user, password)) = plain_users(config, listener).into_iter().next()
    {
        let _ = write!(
            out,
            "sasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{user}\" password=\"{password}\";\n"
        );
    }
    out
}

/// The (host, port) `listener` advertises (`advertised.listeners`).
pub fn advertised(config: &KafkaConfig, listener: &str) -> Option<(String, u16)> {
    config
        .advertised()
        .into_iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(listener))
        .map(|(_, h, p)| (h, p))
}

/// The voters a node knows: `controller.quorum.voters` (static quorum) or
/// its initial controllers (`id@host:port:directory`, dynamic): id -> host:port.
pub fn voters(config: &KafkaConfig) -> BTreeMap<u32, String> {
    let list = config
        .properties
        .get("controller.quorum.voters")
        .or(config.initial_controllers.as_deref())
        .unwrap_or("");
    list.split(',')
        .filter_map(|v| {
            let (id, addr) = v.trim().split_once('@')?;
            // host:port[:directory id]
            let mut parts = addr.splitn(3, ':');
            let (host, port) = (parts.next()?, parts.next()?);
            Some((id.parse().ok()?, format!("{host}:{port}")))
        })
        .collect()
}

/// `controller.quorum.bootstrap.servers` (dynamic quorum) as host:port.
pub fn bootstrap_controllers(config: &KafkaConfig) -> Vec<String> {
    config
        .properties
        .get("controller.quorum.bootstrap.servers")
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The listener names of the node's `listeners` (e.g. CONTROLLER).
pub fn listener_names(config: &KafkaConfig) -> Vec<String> {
    listeners(config.properties.get("listeners").unwrap_or(""))
        .into_iter()
        .map(|(n, _, _)| n)
        .collect()
}

/// `MetadataQuorumCommand describe --status`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct QuorumStatus {
    pub cluster_id: String,
    pub leader: i64,
    pub epoch: i64,
    pub high_watermark: i64,
    pub voters: BTreeSet<u32>,
    /// Voter id -> directory id, where the output names them.
    pub directories: BTreeMap<u32, String>,
}

pub fn parse_status(text: &str) -> Option<QuorumStatus> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let voters_text = field("CurrentVoters")?;
    let mut voters = BTreeSet::new();
    let mut directories = BTreeMap::new();
    if voters_text.contains("\"id\"") {
        // 4.x: [{"id": 0, "directoryId": "...", "endpoints": [...]}, ...]
        for entry in voters_text.split("{\"id\"").skip(1) {
            let id: u32 = entry
                .trim_start_matches([':', ' '])
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            voters.insert(id);
            if let Some(dir) = entry
                .split_once("\"directoryId\"")
                .and_then(|(_, r)| r.split('"').nth(1))
            {
                directories.insert(id, dir.to_string());
            }
        }
    } else {
        voters = voters_text
            .trim_matches(['[', ']'])
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect();
    }
    Some(QuorumStatus {
        cluster_id: field("ClusterId")?,
        leader: field("LeaderId")?.parse().ok()?,
        epoch: field("LeaderEpoch")?.parse().ok()?,
        high_watermark: field("HighWatermark")?.parse().ok()?,
        voters,
        directories,
    })
}

/// One line of `describe --replication`: node id, log end offset, lag, status.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub id: u32,
    pub lag: i64,
    pub status: String,
}

pub fn parse_replication(text: &str) -> Vec<Replica> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // NodeId DirectoryId LogEndOffset Lag LastFetchTimestamp LastCaughtUpTimestamp Status
            let id = cols.first()?.parse().ok()?;
            let status = cols.last()?.to_string();
            let lag = cols.get(cols.len().checked_sub(4)?)?.parse().ok()?;
            Some(Replica { id, lag, status })
        })
        .collect()
}

/// `BrokerApiVersionsCommand`: the registered brokers, id -> (host, rack).
pub fn parse_brokers(text: &str) -> BTreeMap<u32, (String, String)> {
    text.lines()
        .filter_map(|l| {
            let (addr, rest) = l.split_once(" (id: ")?;
            let (id, rest) = rest.split_once(" rack: ")?;
            // 4.x: `rack: r isFenced: false) -> (`; 3.x: `rack: r) -> (`.
            let (rack, _) = rest.split_once(' ')?;
            let rack = rack.trim_end_matches(')');
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            Some((id.parse().ok()?, (host.to_string(), rack.to_string())))
        })
        .collect()
}

/// `TopicCommand --describe`: partition -> (leader, replicas, isr).
pub type Partitions = BTreeMap<u32, (i64, Vec<u32>, Vec<u32>)>;

pub fn parse_topic(text: &str) -> Partitions {
    let ids =
        |s: &str| -> Vec<u32> { s.split(',').filter_map(|i| i.trim().parse().ok()).collect() };
    text.lines()
        .filter_map(|l| {
            let word = |key: &str| {
                let at = l.find(key)? + key.len();
                l[at..].split_whitespace().next()
            };
            let partition = word("Partition: ")?.parse().ok()?;
            let leader = word("Leader: ")?.parse().ok()?;
            Some((
                partition,
                (leader, ids(word("Replicas: ")?), ids(word("Isr: ")?)),
            ))
        })
        .collect()
}

/// The values the verifiable producer's log reports acknowledged
/// (`producer_send_success`), with the time it reported each (ms).
pub fn producer_acks(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter(|l| l.contains("\"name\":\"producer_send_success\""))
        .filter_map(|l| {
            let value = l.split_once("\"value\":\"")?.1.split('"').next()?;
            let ts = l
                .split_once("\"timestamp\":")?
                .1
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            Some((value.to_string(), ts))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tools_answers() {
        let status = "ClusterId:              oUl0u_8RQBym0t93b891HA\n\
            LeaderId:               2\nLeaderEpoch:            3\nHighWatermark:          101\n\
            MaxFollowerLag:         0\nMaxFollowerLagTimeMs:   0\n\
            CurrentVoters:          [{\"id\": 0, \"directoryId\": \"AAAAAAAAAAAAAAAAAAAAAA\", \"endpoints\": [\"CONTROLLER://a:9093\"]}, {\"id\": 2, \"endpoints\": [\"CONTROLLER://b:9093\"]}]\n\
            CurrentObservers:       []\n";
        let s = parse_status(status).unwrap();
        assert_eq!((s.leader, s.epoch), (2, 3));
        assert_eq!(s.voters, BTreeSet::from([0, 2]));
        assert_eq!(s.directories[&0], "AAAAAAAAAAAAAAAAAAAAAA");
        let old =
            "ClusterId: x\nLeaderId: 1\nLeaderEpoch: 1\nHighWatermark: 5\nCurrentVoters: [0,1,2]\n";
        assert_eq!(parse_status(old).unwrap().voters, BTreeSet::from([0, 1, 2]));
        let brokers = "kafka-0.east.kafka-headless.kafka.svc.clusterset.local:9092 (id: 0 rack: us-east-1 isFenced: false) -> (\n\tProduce(0): 0 to 11 [usable: 11],\n";
        assert_eq!(
            parse_brokers(brokers)[&0],
            (
                "kafka-0.east.kafka-headless.kafka.svc.clusterset.local".into(),
                "us-east-1".into()
            )
        );
        let legacy =
            "b-1.c0.h.ns:9092 (id: 1 rack: c0) -> (\n\tProduce(0): 0 to 11 [usable: 11],\n";
        assert_eq!(
            parse_brokers(legacy)[&1],
            ("b-1.c0.h.ns".into(), "c0".into())
        );
        let topic = "Topic: t\tTopicId: x\tPartitionCount: 1\n\tTopic: t\tPartition: 0\tLeader: 3\tReplicas: 3,0,4\tIsr: 3,0\tElr: \tLastKnownElr: \n";
        assert_eq!(parse_topic(topic)[&0], (3, vec![3, 0, 4], vec![3, 0]));
        let acks = "{\"timestamp\":1700000000123,\"name\":\"producer_send_success\",\"key\":null,\"value\":\"1.7\",\"offset\":3,\"topic\":\"t\",\"partition\":0}\n";
        assert_eq!(producer_acks(acks), [("1.7".to_string(), 1700000000123)]);
    }
}
