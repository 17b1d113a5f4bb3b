//! Real Kubernetes control planes on loopback: per member cluster its own
//! etcd, kube-apiserver (own CA and serving certificate, service-account
//! keys, RBAC, an audit log) and kube-controller-manager (the StatefulSet
//! and ServiceAccount controllers). No kubelet runs, so pods stay Pending;
//! [`Cluster::mark_pods_ready`] plays the kubelet's part of reporting a pod
//! ready, which `OrderedReady` StatefulSets wait for before the next pod.
//!
//! The binaries come from `tests/tools/build.sh` (Go modules at pinned
//! releases): `STRADDLE_KUBE_BIN`, or the build cache's `current/bin`.

mod pki;
pub mod stretch;
pub mod webhook;

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use pki::{ClusterPki, KUBERNETES_SERVICE_IP};

use crate::process::{Process, tail};
use crate::scratch::Scratch;

/// The range `--service-cluster-ip-range` gives every cluster.
pub const SERVICE_RANGE: &str = "10.96.0.0/16";

/// Where the built binaries are.
#[derive(Clone)]
pub struct Tools {
    pub bin: PathBuf,
}

const TOOLS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "helm",
];

impl Tools {
    /// The binaries of `tests/tools/build.sh`, or why they are not there.
    pub fn find() -> std::result::Result<Tools, String> {
        let bin = match std::env::var_os("STRADDLE_KUBE_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let cache = std::env::var_os("STRADDLE_TOOLS_CACHE")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("XDG_CACHE_HOME")
                            .map(PathBuf::from)
                            .or_else(|| {
                                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                            })
                            .map(|c| c.join("straddle/tools"))
                    })
                    .ok_or("no HOME to find the tools cache in")?;
                cache.join("current/bin")
            }
        };
        for tool in TOOLS {
            if !bin.join(tool).is_file() {
                return Err(format!(
                    "{} is missing: run tests/tools/build.sh (or set STRADDLE_KUBE_BIN)",
                    bin.join(tool).display()
                ));
            }
        }
        Ok(Tools { bin })
    }

    pub fn path(&self, tool: &str) -> PathBuf {
        self.bin.join(tool)
    }
}

/// The machine's first non-loopback IPv4 address: the API servers
/// advertise it, and webhooks on the host listen on it (an Endpoints
/// address may not be a loopback one).
pub fn host_ip() -> Result<Ipv4Addr> {
    // Connecting a UDP socket sends nothing; it only picks the source
    // address the route to that destination would use.
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    if socket.connect("192.0.2.1:9").is_ok()
        && let Ok(std::net::SocketAddr::V4(addr)) = socket.local_addr()
        && !addr.ip().is_loopback()
        && !addr.ip().is_unspecified()
    {
        return Ok(*addr.ip());
    }
    let out = Command::new("hostname").arg("-I").output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .find(|a| !a.is_loopback() && !a.is_link_local())
        .context("this machine has no non-loopback IPv4 address")
}

/// A TCP port free on every address right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("0.0.0.0:0")?.local_addr()?.port())
}

/// One member cluster's control plane.
pub struct Cluster {
    /// The stretch spec's name for it.
    pub name: String,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub api_port: u16,
    pub pki: ClusterPki,
    pub audit_log: PathBuf,
    tools: Tools,
    // Dropped in reverse: the controller manager, the API server, etcd.
    controller_manager: Option<Process>,
    apiserver: Option<Process>,
    etcd: Option<Process>,
}

/// N member clusters and the scratch directory they live in.
pub struct ControlPlanes {
    pub clusters: Vec<Cluster>,
    pub host_ip: Ipv4Addr,
    pub tools: Tools,
    // Last, so the processes stop before their directories go.
    pub scratch: Scratch,
}

impl ControlPlanes {
    /// Starts one control plane per name, all at once, and waits until
    /// every API server is ready.
    pub fn start(tools: &Tools, names: &[&str]) -> Result<ControlPlanes> {
        let scratch = Scratch::new("kube")?;
        let host_ip = host_ip()?;
        let started = Instant::now();
        let mut clusters = Vec::new();
        for name in names {
            clusters.push(Cluster::spawn(tools, name, &scratch.join(name), host_ip)?);
        }
        for (i, name) in names.iter().enumerate() {
            // Ports are picked free, then bound by the child: another test
            // may take one in between. Such a start is retried on new ports.
            let mut attempt = 1;
            while let Err(e) = clusters[i].wait_ready(Duration::from_secs(180)) {
                if attempt == 3 || !format!("{e:#}").contains("address already in use") {
                    return Err(e);
                }
                eprintln!("{name}: a port was taken before its server bound it; starting again");
                attempt += 1;
                let dir = scratch.join(format!("{name}-{attempt}"));
                clusters[i] = Cluster::spawn(tools, name, &dir, host_ip)?;
            }
        }
        eprintln!(
            "control planes {} ready in {:.1} s",
            names.join(", "),
            started.elapsed().as_secs_f64()
        );
        Ok(ControlPlanes {
            clusters,
            host_ip,
            tools: tools.clone(),
            scratch,
        })
    }
}

fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: {user}\ncurrent-context: c\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// Every write by anyone, and every access to Secrets, at Metadata level.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources: [{group: \"\", resources: [secrets]}]
  - level: Metadata
    verbs: [create, update, patch, delete]
  - level: None
";

impl Cluster {
    fn spawn(tools: &Tools, name: &str, dir: &Path, host_ip: Ipv4Addr) -> Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let pki = ClusterPki::write(&dir.join("pki"), host_ip)?;
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);

        let mut etcd = Command::new(tools.path("etcd"));
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        etcd.args(["--name", name])
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={name}={peer_url}"))
            // A test cluster's data need not survive a power cut.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let etcd = Process::spawn(&format!("{name}/etcd"), etcd, &dir.join("etcd.log"))?;

        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)?;
        let audit_log = dir.join("audit.log");
        let mut apiserver = Command::new(tools.path("kube-apiserver"));
        apiserver
            .arg(format!("--etcd-servers={client_url}"))
            .arg("--bind-address=0.0.0.0")
            .arg(format!("--advertise-address={host_ip}"))
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.serving_key.display()
            ))
            .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                pki.service_account_public_key.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ))
            .arg(format!("--service-cluster-ip-range={SERVICE_RANGE}"))
            .arg("--authorization-mode=RBAC")
            // Webhooks behind a Service are called at an endpoint of the
            // Service (no kube-proxy here to route a ClusterIP).
            .arg("--enable-aggregator-routing=true")
            .arg(format!("--audit-policy-file={}", audit_policy.display()))
            .arg(format!("--audit-log-path={}", audit_log.display()))
            .arg("--profiling=false")
            .arg(format!("--cert-dir={}", dir.join("cert-dir").display()));
        let apiserver = Process::spawn(
            &format!("{name}/kube-apiserver"),
            apiserver,
            &dir.join("kube-apiserver.log"),
        )?;

        let server = format!("https://127.0.0.1:{api_port}");
        let admin = dir.join("admin.kubeconfig");
        std::fs::write(
            &admin,
            kubeconfig(
                &server,
                &pki.ca_cert,
                &pki.admin_cert,
                &pki.admin_key,
                "admin",
            ),
        )?;
        let kcm_config = dir.join("controller-manager.kubeconfig");
        std::fs::write(
            &kcm_config,
            kubeconfig(
                &server,
                &pki.ca_cert,
                &pki.controller_manager_cert,
                &pki.controller_manager_key,
                "kube-controller-manager",
            ),
        )?;

        Ok(Cluster {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            kubeconfig: admin,
            api_port,
            pki,
            audit_log,
            tools: tools.clone(),
            controller_manager: None,
            apiserver: Some(apiserver),
            etcd: Some(etcd),
        })
    }

    /// Waits for `/readyz`, then starts the controller manager.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for p in [&mut self.etcd, &mut self.apiserver].into_iter().flatten() {
                if let Some(status) = p.exited() {
                    bail!(
                        "{} exited ({status}) before the API server was ready:\n{}",
                        p.name,
                        p.log_tail(4000)
                    );
                }
            }
            if self
                .kubectl(&["get", "--raw", "/readyz"])
                .is_ok_and(|out| out.trim() == "ok")
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: the API server was not ready within {timeout:?}:\n{}",
                    self.name,
                    self.apiserver
                        .as_ref()
                        .map(|p| p.log_tail(4000))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }

        let mut kcm = Command::new(self.tools.path("kube-controller-manager"));
        kcm.arg(format!(
            "--kubeconfig={}",
            self.dir.join("controller-manager.kubeconfig").display()
        ))
        // Pods from StatefulSets; the `default` ServiceAccount every
        // namespace needs before the API server admits a pod in it; the
        // `kube-root-ca.crt` ConfigMap every namespace gets (a write the
        // webhook's matchConditions keep away from the policy).
        .arg("--controllers=statefulset,serviceaccount,root-ca-certificate-publisher-controller")
        .arg(format!("--root-ca-file={}", self.pki.ca_cert.display()))
        .arg("--leader-elect=false")
        .arg("--secure-port=0")
        .arg("--use-service-account-credentials=true");
        self.controller_manager = Some(Process::spawn(
            &format!("{}/kube-controller-manager", self.name),
            kcm,
            &self.dir.join("kube-controller-manager.log"),
        )?);
        Ok(())
    }

    pub fn controller_manager_log(&self) -> String {
        tail(&self.dir.join("kube-controller-manager.log"), 8000)
    }

    /// `kubectl --kubeconfig <admin> args…`; stdout, or an error with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_stdin(args, None)
    }

    /// As [`kubectl`](Self::kubectl), with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        self.kubectl_output(args, input).map(|(stdout, _)| stdout)
    }

    /// As [`kubectl_stdin`](Self::kubectl_stdin), with what it printed on
    /// stderr (the API server's warnings) when it succeeds.
    pub fn kubectl_output(&self, args: &[&str], input: Option<&str>) -> Result<(String, String)> {
        run_output(
            Command::new(self.tools.path("kubectl"))
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .args(args),
            input,
        )
        .with_context(|| format!("{}: kubectl {}", self.name, args.join(" ")))
    }

    /// `helm --kubeconfig <admin> args…`.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        run(
            Command::new(self.tools.path("helm"))
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                // Helm's own caches and config stay in the scratch directory.
                .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
                .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
                .env("HELM_DATA_HOME", self.dir.join("helm/data"))
                .args(args),
            None,
        )
        .with_context(|| format!("{}: helm {}", self.name, args.join(" ")))
    }

    /// An object as stored, or `None` if it does not exist.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<Value>> {
        match self.kubectl(&["get", kind, "-n", namespace, name, "-o", "json"]) {
            Ok(out) => Ok(Some(serde_json::from_str(&out)?)),
            Err(e) if format!("{e:#}").contains("NotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `kubectl get <kind> -n <ns> -o json`'s items.
    pub fn list(&self, kind: &str, namespace: &str) -> Result<Vec<Value>> {
        let out = self.kubectl(&["get", kind, "-n", namespace, "-o", "json"])?;
        let list: Value = serde_json::from_str(&out)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Reports every pod of `namespace` Running and Ready, as a kubelet
    /// would once its containers passed their readiness probes, so that
    /// `OrderedReady` StatefulSets go on to their next pod.
    pub fn mark_pods_ready(&self, namespace: &str) -> Result<usize> {
        let mut marked = 0;
        for pod in self.list("pods", namespace)? {
            let ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready {
                continue;
            }
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let now = "2026-01-01T00:00:00Z";
            let status = serde_json::json!({"status": {
                "phase": "Running",
                "podIP": "10.244.0.10",
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
            }});
            self.kubectl(&[
                "patch",
                "pod",
                "-n",
                namespace,
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ])?;
            marked += 1;
        }
        Ok(marked)
    }

    /// A Prometheus metric family's lines from the API server's `/metrics`.
    pub fn metrics(&self, family: &str) -> Result<Vec<String>> {
        let out = self.kubectl(&["get", "--raw", "/metrics"])?;
        Ok(out
            .lines()
            .filter(|l| l.starts_with(family))
            .map(str::to_string)
            .collect())
    }
}

/// Runs `command`, feeding `input`; stdout, or an error carrying stderr.
pub fn run(command: &mut Command, input: Option<&str>) -> Result<String> {
    run_output(command, input).map(|(stdout, _)| stdout)
}

/// As [`run`], returning (stdout, stderr) when the command succeeds.
pub fn run_output(command: &mut Command, input: Option<&str>) -> Result<(String, String)> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            if out.stderr.is_empty() {
                format!("exit {}", out.status)
            } else {
                String::new()
            }
        );
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
