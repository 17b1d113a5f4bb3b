//! The servers of the ZooKeeper proof in the shared lab
//! (`straddle_tests::netns`): JVMs, 4lw probes, writes and reads, and the
//! expectations of each step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use straddle_tests::effective::ZkConfig;
use straddle_tests::netns;
use straddle_tests::waiting::Reasons;

use super::*;

// ---------------------------------------------------------------------------
// The servers in the lab (`straddle_tests::netns`): JVMs, probes, writes.

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    Leader,
    Follower,
    /// Running, answering, no quorum.
    NotServing,
    Other(String),
    Unreachable(String),
    Exited(String),
}

impl State {
    pub(crate) fn serving(&self) -> bool {
        matches!(self, State::Leader | State::Follower)
    }

    pub(crate) fn short(&self) -> String {
        match self {
            State::Leader => "leader".into(),
            State::Follower => "follower".into(),
            State::NotServing => "not serving".into(),
            State::Other(s) => format!("other: {s}"),
            State::Unreachable(e) => format!("unreachable: {e}"),
            State::Exited(s) => format!("EXITED {s}"),
        }
    }
}

/// The 4lw `srvr` answer on the client port, asked from inside the pod's
/// namespace (like `kubectl exec <pod> -- ... localhost:2181`).
pub(crate) fn srvr(port: u16) -> State {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(s) => s,
        Err(e) => return State::Unreachable(e.kind().to_string()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut reply = String::new();
    if let Err(e) = stream
        .write_all(b"srvr")
        .and_then(|_| stream.read_to_string(&mut reply))
    {
        return State::Unreachable(e.kind().to_string());
    }
    if reply.contains("not currently serving requests") {
        return State::NotServing;
    }
    match reply
        .lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(str::trim)
    {
        Some("leader") => State::Leader,
        Some("follower") => State::Follower,
        Some(other) => State::Other(other.to_string()),
        None => State::Other(reply.trim().chars().take(80).collect()),
    }
}

pub(crate) type Snapshot = BTreeMap<u32, State>;

pub(crate) fn table(case: &Case, snap: &Snapshot) -> String {
    let mut out = String::new();
    for (id, state) in snap {
        let p = case.pod(*id);
        let _ = writeln!(
            out,
            "    id {id:<3} {:<12} {:<28} {}",
            case.cluster_name(p.cluster),
            p.name,
            state.short()
        );
    }
    out
}

pub(crate) static WRITES: AtomicU32 = AtomicU32::new(0);

/// A znode path no write has used yet.
pub(crate) fn fresh(label: &str) -> String {
    format!("/{:03}-{label}", WRITES.fetch_add(1, Ordering::Relaxed))
}

/// `<pod> (id N) in <cluster>`, for messages.
pub(crate) fn who(case: &Case, id: u32) -> String {
    let p = case.pod(id);
    format!("{} (id {id}) in {}", p.name, case.cluster_name(p.cluster))
}

pub(crate) struct Lab<'a> {
    pub(crate) case: &'a Case,
    pub(crate) net: netns::Lab,
    /// Znodes whose creation a server acknowledged: none may ever be lost.
    pub(crate) acked: Vec<String>,
}

impl<'a> Lab<'a> {
    /// The network of every pod of the case (no JVM yet).
    pub(crate) fn new(case: &'a Case) -> Lab<'a> {
        let members = case
            .pods
            .iter()
            .map(|p| netns::Member {
                id: p.id(),
                cluster: p.cluster,
                name: p.name.clone(),
                ip: p.ip,
            })
            .collect();
        let net = netns::Lab::new("zk", case.topo.clusters.len(), members, &case.dns);
        fs::write(
            net.dir.join("log4j.properties"),
            "log4j.rootLogger=INFO, CONSOLE\n\
             log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1}: %m%n\n\
             # one line per 4lw probe otherwise\n\
             log4j.logger.org.apache.zookeeper.server.NIOServerCnxn=WARN\n",
        )
        .unwrap();
        Lab {
            case,
            net,
            acked: Vec::new(),
        }
    }

    /// Starts the JVMs of `ids`, with the image's configuration plus `TEST_OVERRIDES`.
    pub(crate) fn start(&mut self, ids: &[u32]) {
        for &id in ids {
            let config = self.case.pod(id).config.clone();
            self.launch(id, &config);
        }
    }

    /// Starts server `id` with `config` (its data directory is kept across
    /// restarts, as a pod's volume is).
    pub(crate) fn launch(&mut self, id: u32, config: &ZkConfig) {
        let mut classpath = ZK_JAR.to_string();
        for jar in LOG_JARS.iter().filter(|j| Path::new(j).is_file()) {
            classpath.push(':');
            classpath.push_str(jar);
        }
        let pod = self.case.pod(id);
        assert_eq!(
            config.myid, id,
            "{}: {} restarted as another id",
            self.case.spec, pod.name
        );
        let home = self.net.home(id);
        let data = home.join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("myid"), format!("{}\n", config.myid)).unwrap();
        let mut cfg = format!(
            "# {} in {}\n",
            pod.name,
            self.case.cluster_name(pod.cluster)
        );
        let mut lines = config.properties.lines.clone();
        for (key, value) in [("dataDir", &data), ("dataLogDir", &data)] {
            let v = value.display().to_string();
            lines
                .iter_mut()
                .filter(|(k, _)| k == key)
                .for_each(|l| l.1 = v.clone());
        }
        lines.retain(|(k, _)| !TEST_UNAVAILABLE.iter().any(|p| k.starts_with(p)));
        for (key, value) in TEST_OVERRIDES {
            lines.retain(|(k, _)| k != key);
            lines.push((key.to_string(), value.to_string()));
        }
        for (k, v) in &lines {
            let _ = writeln!(cfg, "{k}={v}");
        }
        let cfg_path = home.join("zoo.cfg");
        fs::write(&cfg_path, cfg).unwrap();
        let log4j = format!(
            "-Dlog4j.configuration=file:{}",
            self.net.dir.join("log4j.properties").display()
        );
        let mut java = self.net.command(id, "java");
        java.args(JVM_FLAGS).args([log4j, "-cp".into(), classpath]);
        java.arg("org.apache.zookeeper.server.quorum.QuorumPeerMain");
        java.arg(&cfg_path);
        self.net.start(id, java);
    }

    /// Stops server `id` as the kubelet stops a pod: SIGTERM, then SIGKILL
    /// after a grace period.
    pub(crate) fn stop(&mut self, id: u32) {
        self.net.stop(id, STOP_GRACE);
    }

    /// `<pod> (id N) in <cluster>`, for messages.
    pub(crate) fn who(&self, id: u32) -> String {
        who(self.case, id)
    }

    /// Runs the package's command-line client (`zkCli.sh`'s class) inside
    /// server `id`'s namespace against that server, like `kubectl exec`.
    /// Returns whether it exited 0 within `deadline`, and its output.
    pub(crate) fn client(&self, id: u32, command: &[&str], deadline: Duration) -> (bool, String) {
        let port = self
            .case
            .pod(id)
            .config
            .properties
            .get("clientPort")
            .unwrap_or("2181");
        let mut classpath = ZK_JAR.to_string();
        if Path::new(CLIENT_LOG_JAR).is_file() {
            classpath = format!("{classpath}:{CLIENT_LOG_JAR}");
        }
        let mut args: Vec<String> = JVM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.extend(
            [
                "-cp",
                &classpath,
                "org.apache.zookeeper.ZooKeeperMain",
                "-server",
                &format!("127.0.0.1:{port}"),
            ]
            .map(str::to_string),
        );
        args.extend(command.iter().map(|a| a.to_string()));
        self.net.run(id, "java", &args, deadline)
    }

    /// A real write through server `id`: `create` returns only once the
    /// leader has committed it (acks from a quorum). Retried until
    /// `WRITE_DEADLINE` (a re-election may be under way); an attempt that
    /// finds the node already there means an earlier one committed.
    /// The path joins the acknowledged writes.
    pub(crate) fn write(&mut self, id: u32, path: &str) -> Duration {
        let started = Instant::now();
        let mut last = String::new();
        let mut attempts = 0;
        while started.elapsed() < WRITE_DEADLINE {
            let left = WRITE_DEADLINE.saturating_sub(started.elapsed());
            let (ok, output) = self.client(id, &["create", path, "straddle"], left);
            attempts += 1;
            if ok
                && (output.contains(&format!("Created {path}"))
                    || (attempts > 1 && output.contains("Node already exists")))
            {
                self.acked.push(path.to_string());
                return started.elapsed();
            }
            last = output;
            thread::sleep(POLL);
        }
        panic!(
            "{} / write: {path} through {} was not acknowledged within {WRITE_DEADLINE:?}:\n{last}{}",
            self.case.spec,
            self.who(id),
            self.log_tails()
        );
    }

    /// The top-level znodes server `id` serves (`ls /`).
    pub(crate) fn children(&self, id: u32) -> Result<BTreeSet<String>, String> {
        let (ok, output) = self.client(id, &["ls", "/"], Duration::from_secs(10));
        let list = output
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'));
        match (ok, list) {
            (true, Some(list)) => Ok(list.split(',').map(|c| format!("/{}", c.trim())).collect()),
            _ => Err(format!("`ls /` failed:\n{output}")),
        }
    }

    /// Every acknowledged write must be readable through server `id`
    /// (a follower may lag a moment behind the leader: polled).
    pub(crate) fn expect_acked(&self, id: u32, what: &str) -> Duration {
        let started = Instant::now();
        loop {
            let missing: Vec<&String> = match self.children(id) {
                Ok(seen) => self.acked.iter().filter(|p| !seen.contains(*p)).collect(),
                Err(e) if started.elapsed() > READ_DEADLINE => panic!(
                    "{} / {what}: cannot read through {}: {e}",
                    self.case.spec,
                    self.who(id)
                ),
                Err(_) => {
                    thread::sleep(POLL);
                    continue;
                }
            };
            if missing.is_empty() {
                return started.elapsed();
            }
            if started.elapsed() > READ_DEADLINE {
                panic!(
                    "{} / {what}: acknowledged writes {missing:?} are not readable through {} after {READ_DEADLINE:?} (LOST WRITES)",
                    self.case.spec,
                    self.who(id)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Every acknowledged write is readable in every cluster (through its
    /// first server).
    pub(crate) fn expect_acked_everywhere(&self, what: &str) -> Duration {
        let started = Instant::now();
        for ci in 0..self.case.topo.clusters.len() {
            if let Some(&id) = self.case.ids_in(ci).first() {
                self.expect_acked(id, what);
            }
        }
        started.elapsed()
    }

    /// Reconnects a cut cluster.
    pub(crate) fn restore(&self, cluster: usize) {
        self.net.restore(cluster);
    }

    /// Cuts a whole cluster off (its pods still reach each other).
    pub(crate) fn cut(&self, cluster: usize) {
        self.net.cut(cluster);
    }

    pub(crate) fn snapshot(&mut self) -> Snapshot {
        let mut exited = BTreeMap::new();
        for id in self.net.started() {
            if let Some(status) = self.net.exited(id) {
                exited.insert(id, status);
            }
        }
        let probes: Vec<_> = self
            .net
            .started()
            .into_iter()
            .filter(|id| !exited.contains_key(id))
            .map(|id| {
                let port: u16 = self
                    .case
                    .pod(id)
                    .config
                    .properties
                    .get("clientPort")
                    .unwrap_or("2181")
                    .parse()
                    .unwrap();
                (id, netns::in_netns(&self.net.ns(id), move || srvr(port)))
            })
            .collect();
        let mut snap: Snapshot = probes
            .into_iter()
            .map(|(id, h)| {
                let state = match h.join().unwrap() {
                    Ok(s) => s,
                    Err(e) => State::Unreachable(format!("setns: {e}")),
                };
                (id, state)
            })
            .collect();
        for (id, status) in exited {
            snap.insert(id, State::Exited(status));
        }
        snap
    }

    pub(crate) fn log_tails(&self) -> String {
        self.net.log_tails(8)
    }
    /// Polls until `check` passes, then requires it to keep passing for
    /// `hold`. Returns the time from `since` to the first pass.
    pub(crate) fn wait(
        &mut self,
        what: &str,
        since: Instant,
        deadline: Duration,
        hold: Duration,
        mut check: impl FnMut(&Snapshot) -> Result<(), String>,
    ) -> Duration {
        let mut reasons = Reasons::default();
        let reached = loop {
            let snap = self.snapshot();
            match check(&snap) {
                Ok(()) => break since.elapsed(),
                Err(why) if since.elapsed() > deadline => {
                    reasons.note(since.elapsed(), why);
                    let headline = format!(
                        "{} / {what}: not reached within {deadline:?}",
                        self.case.spec
                    );
                    let context = format!("{}{}", table(self.case, &snap), self.log_tails());
                    panic!("{}", reasons.report(&headline, &context))
                }
                Err(why) => {
                    reasons.note(since.elapsed(), why);
                    thread::sleep(POLL);
                }
            }
        };
        let held = Instant::now();
        while held.elapsed() < hold {
            thread::sleep(POLL);
            let snap = self.snapshot();
            if let Err(why) = check(&snap) {
                panic!(
                    "{} / {what}: reached after {reached:.1?} but did not hold: {why}\n{}{}",
                    self.case.spec,
                    table(self.case, &snap),
                    self.log_tails()
                );
            }
        }
        reached
    }

    pub(crate) fn leader(&mut self) -> u32 {
        let snap = self.snapshot();
        let leaders: Vec<u32> = snap
            .iter()
            .filter(|(_, s)| **s == State::Leader)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            leaders.len(),
            1,
            "{}: expected one leader:\n{}",
            self.case.spec,
            table(self.case, &snap)
        );
        leaders[0]
    }
}

// ---------------------------------------------------------------------------
// Expectations.

/// One side of a cut: when `serving`, every server answers leader/follower
/// and exactly one leads; otherwise every server answers "not serving".
pub(crate) fn side(case: &Case, snap: &Snapshot, ids: &[u32], serving: bool) -> Result<(), String> {
    for id in ids {
        let state = snap
            .get(id)
            .cloned()
            .unwrap_or(State::Other("not probed".into()));
        let ok = if serving {
            state.serving()
        } else {
            state == State::NotServing
        };
        if !ok {
            let want = if serving { "serving" } else { "not serving" };
            return Err(format!(
                "server {} is {}, expected {want}",
                who(case, *id),
                state.short()
            ));
        }
    }
    let leaders = ids
        .iter()
        .filter(|id| snap.get(id) == Some(&State::Leader))
        .count();
    if serving && leaders != 1 {
        return Err(format!(
            "{leaders} leaders among {}, expected exactly one",
            ids.iter()
                .map(|id| who(case, *id))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// What a set of servers is observed doing, in `verdict` words.
pub(crate) fn observed(lab: &mut Lab, ids: &[u32]) -> &'static str {
    let snap = lab.snapshot();
    verdict(side(lab.case, &snap, ids, true).is_ok())
}

pub(crate) fn verdict(serving: bool) -> &'static str {
    if serving {
        "keeps quorum"
    } else {
        "LOSES QUORUM"
    }
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<String>,
}

impl Report {
    pub(crate) fn row(
        &mut self,
        spec: &str,
        event: &str,
        straddle: &str,
        real: &str,
        details: String,
    ) {
        let row = format!("{spec:<34} {event:<30} {straddle:<14} {real:<14} {details}");
        eprintln!("  {row}");
        self.rows.push(row);
    }
}

/// Starts `ids` and waits until they serve (or not) as `serving` says.
/// Returns (all JVMs answering 4lw, state reached), both from the start.
pub(crate) fn form(lab: &mut Lab, ids: &[u32], serving: bool, what: &str) -> (Duration, Duration) {
    let case = lab.case;
    let t0 = Instant::now();
    lab.start(ids);
    let mut listening = None;
    let formed = lab.wait(
        what,
        t0,
        FORMATION_DEADLINE,
        Duration::from_millis(500),
        |s| {
            if listening.is_none() && ids.iter().all(|id| !matches!(s[id], State::Unreachable(_))) {
                listening = Some(t0.elapsed());
            }
            side(case, s, ids, serving)
        },
    );
    (listening.unwrap_or(formed), formed)
}

/// Sides of a cut and what the analysis says each does.
pub(crate) struct Cut {
    pub(crate) cluster: usize,
    pub(crate) survivors: Vec<u32>,
    pub(crate) isolated: Vec<u32>,
    pub(crate) keeps: bool,
    pub(crate) isolated_serves: bool,
}

impl Cut {
    pub(crate) fn new(case: &Case, cluster: usize) -> Cut {
        let keeps = case.survivability.cluster_losses[cluster].keeps_quorum;
        assert_eq!(keeps, case.quorum.has_quorum(|v| v.cluster != cluster));
        Cut {
            cluster,
            survivors: case
                .pods
                .iter()
                .filter(|p| p.cluster != cluster)
                .map(Pod::id)
                .collect(),
            isolated: case.ids_in(cluster),
            keeps,
            isolated_serves: case.quorum.has_quorum(|v| v.cluster == cluster),
        }
    }

    /// Cuts, waits for the side(s) without quorum to stop serving, then for
    /// both sides to be as analysed (and to stay so); writes through a
    /// serving side. Returns the report details.
    pub(crate) fn run(&self, lab: &mut Lab, extra: &dyn Fn(&Snapshot)) -> String {
        let case = lab.case;
        let before = lab.leader();
        let losing: Vec<u32> = [
            (!self.keeps, &self.survivors),
            (!self.isolated_serves, &self.isolated),
        ]
        .into_iter()
        .filter(|(lost, _)| *lost)
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
        let mut interrupted = false;
        let mut track = |s: &Snapshot| {
            extra(s);
            interrupted |= self.keeps && self.survivors.iter().any(|id| !s[id].serving());
        };
        let t_cut = Instant::now();
        lab.cut(self.cluster);
        let detected = lab.wait(
            "loss detection",
            t_cut,
            LOSS_DEADLINE,
            Duration::ZERO,
            |s| {
                track(s);
                side(case, s, &losing, false)
            },
        );
        let settled = lab.wait("state after the cut", t_cut, LOSS_DEADLINE, HOLD, |s| {
            track(s);
            side(case, s, &self.survivors, self.keeps)?;
            side(case, s, &self.isolated, self.isolated_serves)
        });
        let mut details = format!(
            "leader before: id {before} ({}); side(s) without quorum stopped serving {detected:.1?} after the cut, settled {settled:.1?}",
            case.cluster_name(case.pod(before).cluster)
        );
        for (serves, ids, name) in [
            (self.keeps, &self.survivors, "survivors"),
            (self.isolated_serves, &self.isolated, "cut-off side"),
        ] {
            if !serves {
                continue;
            }
            let snap = lab.snapshot();
            let leader = *ids.iter().find(|id| snap[*id] == State::Leader).unwrap();
            let via = ids
                .iter()
                .copied()
                .find(|id| snap[id] == State::Follower)
                .unwrap_or(leader);
            let path = fresh(&format!(
                "during-cut-of-{}",
                case.cluster_name(self.cluster)
            ));
            let took = lab.write(via, &path);
            let _ = write!(
                details,
                "; {name}: leader id {leader}{}, write via id {via} committed in {took:.1?}",
                if name == "survivors" && interrupted {
                    " (re-elected)"
                } else {
                    ""
                }
            );
        }
        details
    }
}
