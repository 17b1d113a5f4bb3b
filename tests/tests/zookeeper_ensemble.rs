//! Straddle's survivability claims, proven on real ZooKeeper 3.8 servers.
//!
//! For each spec: compile it in-process (as `golden.rs` does), run the wasm
//! policy over the real cp-helm-charts output for every cluster, derive each
//! pod's effective ZooKeeper configuration the way the cp-zookeeper image
//! would ([`effective_config`]), and run one real `QuorumPeerMain` per pod.
//!
//! Every pod gets its own network namespace (as in Kubernetes; the chart's
//! command makes each server bind `0.0.0.0`), with an `/etc/netns/<ns>/hosts`
//! holding its cluster's DNS view ([`dns_views`]) and a `resolv.conf` that
//! points at a dead address. The pods of one cluster share a bridge; the
//! cluster bridges meet on a core bridge through one uplink each. All of it
//! lives in namespaces this test creates: nothing is added to the host's
//! network namespace and no packet can leave. Cutting a cluster sets its
//! uplink down (packets are dropped, no resets: like a real outage); its pods
//! still see each other.
//!
//! The outcome after each cut is compared with `straddle_compiler::quorum`
//! on both sides of the cut, and with the expected literal outcome.
//!
//! Needs root, `ip` (iproute2), `java` and Debian's `zookeeper` package.
//! Without them it prints why and passes, unless `STRADDLE_REQUIRE_REAL_ZK=1`
//! (CI), which turns a skip into a failure. `--nocapture` shows the timings.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_int, c_ulong};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use straddle_compiler::quorum::{self, Quorum, Survivability};
use straddle_compiler::spec::QuorumType;
use straddle_compiler::topology::Topology;
use straddle_compiler::{check, compile, manifest, preview, render};
use straddle_policy::Operation;
use straddle_policy_host::{Runtime, RuntimeConfig};

const FIXTURE: &str = "fixtures/charts/cp-zk-kafka-only/rendered.yaml";
/// The cp-zookeeper StatefulSet and container of release `confluent`.
const ZK_STATEFULSET: &str = "confluent-cp-zookeeper";
const ZK_CONTAINER: &str = "cp-zookeeper-server";

const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Logging binding for the server (optional: without it the logs are empty).
const LOG_JARS: &[&str] = &[
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
];
/// Quiet logging for the command-line client.
const CLIENT_LOG_JAR: &str = "/usr/share/java/slf4j-nop.jar";
const JVM_FLAGS: &[&str] = &[
    "-Xmx128m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    // No /tmp/hsperfdata_<user>/<pid> left behind by killed JVMs.
    "-XX:-UsePerfData",
];

/// Where the image's settings are replaced, and why. Everything else in each
/// server's `zoo.cfg` is what the image would write.
const TEST_OVERRIDES: &[(&str, &str)] = &[
    // Speed: the chart's tickTime=2000/initLimit=10 makes every step 4x slower.
    ("tickTime", "500"),
    ("initLimit", "20"),
    ("syncLimit", "5"),
    // Observation only: the 4lw commands this test reads, no Jetty.
    ("4lw.commands.whitelist", "srvr,mntr,ruok,stat"),
    ("admin.enableServer", "false"),
    ("standaloneEnabled", "false"),
];

/// A dedicated test subnet; it exists only on the bridges of this test.
const SUBNET: [u8; 3] = [10, 250, 77];
const FIRST_HOST: u8 = 11;

const POLL: Duration = Duration::from_millis(100);
const FORMATION_DEADLINE: Duration = Duration::from_secs(30);
const LOSS_DEADLINE: Duration = Duration::from_secs(20);
/// A reached state must hold this long (no flapping, no late recovery).
const HOLD: Duration = Duration::from_millis(1500);
const WRITE_DEADLINE: Duration = Duration::from_secs(20);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

// ---------------------------------------------------------------------------
// libc: the three calls std does not wrap (std links libc on Linux anyway).

unsafe extern "C" {
    safe fn geteuid() -> u32;
    fn setns(fd: c_int, nstype: c_int) -> c_int;
    fn prctl(option: c_int, ...) -> c_int;
}
const CLONE_NEWNET: c_int = 0x4000_0000;
const PR_SET_PDEATHSIG: c_int = 1;
const SIGKILL: c_ulong = 9;

/// Runs `f` on a new thread that has joined the network namespace `ns`
/// (`setns` changes the calling thread only).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<std::io::Result<T>> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path)?;
        // SAFETY: a valid namespace fd for the duration of the call; affects this thread only.
        if unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    })
}

// ---------------------------------------------------------------------------
// Prerequisites.

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if geteuid() != 0 {
        return Some("not root (network namespaces need root)".into());
    }
    for tool in ["ip", "java", "bash", "sed"] {
        if !on_path(tool) {
            return Some(format!("`{tool}` is not on PATH"));
        }
    }
    if !Path::new(ZK_JAR).is_file() {
        return Some(format!(
            "{ZK_JAR} is missing (install Debian's `zookeeper` package)"
        ));
    }
    let probe = format!("stz{}-probe", std::process::id());
    let created = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !created {
        return Some("cannot create network namespaces (`ip netns add` failed)".into());
    }
    let _ = ip_ok(&["netns", "del", &probe]);
    None
}

// ---------------------------------------------------------------------------
// The cp-zookeeper image, modelled.

/// What the cp-zookeeper image writes for one pod: `myid` and the lines of
/// `zookeeper.properties`, in the template's order.
#[derive(Debug, Clone)]
struct ZkConfig {
    myid: u32,
    lines: Vec<(String, String)>,
}

impl ZkConfig {
    fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `<prefix>.<n>=<value>` lines by `n` (server, group, weight).
    fn indexed(&self, prefix: &str) -> BTreeMap<u32, String> {
        self.lines
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(prefix)?.strip_prefix('.')?.parse().ok()?;
                Some((n, v.clone()))
            })
            .collect()
    }
}

/// `ZOOKEEPER_*` env -> property, from the image's template (the subset of
/// its `other_props` table this test can meet; an unknown `ZOOKEEPER_*`
/// variable fails the test rather than being silently dropped).
const IMAGE_PROPS: &[(&str, &str)] = &[
    ("ZOOKEEPER_CLIENT_PORT", "clientPort"),
    ("ZOOKEEPER_TICK_TIME", "tickTime"),
    ("ZOOKEEPER_MAX_CLIENT_CNXNS", "maxClientCnxns"),
    ("ZOOKEEPER_CLIENT_PORT_ADDRESS", "clientPortAddress"),
    ("ZOOKEEPER_MIN_SESSION_TIMEOUT", "minSessionTimeout"),
    ("ZOOKEEPER_MAX_SESSION_TIMEOUT", "maxSessionTimeout"),
    (
        "ZOOKEEPER_AUTOPURGE_SNAP_RETAIN_COUNT",
        "autopurge.snapRetainCount",
    ),
    (
        "ZOOKEEPER_AUTOPURGE_PURGE_INTERVAL",
        "autopurge.purgeInterval",
    ),
    ("ZOOKEEPER_ELECTION_ALG", "electionAlg"),
    ("ZOOKEEPER_INIT_LIMIT", "initLimit"),
    ("ZOOKEEPER_LEADER_SERVES", "leaderServes"),
    ("ZOOKEEPER_SYNC_LIMIT", "syncLimit"),
    ("ZOOKEEPER_CNX_TIMEOUT", "cnxTimeout"),
    ("ZOOKEEPER_QUORUM_LISTEN_ON_ALL_IPS", "quorumListenOnAllIPs"),
    ("ZOOKEEPER_TCP_KEEP_ALIVE", "tcpKeepAlive"),
    ("ZOOKEEPER_ADMIN_ENABLE_SERVER", "admin.enableServer"),
];
/// Read by the image outside `IMAGE_PROPS` (or only by the chart's command).
const IMAGE_LISTS: &[&str] = &[
    "ZOOKEEPER_SERVERS",
    "ZOOKEEPER_SERVER_ID",
    "ZOOKEEPER_GROUPS",
    "ZOOKEEPER_WEIGHTS",
];

/// The effective ZooKeeper configuration of pod `<sts>-<ordinal>` of a
/// (mutated) cp-zookeeper StatefulSet: the model of what Kubernetes, the
/// chart's container command and the cp-zookeeper image do with it.
///
/// 1. Kubernetes builds the container's environment: literal `value`s,
///    `fieldRef` `metadata.name`/`metadata.namespace`, and `HOSTNAME` = the
///    pod name (StatefulSet pods are named `<sts>-<ordinal>`).
/// 2. The chart's command (cp-helm-charts
///    `charts/cp-zookeeper/templates/statefulset.yaml`) is `bash -c` of
///
///    ```text
///    ZK_FIX_HOST_REGEX="s/${HOSTNAME}\.[^:]*:/0.0.0.0:/g"
///    ZOOKEEPER_SERVER_ID=$((${HOSTNAME##*-}+1)) \
///    ZOOKEEPER_SERVERS=`echo $ZOOKEEPER_SERVERS | sed -e "$ZK_FIX_HOST_REGEX"` \
///    /etc/confluent/docker/run
///    ```
///
///    so the pod's own entry becomes `0.0.0.0:<ports>` and the id is
///    ordinal + 1. Rather than re-implement that, the object's own command
///    is run by a real bash and sed, with the image entrypoint
///    `/etc/confluent/docker/run` replaced by `env -0` to capture exactly
///    what the entrypoint would receive.
/// 3. The image (confluentinc/kafka-images
///    `zookeeper/include/etc/confluent/docker/configure`, `myid.template`,
///    `zookeeper.properties.template`, same at v6.1.0 and v7.9.0): `myid` =
///    `ZOOKEEPER_SERVER_ID`; `initLimit`/`syncLimit` default to 10/5 when
///    `ZOOKEEPER_SERVERS` is set; `dataDir`/`dataLogDir`; the mapped
///    `ZOOKEEPER_*` properties; then `ZOOKEEPER_SERVERS`, `ZOOKEEPER_GROUPS`
///    and `ZOOKEEPER_WEIGHTS` each split on `;` into `server.<i>`,
///    `group.<i>` and `weight.<i>`, `<i>` being the 1-based position.
fn effective_config(sts: &Value, namespace: &str, ordinal: u32) -> ZkConfig {
    let name = sts["metadata"]["name"].as_str().unwrap();
    let pod = format!("{name}-{ordinal}");
    let container = sts["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == ZK_CONTAINER)
        .unwrap_or_else(|| panic!("{name}: no container {ZK_CONTAINER}"));

    // 1. The container environment.
    let mut env = BTreeMap::new();
    env.insert("HOSTNAME".to_string(), pod.clone());
    for e in container["env"].as_array().into_iter().flatten() {
        let var = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else {
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.clone(),
                Some("metadata.namespace") => namespace.to_string(),
                _ => panic!("{pod}: env {var} has a source this model does not know: {e}"),
            }
        };
        env.insert(var, value);
    }

    // 2. The chart's command, run for real.
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap_or_else(|| panic!("{pod}: no command"))
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        command.len() == 3 && command[0] == "bash" && command[1] == "-c",
        "{pod}: the command is no longer `bash -c <script>`: {command:?}"
    );
    assert!(container.get("args").is_none(), "{pod}: unexpected args");
    const ENTRYPOINT: &str = "/etc/confluent/docker/run";
    assert_eq!(
        command[2].matches(ENTRYPOINT).count(),
        1,
        "{pod}: the command must run {ENTRYPOINT} once"
    );
    let script = command[2].replace(ENTRYPOINT, "env -0");
    let out = Command::new(command[0])
        .args(&command[1..2])
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(&env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{pod}: the chart's command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: BTreeMap<String, String> = String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    // 3. The image's `configure` and templates.
    let var = |k: &str| seen.get(k).filter(|v| !v.is_empty()).cloned();
    for k in seen.keys().filter(|k| k.starts_with("ZOOKEEPER_")) {
        assert!(
            IMAGE_LISTS.contains(&k.as_str()) || IMAGE_PROPS.iter().any(|(e, _)| e == k),
            "{pod}: env {k} is not in this model of the image; add it from the template"
        );
    }
    let myid: u32 = var("ZOOKEEPER_SERVER_ID")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{pod}: no numeric ZOOKEEPER_SERVER_ID after the command"));
    let mut lines = vec![
        ("dataDir".to_string(), "/var/lib/zookeeper/data".to_string()),
        (
            "dataLogDir".to_string(),
            "/var/lib/zookeeper/log".to_string(),
        ),
    ];
    let clustered = var("ZOOKEEPER_SERVERS").is_some();
    for (env_var, property) in IMAGE_PROPS {
        // `configure`: `export ZOOKEEPER_INIT_LIMIT=${ZOOKEEPER_INIT_LIMIT:-"10"}` (same for
        // SYNC, 5) when clustered; the template writes any other variable that is set.
        let value = match *env_var {
            "ZOOKEEPER_INIT_LIMIT" if clustered => var(env_var).or(Some("10".into())),
            "ZOOKEEPER_SYNC_LIMIT" if clustered => var(env_var).or(Some("5".into())),
            _ => seen.get(*env_var).cloned(),
        };
        if let Some(v) = value {
            lines.push((property.to_string(), v));
        }
    }
    for (env_var, prefix) in [
        ("ZOOKEEPER_SERVERS", "server"),
        ("ZOOKEEPER_GROUPS", "group"),
        ("ZOOKEEPER_WEIGHTS", "weight"),
    ] {
        if let Some(list) = var(env_var) {
            for (i, item) in list.split(';').enumerate() {
                lines.push((format!("{prefix}.{}", i + 1), item.to_string()));
            }
        }
    }
    ZkConfig { myid, lines }
}

// ---------------------------------------------------------------------------
// A compiled spec, as the pods will see it.

#[derive(Debug)]
struct Pod {
    cluster: usize,
    name: String,
    ip: Ipv4Addr,
    config: ZkConfig,
}

impl Pod {
    fn id(&self) -> u32 {
        self.config.myid
    }
}

struct Case {
    spec: &'static str,
    topo: Topology,
    quorum: Quorum,
    survivability: Survivability,
    /// Every ZooKeeper pod of every cluster, by id.
    pods: Vec<Pod>,
    /// Per cluster: what its DNS answers (name -> pod IP).
    dns: Vec<BTreeMap<String, Ipv4Addr>>,
}

impl Case {
    fn load(runtime: &Runtime, spec: &'static str) -> Case {
        let text = fs::read_to_string(root().join(spec)).unwrap();
        let checked = check(spec, &text).unwrap_or_else(|r| panic!("{spec}:\n{r}"));
        let topo = checked.topology;
        let module = compile::module(&topo).unwrap();
        let policy = runtime.load(&module).unwrap();
        let docs = manifest::parse(&fs::read_to_string(root().join(FIXTURE)).unwrap()).unwrap();
        let namespaces = topo.namespaces();
        let default_ns = namespaces.first().map(String::as_str);

        let mut pods = Vec::new();
        let mut headless = Vec::new();
        for (ci, cluster) in topo.clusters.iter().enumerate() {
            let out = preview::run(&docs, &cluster.name, default_ns, Operation::Create, |r| {
                policy.review(r)
            })
            .unwrap();
            let o = out
                .iter()
                .find(|o| {
                    o.after["kind"] == "StatefulSet"
                        && o.after["metadata"]["name"] == ZK_STATEFULSET
                })
                .unwrap_or_else(|| panic!("{spec} {}: no {ZK_STATEFULSET}", cluster.name));
            assert!(
                o.denial().is_none(),
                "{spec} {}: denied: {:?}",
                cluster.name,
                o.verdict
            );
            let sts = &o.after;
            let replicas = sts["spec"]["replicas"].as_u64().unwrap() as u32;
            let start = sts["spec"]["ordinals"]["start"].as_u64().unwrap_or(0) as u32;
            for ordinal in start..start + replicas {
                pods.push(Pod {
                    cluster: ci,
                    name: format!("{ZK_STATEFULSET}-{ordinal}"),
                    ip: Ipv4Addr::UNSPECIFIED,
                    config: effective_config(sts, &o.namespace, ordinal),
                });
            }
            headless.push((
                o.namespace.clone(),
                sts["spec"]["serviceName"].as_str().unwrap().to_string(),
            ));
        }
        pods.sort_by_key(Pod::id);
        for (i, p) in pods.iter_mut().enumerate() {
            p.ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], FIRST_HOST + i as u8);
        }
        let dns = dns_views(&topo, &pods, &headless);

        let quorum = quorum::quorums(&topo)
            .into_iter()
            .find(|q| q.name == "zookeeper")
            .expect("the spec has a ZooKeeper quorum");
        let survivability = quorum::analyse(&topo, &quorum);
        let case = Case {
            spec,
            topo,
            quorum,
            survivability,
            pods,
            dns,
        };
        case.check_configs();
        case
    }

    fn ids(&self) -> Vec<u32> {
        self.pods.iter().map(Pod::id).collect()
    }

    fn ids_in(&self, cluster: usize) -> Vec<u32> {
        self.pods
            .iter()
            .filter(|p| p.cluster == cluster)
            .map(Pod::id)
            .collect()
    }

    fn pod(&self, id: u32) -> &Pod {
        self.pods.iter().find(|p| p.id() == id).unwrap()
    }

    fn cluster_name(&self, ci: usize) -> &str {
        &self.topo.clusters[ci].name
    }

    fn losses(&self) -> Vec<(&str, bool)> {
        self.survivability
            .cluster_losses
            .iter()
            .map(|l| (l.cluster.as_str(), l.keeps_quorum))
            .collect()
    }

    /// What the pods are configured with must be what the analysis reasons
    /// about: the same servers, clusters, groups and weights; every pod's own
    /// entry rewritten to `0.0.0.0`, and only that one; every other name
    /// resolvable in the pod's cluster.
    fn check_configs(&self) {
        let spec = self.spec;
        let voters: BTreeMap<u32, _> = self.quorum.voters.iter().map(|v| (v.id, v)).collect();
        let ids: BTreeSet<u32> = self.ids().into_iter().collect();
        assert_eq!(ids.len(), self.pods.len(), "{spec}: two pods share a myid");
        assert_eq!(
            ids,
            voters.keys().copied().collect(),
            "{spec}: the pods' myids are not the analysed voters"
        );
        let reference = &self.pods[0].config;
        for p in &self.pods {
            let c = &p.config;
            let what = format!("{spec} {} ({})", p.name, self.cluster_name(p.cluster));
            assert_eq!(
                voters[&p.id()].cluster,
                p.cluster,
                "{what}: id {} is analysed in another cluster",
                p.id()
            );
            let servers = c.indexed("server");
            assert_eq!(
                servers.keys().copied().collect::<BTreeSet<_>>(),
                ids,
                "{what}: server.<n> lines do not match the myids"
            );
            for (n, entry) in &servers {
                let own = entry.starts_with("0.0.0.0:");
                assert_eq!(
                    own,
                    *n == p.id(),
                    "{what}: server.{n}={entry}: the self-replacement must rewrite exactly the pod's own entry (myid {})",
                    p.id()
                );
                let host = entry.split(':').next().unwrap();
                assert!(
                    own || self.dns[p.cluster].contains_key(host),
                    "{what}: server.{n} host {host} does not resolve in {}",
                    self.cluster_name(p.cluster)
                );
            }
            // Every cluster gets the same lists (apart from the own entry).
            for (n, entry) in &reference.indexed("server") {
                if *n != p.id() && *n != self.pods[0].id() {
                    assert_eq!(
                        &servers[n], entry,
                        "{what}: server.{n} differs between pods"
                    );
                }
            }
            assert_eq!(
                c.indexed("group"),
                reference.indexed("group"),
                "{what}: groups differ"
            );
            assert_eq!(
                c.indexed("weight"),
                reference.indexed("weight"),
                "{what}: weights differ"
            );
        }

        // Groups and weights as ZooKeeper reads them vs the analysed model
        // (one group per cluster; a missing weight is 1).
        let groups = reference.indexed("group");
        assert_eq!(
            !groups.is_empty(),
            self.quorum.kind == QuorumType::Hierarchical,
            "{spec}: hierarchical in the analysis iff the config has groups"
        );
        if groups.is_empty() {
            return;
        }
        let weights = reference.indexed("weight");
        let mut in_groups = BTreeSet::new();
        for (g, members) in &groups {
            let members: BTreeSet<u32> = members.split(':').map(|s| s.parse().unwrap()).collect();
            let clusters: BTreeSet<usize> = members.iter().map(|id| voters[id].cluster).collect();
            assert_eq!(
                clusters.len(),
                1,
                "{spec}: group.{g} spans clusters {clusters:?}"
            );
            let cluster = *clusters.first().unwrap();
            assert_eq!(
                members,
                self.ids_in(cluster).into_iter().collect(),
                "{spec}: group.{g} is not exactly {}'s servers",
                self.cluster_name(cluster)
            );
            in_groups.extend(members);
        }
        assert_eq!(in_groups, ids, "{spec}: a server is in no group");
        for v in &self.quorum.voters {
            let w: u32 = weights.get(&v.id).map_or(1, |w| w.parse().unwrap());
            assert_eq!(
                w, v.weight,
                "{spec}: weight.{} is {w}, analysed as {}",
                v.id, v.weight
            );
        }
    }
}

/// What each cluster's DNS answers, built from the objects that exist there:
/// the chart's headless Service (Kubernetes DNS), Straddle's companion
/// objects (`render::companions`: ServiceExports for MCS; per-pod
/// LoadBalancer and ExternalName Services for external-dns) and what those
/// publish to every cluster (MCS `<pod>.<cluster>.<svc>.<ns>.svc.clusterset.local`,
/// external-dns hostnames of LoadBalancers). A Service with a pod selector
/// answers with the pod's IP (in the real system its ClusterIP or
/// load balancer forwards there); an ExternalName follows its target. A name
/// nothing publishes does not resolve.
fn dns_views(
    topo: &Topology,
    pods: &[Pod],
    headless: &[(String, String)],
) -> Vec<BTreeMap<String, Ipv4Addr>> {
    let domain = &topo.networking.cluster_domain;
    let pod_ip = |ci: usize, name: &str| {
        pods.iter()
            .find(|p| p.cluster == ci && p.name == name)
            .map(|p| p.ip)
    };
    let companions: Vec<Vec<Value>> = (0..topo.clusters.len())
        .map(|ci| render::companions(topo, ci))
        .collect();
    let meta = |o: &Value| {
        (
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            o["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    };
    let selected_pod = |o: &Value| {
        o["spec"]["selector"]["statefulset.kubernetes.io/pod-name"]
            .as_str()
            .map(str::to_string)
    };

    // Published to every cluster.
    let mut global = BTreeMap::new();
    for (ci, objects) in companions.iter().enumerate() {
        for o in objects {
            let (ns, name) = meta(o);
            if o["kind"] == "ServiceExport" && headless[ci] == (ns.clone(), name.clone()) {
                for p in pods.iter().filter(|p| p.cluster == ci) {
                    let cluster = &topo.clusters[ci].name;
                    global.insert(
                        format!("{}.{cluster}.{name}.{ns}.svc.clusterset.local", p.name),
                        p.ip,
                    );
                }
            }
            if o["kind"] == "Service" && o["spec"]["type"] == "LoadBalancer" {
                let host =
                    o["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"]
                        .as_str();
                if let (Some(host), Some(ip)) = (host, selected_pod(o).and_then(|p| pod_ip(ci, &p)))
                {
                    global.insert(host.to_string(), ip);
                }
            }
        }
    }

    (0..topo.clusters.len())
        .map(|ci| {
            let mut view = global.clone();
            let (ns, svc) = &headless[ci];
            for p in pods.iter().filter(|p| p.cluster == ci) {
                view.insert(format!("{}.{svc}.{ns}", p.name), p.ip);
                view.insert(format!("{}.{svc}.{ns}.svc.{domain}", p.name), p.ip);
            }
            for o in companions[ci].iter().filter(|o| o["kind"] == "Service") {
                let (ns, name) = meta(o);
                let fqdn = format!("{name}.{ns}.svc.{domain}");
                let ip = if o["spec"]["type"] == "ExternalName" {
                    o["spec"]["externalName"]
                        .as_str()
                        .and_then(|target| global.get(target).copied())
                } else {
                    selected_pod(o).and_then(|p| pod_ip(ci, &p))
                };
                if let Some(ip) = ip {
                    view.insert(fqdn, ip);
                }
            }
            view
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The lab: namespaces, bridges, JVMs. Everything is undone on drop.

fn ip_ok(args: &[&str]) -> Result<(), String> {
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

/// A JVM in network namespace `ns`, its output to `log`. `ip netns exec`
/// execs java in place, so the child is the JVM (killed by `Lab::drop`).
/// Should the calling thread end without that (the test process killed),
/// the kernel kills the JVM (`PR_SET_PDEATHSIG`).
fn java_in(ns: &str, args: &[String], log: File) -> Child {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "java"])
        .args(JVM_FLAGS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("starting java in {ns}: {e}"))
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Leader,
    Follower,
    /// Running, answering, no quorum.
    NotServing,
    Other(String),
    Unreachable(String),
    Exited(String),
}

impl State {
    fn serving(&self) -> bool {
        matches!(self, State::Leader | State::Follower)
    }

    fn short(&self) -> String {
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
fn srvr(port: u16) -> State {
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

type Snapshot = BTreeMap<u32, State>;

fn table(case: &Case, snap: &Snapshot) -> String {
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

static LABS: AtomicU32 = AtomicU32::new(0);

struct Lab<'a> {
    case: &'a Case,
    /// `stz<pid>-<n>`: namespace names start with it.
    prefix: String,
    switch: String,
    dir: PathBuf,
    /// Created, in order (switch first): deleted in reverse.
    namespaces: Vec<String>,
    /// Links of the switch namespace (veths: deleting one end takes both).
    links: Vec<String>,
    etc_dirs: Vec<PathBuf>,
    jvms: BTreeMap<u32, Child>,
    exited: BTreeMap<u32, String>,
}

impl<'a> Lab<'a> {
    /// The network of every pod of the case (no JVM yet).
    fn new(case: &'a Case) -> Lab<'a> {
        let prefix = format!(
            "stz{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("straddle-{prefix}"));
        let mut lab = Lab {
            case,
            switch: format!("{prefix}-sw"),
            prefix,
            dir,
            namespaces: Vec::new(),
            links: Vec::new(),
            etc_dirs: Vec::new(),
            jvms: BTreeMap::new(),
            exited: BTreeMap::new(),
        };
        lab.build();
        lab
    }

    fn ns(&self, id: u32) -> String {
        format!("{}-{id}", self.prefix)
    }

    fn build(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        fs::create_dir_all(&self.dir).unwrap();
        fs::write(
            self.dir.join("log4j.properties"),
            "log4j.rootLogger=INFO, CONSOLE\n\
             log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1}: %m%n\n\
             # one line per 4lw probe otherwise\n\
             log4j.logger.org.apache.zookeeper.server.NIOServerCnxn=WARN\n",
        )
        .unwrap();
        let sw = self.switch.clone();
        ip(&["netns", "add", &sw]);
        self.namespaces.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "core", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "core", "up"]);
        for ci in 0..self.case.topo.clusters.len() {
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
        for p in &self.case.pods {
            let ns = self.ns(p.id());
            ip(&["netns", "add", &ns]);
            self.namespaces.push(ns.clone());

            // The cluster's DNS view; the dead resolver makes any other name fail at once.
            let etc = Path::new("/etc/netns").join(&ns);
            fs::create_dir_all(&etc).unwrap();
            self.etc_dirs.push(etc.clone());
            let mut hosts = format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{} {hostname}\n",
                p.ip, p.name
            );
            for (name, addr) in &self.case.dns[p.cluster] {
                let _ = writeln!(hosts, "{addr}\t{name}");
            }
            fs::write(etc.join("hosts"), hosts).unwrap();
            fs::write(
                etc.join("resolv.conf"),
                "# nothing listens here: unknown names fail at once, no query leaves\n\
                 nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
            )
            .unwrap();

            let veth = format!("s{}", p.id());
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

    /// Starts the JVMs of `ids`, with the image's configuration plus `TEST_OVERRIDES`.
    fn start(&mut self, ids: &[u32]) {
        let mut classpath = ZK_JAR.to_string();
        for jar in LOG_JARS.iter().filter(|j| Path::new(j).is_file()) {
            classpath.push(':');
            classpath.push_str(jar);
        }
        for &id in ids {
            let pod = self.case.pod(id);
            let ns = self.ns(id);
            let home = self.dir.join(&ns);
            let data = home.join("data");
            fs::create_dir_all(&data).unwrap();
            fs::write(data.join("myid"), format!("{}\n", pod.config.myid)).unwrap();
            let mut cfg = format!(
                "# {} in {}\n",
                pod.name,
                self.case.cluster_name(pod.cluster)
            );
            let mut lines = pod.config.lines.clone();
            for (key, value) in [("dataDir", &data), ("dataLogDir", &data)] {
                let v = value.display().to_string();
                lines
                    .iter_mut()
                    .filter(|(k, _)| k == key)
                    .for_each(|l| l.1 = v.clone());
            }
            for (key, value) in TEST_OVERRIDES {
                lines.retain(|(k, _)| k != key);
                lines.push((key.to_string(), value.to_string()));
            }
            for (k, v) in &lines {
                let _ = writeln!(cfg, "{k}={v}");
            }
            let cfg_path = home.join("zoo.cfg");
            fs::write(&cfg_path, cfg).unwrap();
            let log = File::create(home.join("server.log")).unwrap();

            let log4j = format!(
                "-Dlog4j.configuration=file:{}",
                self.dir.join("log4j.properties").display()
            );
            let mut args = vec![log4j, "-cp".into(), classpath.clone()];
            args.push("org.apache.zookeeper.server.quorum.QuorumPeerMain".into());
            args.push(cfg_path.display().to_string());
            self.jvms.insert(id, java_in(&ns, &args, log));
        }
    }

    /// A real write through server `id` with the package's command-line
    /// client (`zkCli.sh`'s class): it returns only once the leader has
    /// committed it, i.e. had acks from a quorum.
    fn write(&self, id: u32, path: &str) -> Duration {
        let ns = self.ns(id);
        let port = self.case.pod(id).config.get("clientPort").unwrap_or("2181");
        let mut classpath = ZK_JAR.to_string();
        if Path::new(CLIENT_LOG_JAR).is_file() {
            classpath = format!("{classpath}:{CLIENT_LOG_JAR}");
        }
        let out_path = self
            .dir
            .join(&ns)
            .join(format!("write{}.log", path.replace('/', "-")));
        let args: Vec<String> = [
            "-cp",
            &classpath,
            "org.apache.zookeeper.ZooKeeperMain",
            "-server",
            &format!("127.0.0.1:{port}"),
            "create",
            path,
            "straddle",
        ]
        .map(str::to_string)
        .into();
        let started = Instant::now();
        let mut child = java_in(&ns, &args, File::create(&out_path).unwrap());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > WRITE_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: writing {path} through server {id} did not finish within {WRITE_DEADLINE:?}",
                    self.case.spec
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        let output = fs::read_to_string(&out_path).unwrap_or_default();
        assert!(
            status.success() && output.contains(&format!("Created {path}")),
            "{}: writing {path} through server {id} failed ({status}):\n{output}",
            self.case.spec
        );
        started.elapsed()
    }

    /// Cuts a whole cluster off (its pods still reach each other).
    fn cut(&self, cluster: usize) {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &format!("d{cluster}"),
            "down",
        ]);
    }

    fn snapshot(&mut self) -> Snapshot {
        for (id, child) in &mut self.jvms {
            if !self.exited.contains_key(id)
                && let Ok(Some(status)) = child.try_wait()
            {
                self.exited.insert(*id, status.to_string());
            }
        }
        let probes: Vec<_> = self
            .jvms
            .keys()
            .filter(|id| !self.exited.contains_key(id))
            .map(|&id| {
                let port: u16 = self
                    .case
                    .pod(id)
                    .config
                    .get("clientPort")
                    .unwrap_or("2181")
                    .parse()
                    .unwrap();
                (id, in_netns(&self.ns(id), move || srvr(port)))
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
        for (id, status) in &self.exited {
            snap.insert(*id, State::Exited(status.clone()));
        }
        snap
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        for &id in self.jvms.keys() {
            let path = self.dir.join(self.ns(id)).join("server.log");
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(out, "  --- {} (last lines)", path.display());
            for l in &lines[lines.len().saturating_sub(8)..] {
                let _ = writeln!(out, "    {l}");
            }
        }
        out
    }

    /// Polls until `check` passes, then requires it to keep passing for
    /// `hold`. Returns the time from `since` to the first pass.
    fn wait(
        &mut self,
        what: &str,
        since: Instant,
        deadline: Duration,
        hold: Duration,
        mut check: impl FnMut(&Snapshot) -> Result<(), String>,
    ) -> Duration {
        let reached = loop {
            let snap = self.snapshot();
            match check(&snap) {
                Ok(()) => break since.elapsed(),
                Err(why) if since.elapsed() > deadline => panic!(
                    "{} / {what}: not reached within {deadline:?}: {why}\n{}{}",
                    self.case.spec,
                    table(self.case, &snap),
                    self.log_tails()
                ),
                Err(_) => thread::sleep(POLL),
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

    fn leader(&mut self) -> u32 {
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

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        for child in self.jvms.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
        if thread::panicking() || std::env::var_os("STRADDLE_ZK_KEEP_LOGS").is_some() {
            eprintln!("server configs and logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
        for p in problems {
            eprintln!("cleanup of {}: {p}", self.prefix);
        }
    }
}

// ---------------------------------------------------------------------------
// Expectations.

/// One side of a cut: when `serving`, every server answers leader/follower
/// and exactly one leads; otherwise every server answers "not serving".
fn side(snap: &Snapshot, ids: &[u32], serving: bool) -> Result<(), String> {
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
            return Err(format!("server {id} is {}, expected {want}", state.short()));
        }
    }
    let leaders = ids
        .iter()
        .filter(|id| snap.get(id) == Some(&State::Leader))
        .count();
    if serving && leaders != 1 {
        return Err(format!("{leaders} leaders among {ids:?}"));
    }
    Ok(())
}

/// What a set of servers is observed doing, in `verdict` words.
fn observed(lab: &mut Lab, ids: &[u32]) -> &'static str {
    let snap = lab.snapshot();
    verdict(side(&snap, ids, true).is_ok())
}

fn verdict(serving: bool) -> &'static str {
    if serving {
        "keeps quorum"
    } else {
        "LOSES QUORUM"
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<String>,
}

impl Report {
    fn row(&mut self, spec: &str, event: &str, straddle: &str, real: &str, details: String) {
        let row = format!("{spec:<34} {event:<30} {straddle:<14} {real:<14} {details}");
        eprintln!("  {row}");
        self.rows.push(row);
    }
}

/// Starts `ids` and waits until they serve (or not) as `serving` says.
/// Returns (all JVMs answering 4lw, state reached), both from the start.
fn form(lab: &mut Lab, ids: &[u32], serving: bool, what: &str) -> (Duration, Duration) {
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
            side(s, ids, serving)
        },
    );
    (listening.unwrap_or(formed), formed)
}

/// Sides of a cut and what the analysis says each does.
struct Cut {
    cluster: usize,
    survivors: Vec<u32>,
    isolated: Vec<u32>,
    keeps: bool,
    isolated_serves: bool,
}

impl Cut {
    fn new(case: &Case, cluster: usize) -> Cut {
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
    fn run(&self, lab: &mut Lab, extra: &dyn Fn(&Snapshot)) -> String {
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
                side(s, &losing, false)
            },
        );
        let settled = lab.wait("state after the cut", t_cut, LOSS_DEADLINE, HOLD, |s| {
            track(s);
            side(s, &self.survivors, self.keeps)?;
            side(s, &self.isolated, self.isolated_serves)
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
            let path = format!("/after-cutting-{}", case.cluster_name(self.cluster));
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

/// A fresh ensemble of every pod of the case; cuts `cluster` off; both
/// sides must do what the analysis says.
fn cluster_loss(case: &Case, cluster: usize, report: &mut Report) {
    let mut lab = Lab::new(case);
    let all = case.ids();
    let healthy = case.quorum.has_quorum(|_| true);
    assert!(
        healthy,
        "{}: the analysis says the full ensemble has no quorum",
        case.spec
    );
    let (listening, formed) = form(&mut lab, &all, healthy, "formation");
    report.row(
        case.spec,
        &format!("all {} servers up", all.len()),
        verdict(healthy),
        observed(&mut lab, &all),
        format!("JVMs answering {listening:.1?} after start, formed {formed:.1?}"),
    );
    let cut = Cut::new(case, cluster);
    let details = cut.run(&mut lab, &|_| {});
    report.row(
        case.spec,
        &format!("lose {}", case.cluster_name(cluster)),
        verdict(cut.keeps),
        observed(&mut lab, &cut.survivors),
        details,
    );
}

/// `stage: first-cluster`: cluster-0 forms alone; the weight-0 servers of the
/// other clusters join as followers and never lead; then cluster-1 is cut.
fn first_cluster_stage(case: &Case, report: &mut Report) {
    let mut lab = Lab::new(case);
    let first = case.ids_in(0);
    let others: Vec<u32> = case
        .pods
        .iter()
        .filter(|p| p.cluster != 0)
        .map(Pod::id)
        .collect();
    let all = case.ids();
    let weightless: Vec<u32> = case
        .quorum
        .voters
        .iter()
        .filter(|v| v.weight == 0)
        .map(|v| v.id)
        .collect();
    assert_eq!(
        weightless, others,
        "{}: the other clusters' servers are weighted out",
        case.spec
    );
    assert_eq!(weightless, [4, 5, 6]);

    let alone = case.quorum.has_quorum(|v| v.cluster == 0);
    assert!(
        alone,
        "{}: the analysis says cluster-0 has no quorum alone",
        case.spec
    );
    let (listening, formed) = form(&mut lab, &first, alone, "cluster-0 alone");
    let leader = lab.leader();
    let took = lab.write(
        first.iter().copied().find(|id| *id != leader).unwrap(),
        "/cluster-0-alone",
    );
    report.row(
        case.spec,
        &format!("only cluster-0 ({} servers) up", first.len()),
        verdict(alone),
        observed(&mut lab, &first),
        format!("JVMs answering {listening:.1?}, formed {formed:.1?}, leader id {leader}, write committed in {took:.1?}"),
    );

    let never_lead = |s: &Snapshot| {
        for id in &weightless {
            assert_ne!(
                s.get(id),
                Some(&State::Leader),
                "{}: weight-0 server {id} became leader",
                case.spec
            );
        }
    };
    let t1 = Instant::now();
    lab.start(&others);
    let joined = lab.wait(
        "the weight-0 servers join",
        t1,
        FORMATION_DEADLINE,
        HOLD,
        |s| {
            never_lead(s);
            side(s, &all, true)?;
            match weightless.iter().find(|id| s[*id] != State::Follower) {
                Some(id) => Err(format!("server {id} is not a follower")),
                None => Ok(()),
            }
        },
    );
    let leader_now = lab.leader();
    assert_eq!(
        leader_now, leader,
        "{}: the leader changed when cluster-1 joined",
        case.spec
    );
    let took = lab.write(weightless[0], "/via-a-weight-0-follower");
    let snap = lab.snapshot();
    let following = weightless.iter().all(|id| snap[id] == State::Follower);
    report.row(
        case.spec,
        "start cluster-1 (weight 0)",
        "follow",
        if following { "follow" } else { "NOT FOLLOWING" },
        format!(
            "ids {weightless:?} following {joined:.1?} after start, never leader; leader stays id {leader_now}; write via id {} committed in {took:.1?}",
            weightless[0]
        ),
    );

    // Losing the weighted-out cluster changes nothing for cluster-0.
    let cut = Cut::new(case, 1);
    assert!(cut.keeps && !cut.isolated_serves);
    let mut details = cut.run(&mut lab, &never_lead);
    let snap = lab.snapshot();
    assert_eq!(
        lab.leader(),
        leader,
        "{}: cluster-0 re-elected after losing cluster-1:\n{}",
        case.spec,
        table(case, &snap)
    );
    details.push_str("; cluster-0 kept its leader");
    report.row(
        case.spec,
        "lose cluster-1",
        verdict(cut.keeps),
        observed(&mut lab, &cut.survivors),
        details,
    );
}

#[test]
fn real_zookeeper_agrees_with_the_survivability_analysis() {
    if let Some(reason) = missing_prerequisite() {
        if std::env::var("STRADDLE_REQUIRE_REAL_ZK").as_deref() == Ok("1") {
            panic!(
                "STRADDLE_REQUIRE_REAL_ZK=1 but this machine cannot run real ZooKeeper: {reason}"
            );
        }
        eprintln!("skipped: {reason} (set STRADDLE_REQUIRE_REAL_ZK=1 to fail instead)");
        return;
    }
    let started = Instant::now();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut report = Report::default();

    // 3 + 3 + 1 over MCS: any one cluster can go.
    let mcs = Case::load(&runtime, "specs/cp-three-clusters-mcs.yaml");
    assert_eq!(
        mcs.losses(),
        [
            ("cluster-0", true),
            ("cluster-1", true),
            ("tie-breaker", true)
        ]
    );
    for cut in 0..mcs.topo.clusters.len() {
        cluster_loss(&mcs, cut, &mut report);
    }

    // 3 + 3 with external-dns aliases: neither cluster can go.
    let two = Case::load(&runtime, "../examples/cp-two-clusters.yaml");
    assert_eq!(two.losses(), [("cluster-0", false), ("cluster-1", false)]);
    assert!(
        two.pods[0]
            .config
            .get("server.2")
            .unwrap()
            .starts_with("confluent-cp-zookeeper-1.confluent.svc.cluster.local:"),
        "external-dns: ZooKeeper peers use the in-cluster aliases"
    );
    for cut in 0..two.topo.clusters.len() {
        cluster_loss(&two, cut, &mut report);
    }

    // Rollout stage `first-cluster`: cluster-1 weighted 0.
    let stage = Case::load(&runtime, "specs/cp-first-cluster-stage.yaml");
    assert_eq!(stage.losses(), [("cluster-0", false), ("cluster-1", true)]);
    first_cluster_stage(&stage, &mut report);
    cluster_loss(&stage, 0, &mut report);

    println!(
        "real ZooKeeper 3.8 vs `straddle explain` ({:.1?} in all):\n{:<34} {:<30} {:<14} {:<14} details\n{}",
        started.elapsed(),
        "spec",
        "event",
        "straddle",
        "real",
        report.rows.join("\n")
    );
}
