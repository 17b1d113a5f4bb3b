//! ZooKeeper mode: the stretched ensemble (cp-zookeeper's configuration,
//! `straddle_tests::effective::cp_zookeeper`) run from the ZooKeeper jars
//! Kafka 3.9 ships with, its 4lw `srvr` probes, and the Kafka controller
//! the brokers elect through it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use straddle_tests::netns::{self, Lab};
use straddle_tests::realkafka::{self, QuorumStatus};

use super::ZkServer;
use super::lab::KafkaLab;

/// Where the image's settings are replaced, and why (as the ZooKeeper
/// proof, `tests/zookeeper_ensemble.rs`). Everything else in each server's
/// `zoo.cfg` is what the cp-zookeeper image would write.
const TEST_OVERRIDES: &[(&str, &str)] = &[
    // Speed: the chart's tickTime=2000/initLimit=10 makes every step 4x slower.
    ("tickTime", "500"),
    ("initLimit", "20"),
    ("syncLimit", "5"),
    // Observation only: the 4lw command this test reads, no Jetty.
    ("4lw.commands.whitelist", "srvr"),
    ("admin.enableServer", "false"),
    ("standaloneEnabled", "false"),
];

const JVM_FLAGS: &[&str] = &[
    "-Xmx128m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
];

/// Writes server `z`'s `myid` and `zoo.cfg` into its home.
pub fn write_config(net: &Lab, z: &ZkServer, header: &str) {
    let home = net.home(z.lab_id);
    let data = home.join("zk-data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("myid"), format!("{}\n", z.config.myid)).unwrap();
    let mut lines = z.config.properties.lines.clone();
    for (k, v) in lines.iter_mut() {
        if k == "dataDir" || k == "dataLogDir" {
            *v = data.display().to_string();
        }
    }
    for (key, value) in TEST_OVERRIDES {
        lines.retain(|(k, _)| k != key);
        lines.push((key.to_string(), value.to_string()));
    }
    let mut cfg = format!("# {header}\n");
    for (k, v) in &lines {
        let _ = writeln!(cfg, "{k}={v}");
    }
    fs::write(home.join("zoo.cfg"), cfg).unwrap();
}

/// Starts every server of the ensemble.
pub fn start(lab: &mut KafkaLab) {
    for z in &lab.case.zookeeper {
        let java = lab.jars.java(
            &lab.net,
            z.lab_id,
            JVM_FLAGS,
            &lab.net.dir.join(realkafka::SERVER_LOG4J2),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            &[lab.net.home(z.lab_id).join("zoo.cfg").display().to_string()],
        );
        lab.net.start(z.lab_id, java);
    }
}

/// The 4lw `srvr` answer's mode, asked inside the server's namespace
/// (like `kubectl exec <pod> -- ... localhost:2181`).
fn srvr(net: &Lab, z: &ZkServer) -> String {
    let port: u16 = z
        .config
        .properties
        .get("clientPort")
        .and_then(|p| p.parse().ok())
        .unwrap_or(2181);
    let probe = move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => s,
            Err(e) => return format!("unreachable: {}", e.kind()),
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(1500)));
        let mut reply = String::new();
        if let Err(e) = stream
            .write_all(b"srvr")
            .and_then(|_| stream.read_to_string(&mut reply))
        {
            return format!("unreachable: {}", e.kind());
        }
        if reply.contains("not currently serving requests") {
            return "not serving".into();
        }
        reply
            .lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map_or_else(
                || reply.trim().chars().take(80).collect(),
                |m| m.trim().into(),
            )
    };
    netns::in_netns(&net.ns(z.lab_id), probe)
        .join()
        .unwrap()
        .unwrap_or_else(|e| format!("setns: {e}"))
}

/// The ensemble as the servers of `clusters` see it: Ok when every one
/// serves and exactly one of them leads (a `QuorumStatus` with the
/// leader's myid and the serving servers), else why not.
pub fn side_leader(lab: &KafkaLab, clusters: &[usize]) -> Result<QuorumStatus, String> {
    let side: Vec<&ZkServer> = lab
        .case
        .zookeeper
        .iter()
        .filter(|z| clusters.contains(&z.cluster))
        .collect();
    let modes: Vec<(u32, String)> = std::thread::scope(|s| {
        let runs: Vec<_> = side
            .iter()
            .map(|z| (z.config.myid, s.spawn(|| srvr(&lab.net, z))))
            .collect();
        runs.into_iter()
            .map(|(id, h)| (id, h.join().unwrap()))
            .collect()
    });
    let leaders: Vec<u32> = modes
        .iter()
        .filter(|(_, m)| m == "leader")
        .map(|(id, _)| *id)
        .collect();
    let serving: BTreeSet<u32> = modes
        .iter()
        .filter(|(_, m)| m == "leader" || m == "follower")
        .map(|(id, _)| *id)
        .collect();
    if leaders.len() != 1 || serving.len() != modes.len() {
        return Err(format!("ZooKeeper servers: {modes:?}"));
    }
    Ok(QuorumStatus {
        cluster_id: String::new(),
        leader: leaders[0] as i64,
        epoch: 0,
        high_watermark: 0,
        voters: serving,
        directories: Default::default(),
    })
}

/// The Kafka controller's broker id (`/controller` in ZooKeeper), asked
/// through broker `via`'s `zookeeper.connect`.
pub fn controller(lab: &KafkaLab, via: u32) -> Result<u32, String> {
    let connect = lab
        .case
        .node(via)
        .config
        .properties
        .get("zookeeper.connect")
        .unwrap()
        .to_string();
    let args: Vec<String> = ["-server", &connect, "get", "/controller"]
        .map(String::from)
        .into();
    let (_, out) = lab.tool(via, "org.apache.zookeeper.ZooKeeperMain", &args);
    out.split_once("\"brokerid\":")
        .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .ok_or_else(|| format!("no controller yet: {}", out.trim()))
}
