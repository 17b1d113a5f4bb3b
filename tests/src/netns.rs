//! The network-namespace lab the real-server proofs run in (ZooKeeper in
//! `tests/zookeeper_ensemble.rs`, Kafka in `tests/kafka_cluster.rs`).
//!
//! Every pod gets its own network namespace (as in Kubernetes), with an
//! `/etc/netns/<ns>/hosts` holding its cluster's DNS view ([`crate::dns`])
//! and a `resolv.conf` that points at a dead address, so any other name
//! fails at once. The pods of one cluster share a bridge; the cluster
//! bridges meet on a core bridge through one uplink each. All of it lives in
//! namespaces the lab creates: nothing is added to the host's network
//! namespace and no packet can leave. Cutting a cluster sets its uplink down
//! (packets are dropped, no resets: like a real outage); its pods still see
//! each other. Servers run as [`Process`]es inside their pod's namespace
//! (`ip netns exec`); everything is undone on drop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::dns::View;
use crate::process::{Process, tail};

/// A dedicated test subnet; it exists only on the bridges of a lab.
const SUBNET: [u8; 3] = [10, 250, 77];
const FIRST_HOST: u8 = 11;

/// The address of the `index`-th pod of a lab (at most 240 pods).
pub fn address(index: usize) -> Ipv4Addr {
    let host = u8::try_from(index + FIRST_HOST as usize).expect("at most 240 pods in a lab");
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host)
}

/// One pod of the lab: `id` names its namespace (ZooKeeper's myid, Kafka's
/// node id), `name` is its hostname.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: u32,
    pub cluster: usize,
    pub name: String,
    pub ip: Ipv4Addr,
}

/// Runs `f` on a new thread that has joined the network namespace `ns`
/// (`setns` changes the calling thread only).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<std::io::Result<T>> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path)?;
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))?;
        Ok(f())
    })
}

/// `tool` is an executable on `PATH`.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Why this machine cannot run a lab, if it cannot (root, `ip`, `tools`,
/// a namespace can be made).
pub fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces need root)".into());
    }
    for tool in ["ip"].iter().chain(tools) {
        if !on_path(tool) {
            return Some(format!("`{tool}` is not on PATH"));
        }
    }
    let probe = format!("stz{}-probe", std::process::id());
    if ip_ok(&["netns", "add", &probe]).is_err() {
        return Some("cannot create network namespaces (`ip netns add` failed)".into());
    }
    let _ = ip_ok(&["netns", "del", &probe]);
    None
}

pub fn ip_ok(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) {
    ip_ok(args).unwrap_or_else(|e| panic!("{e}"));
}

static LABS: AtomicU32 = AtomicU32::new(0);
static RUNS: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    /// `stz<pid>-<n>`: namespace names start with it.
    prefix: String,
    switch: String,
    /// Per pod `<dir>/<ns>/`: its configuration, data and logs.
    pub dir: PathBuf,
    pub members: Vec<Member>,
    /// Created, in order (switch first): deleted in reverse.
    namespaces: Vec<String>,
    /// Links of the switch namespace (veths: deleting one end takes both).
    links: Vec<String>,
    etc_dirs: Vec<PathBuf>,
    servers: BTreeMap<u32, Process>,
}

impl Lab {
    /// The network of `members` in `clusters` clusters, each pod seeing its
    /// cluster's `dns` view. `tag` names the directory.
    pub fn new(tag: &str, clusters: usize, members: Vec<Member>, dns: &[View]) -> Lab {
        let prefix = format!(
            "stz{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("straddle-{tag}-{prefix}"));
        let mut lab = Lab {
            switch: format!("{prefix}-sw"),
            prefix,
            dir,
            members,
            namespaces: Vec::new(),
            links: Vec::new(),
            etc_dirs: Vec::new(),
            servers: BTreeMap::new(),
        };
        lab.build(clusters, dns);
        lab
    }

    pub fn ns(&self, id: u32) -> String {
        format!("{}-{id}", self.prefix)
    }

    /// The pod's own directory (its volume and logs).
    pub fn home(&self, id: u32) -> PathBuf {
        self.dir.join(self.ns(id))
    }

    pub fn member(&self, id: u32) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no pod with id {id} in the lab"))
    }

    fn build(&mut self, clusters: usize, dns: &[View]) {
        let _ = fs::remove_dir_all(&self.dir);
        fs::create_dir_all(&self.dir).unwrap();
        let sw = self.switch.clone();
        ip(&["netns", "add", &sw]);
        self.namespaces.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "core", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "core", "up"]);
        for ci in 0..clusters {
            let (bridge, up, down) = (format!("c{ci}"), format!("u{ci}"), format!("d{ci}"));
            ip(&["-n", &sw, "link", "add", &bridge, "type", "bridge"]);
            self.links.push(bridge.clone());
            ip(&[
                "-n", &sw, "link", "add", &up, "type", "veth", "peer", "name", &down,
            ]);
            self.links.push(up.clone());
            ip(&["-n", &sw, "link", "set", &up, "master", &bridge, "up"]);
            ip(&["-n", &sw, "link", "set", &down, "master", "core", "up"]);
            ip(&["-n", &sw, "link", "set", &bridge, "up"]);
        }
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string();
        for p in self.members.clone() {
            let ns = self.ns(p.id);
            ip(&["netns", "add", &ns]);
            self.namespaces.push(ns.clone());
            fs::create_dir_all(self.home(p.id)).unwrap();

            // The cluster's DNS view; the dead resolver makes any other name fail at once.
            let etc = Path::new("/etc/netns").join(&ns);
            fs::create_dir_all(&etc).unwrap();
            self.etc_dirs.push(etc.clone());
            let mut hosts = format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{} {hostname}\n",
                p.ip, p.name
            );
            for (name, addr) in &dns[p.cluster] {
                let _ = writeln!(hosts, "{addr}\t{name}");
            }
            fs::write(etc.join("hosts"), hosts).unwrap();
            fs::write(
                etc.join("resolv.conf"),
                "# nothing listens here: unknown names fail at once, no query leaves\n\
                 nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
            )
            .unwrap();

            let veth = format!("s{}", p.id);
            ip(&[
                "-n", &sw, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            self.links.push(veth.clone());
            let bridge = format!("c{}", p.cluster);
            ip(&["-n", &sw, "link", "set", &veth, "master", &bridge, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", p.ip),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);

            // A connection to a silent peer gives up after ~13 s of retransmissions
            // instead of ~15 min (the default 15): heals take seconds, not minutes.
            let retries = in_netns(&ns, || {
                fs::write("/proc/sys/net/ipv4/tcp_retries2", "5")?;
                fs::read_to_string("/proc/sys/net/ipv4/tcp_retries2")
            })
            .join()
            .unwrap();
            assert_eq!(
                retries
                    .and_then(|r| r)
                    .map(|s| s.trim().to_string())
                    .ok()
                    .as_deref(),
                Some("5"),
                "{ns}: could not set net.ipv4.tcp_retries2"
            );
        }
    }

    /// `program` run inside pod `id`'s namespace (`ip netns exec` execs it
    /// in place, so the child is the program).
    pub fn command(&self, id: u32, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(id), program]);
        cmd
    }

    /// Starts pod `id`'s server (`command`), its output appended to
    /// `<home>/server.log`. A server already running is an error.
    pub fn start(&mut self, id: u32, command: Command) {
        assert!(
            !self.servers.contains_key(&id),
            "pod {id} is already running"
        );
        let log = self.home(id).join("server.log");
        let name = self.member(id).name.clone();
        let process = Process::spawn(&name, command, &log)
            .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
        self.servers.insert(id, process);
    }

    /// Stops pod `id`'s server as the kubelet stops a pod: SIGTERM, then
    /// SIGKILL after `grace`.
    pub fn stop(&mut self, id: u32, grace: Duration) {
        if let Some(mut p) = self.servers.remove(&id) {
            p.stop(grace);
        }
    }

    /// The ids of the servers started (running or exited).
    pub fn started(&self) -> Vec<u32> {
        self.servers.keys().copied().collect()
    }

    /// How pod `id`'s server exited, once it has.
    pub fn exited(&mut self, id: u32) -> Option<String> {
        self.servers
            .get_mut(&id)
            .and_then(Process::exited)
            .map(|s| s.to_string())
    }

    /// Runs `program args` inside pod `id`'s namespace (like `kubectl
    /// exec`), output to a fresh file under its home. Returns whether it
    /// exited 0 within `deadline` (killed otherwise), and its output.
    pub fn run(
        &self,
        id: u32,
        program: &str,
        args: &[String],
        deadline: Duration,
    ) -> (bool, String) {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let out = self.home(id).join(format!("run-{n}.log"));
        let mut cmd = self.command(id, program);
        cmd.args(args);
        let started = Instant::now();
        let mut process = match Process::spawn(&format!("{program} in {}", self.ns(id)), cmd, &out)
        {
            Ok(p) => p,
            Err(e) => return (false, format!("{e:#}")),
        };
        let ok = loop {
            if let Some(status) = process.exited() {
                break status.success();
            }
            if started.elapsed() > deadline {
                process.stop(Duration::ZERO);
                break false;
            }
            thread::sleep(Duration::from_millis(50));
        };
        drop(process);
        let text = fs::read_to_string(&out).unwrap_or_default();
        let _ = fs::remove_file(&out);
        (ok, text)
    }

    /// Cuts a whole cluster off (its pods still reach each other).
    pub fn cut(&self, cluster: usize) {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &format!("d{cluster}"),
            "down",
        ]);
    }

    /// Reconnects a cut cluster.
    pub fn restore(&self, cluster: usize) {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &format!("d{cluster}"),
            "up",
        ]);
    }

    /// The last `lines` lines of every started server's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for &id in self.servers.keys() {
            let path = self.home(id).join("server.log");
            let text = tail(&path, 64 * 1024);
            let all: Vec<&str> = text.lines().collect();
            let _ = writeln!(out, "  --- {} (last lines)", path.display());
            for l in &all[all.len().saturating_sub(lines)..] {
                let _ = writeln!(out, "    {l}");
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        for p in self.servers.values_mut() {
            p.stop(Duration::ZERO);
        }
        self.servers.clear();
        for link in self.links.iter().rev() {
            if let Err(e) = ip_ok(&["-n", &self.switch, "link", "del", link]) {
                problems.push(e);
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip_ok(&["netns", "del", ns]) {
                problems.push(e);
            }
            if Path::new("/run/netns").join(ns).exists() {
                problems.push(format!("namespace {ns} still exists"));
            }
        }
        for dir in &self.etc_dirs {
            if let Err(e) = fs::remove_dir_all(dir) {
                problems.push(format!("{}: {e}", dir.display()));
            }
        }
        if thread::panicking() || std::env::var_os("STRADDLE_LAB_KEEP_LOGS").is_some() {
            eprintln!("server configs and logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
        for p in problems {
            eprintln!("cleanup of {}: {p}", self.prefix);
        }
    }
}
