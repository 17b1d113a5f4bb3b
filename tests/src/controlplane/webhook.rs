//! `straddle-webhook` installed the way a user does it: the policy in a
//! ConfigMap, `helm install` of `deploy/helm/straddle-webhook` with the real
//! helm binary. No kubelet runs the chart's Deployment, so this plays the
//! node's part: it reads the Deployment back from the API server and runs
//! the webhook binary on the host with the container's own arguments,
//! mount paths mapped to directories that hold what the kubelet would
//! project there (the ConfigMap's and Secret's keys, kept up to date by
//! [`Webhook::project_volumes`]), the ServiceAccount's token as its
//! credentials, and one EndpointSlice (`<host ip>:<port>`, ready) as the
//! Service's endpoint. The API server calls it through the chart's own
//! Service (`clientConfig.service`), so the serving certificate must carry
//! the Service's DNS name and the caBundle must hold its CA.
//!
//! With `certificates.mode=cert-manager` there is no cert-manager either:
//! [`Webhook::issue_certificate`] does what its controller and CA injector
//! would (the chart's Certificate read back, a Secret of type
//! `kubernetes.io/tls` with `ca.crt`, the CA in the caBundle).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustix::process::Signal;
use serde_json::json;

use super::{Cluster, free_port};
use crate::process::Process;

pub const NAMESPACE: &str = "straddle-system";
pub const RELEASE: &str = "straddle-webhook";
pub const POLICY_CONFIGMAP: &str = "straddle-policy";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Certificates {
    SelfManaged,
    CertManager,
}

/// The CustomResourceDefinitions the chart's cert-manager mode creates
/// objects of (schema-less: nothing here validates them, as nothing
/// issues them but [`Webhook::issue_certificate`]).
const CERT_MANAGER_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: certificates.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Certificate, plural: certificates, singular: certificate, listKind: CertificateList}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: issuers.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Issuer, plural: issuers, singular: issuer, listKind: IssuerList}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

/// What to install: the webhook binary, the chart, the policy module,
/// the stretched namespaces, the certificate mode and extra `--set`s
/// (`key=value`).
pub struct Install<'a> {
    pub binary: &'a Path,
    pub chart: &'a Path,
    pub policy: &'a [u8],
    pub namespaces: &'a [&'a str],
    pub certificates: Certificates,
    pub set: &'a [&'a str],
}

/// One cluster's webhook: its installation and its process on the host.
pub struct Webhook {
    pub cluster: String,
    /// The container's arguments, mount paths mapped (see the module doc).
    pub args: Vec<String>,
    pub port: u16,
    pub probe_port: u16,
    dir: PathBuf,
    kubeconfig: PathBuf,
    binary: PathBuf,
    /// (volume directory, `configMap`/`secret`, object name) per volume.
    volumes: Vec<(PathBuf, &'static str, String)>,
    process: Option<Process>,
}

impl Webhook {
    /// Creates the policy ConfigMap, `helm install`s the chart with `set`
    /// (`key=value` pairs besides `cluster`, the namespaces and the
    /// certificate mode), and starts the webhook as the Deployment says.
    pub fn install(cluster: &Cluster, host_ip: Ipv4Addr, what: &Install) -> Result<Webhook> {
        let Install {
            binary,
            chart,
            policy,
            namespaces,
            certificates,
            set,
        } = *what;
        let dir = cluster.dir.join("webhook");
        std::fs::create_dir_all(&dir)?;
        cluster.kubectl(&["create", "namespace", NAMESPACE])?;
        let policy_file = dir.join("policy.wasm");
        std::fs::write(&policy_file, policy)?;
        cluster.kubectl(&[
            "create",
            "configmap",
            POLICY_CONFIGMAP,
            "-n",
            NAMESPACE,
            &format!("--from-file=policy.wasm={}", policy_file.display()),
        ])?;
        if certificates == Certificates::CertManager {
            cluster.kubectl_stdin(&["apply", "-f", "-"], Some(CERT_MANAGER_CRDS))?;
            cluster.kubectl(&[
                "wait",
                "--for=condition=Established",
                "crd/certificates.cert-manager.io",
                "crd/issuers.cert-manager.io",
            ])?;
        }
        let chart = chart.display().to_string();
        let cluster_value = format!("cluster={}", cluster.name);
        let namespaces_value = format!("webhook.namespaces={}", json!(namespaces));
        let mode = format!(
            "certificates.mode={}",
            match certificates {
                Certificates::SelfManaged => "self-managed",
                Certificates::CertManager => "cert-manager",
            }
        );
        let mut args = vec![
            "install",
            RELEASE,
            &chart,
            "--namespace",
            NAMESPACE,
            "--set",
            &cluster_value,
            "--set-json",
            &namespaces_value,
            "--set",
            &mode,
        ];
        for s in set {
            args.extend(["--set", *s]);
        }
        cluster.helm(&args)?;

        let deployment = cluster
            .get("deployment", NAMESPACE, RELEASE)?
            .context("helm install made no Deployment")?;
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().unwrap_or_default();
            let path = dir.join("volumes").join(name);
            std::fs::create_dir_all(&path)?;
            mounts.push((
                mount["mountPath"].as_str().unwrap_or_default().to_string(),
                path.clone(),
            ));
            let volume = pod["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == name)
                .with_context(|| format!("no volume {name}"))?;
            if let Some(cm) = volume["configMap"]["name"].as_str() {
                volumes.push((path, "configMap", cm.to_string()));
            } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
                volumes.push((path, "secret", secret.to_string()));
            }
        }
        let (port, probe_port) = (free_port()?, free_port()?);
        let args = container["args"]
            .as_array()
            .context("the webhook container has no args")?
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap_or_default();
                map_arg(a, &mounts, host_ip, port, probe_port)
            })
            .collect();

        // Its credentials: a token of the chart's ServiceAccount, so the
        // webhook has exactly the RBAC the chart grants.
        let service_account = pod["serviceAccountName"].as_str().unwrap_or("default");
        let token = cluster.kubectl(&[
            "create",
            "token",
            service_account,
            "-n",
            NAMESPACE,
            "--duration=2h",
        ])?;
        let kubeconfig = dir.join("serviceaccount.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa, namespace: {NAMESPACE}}}\ncurrent-context: c\n",
                cluster.api_port,
                cluster.pki.ca_cert.display(),
                token.trim()
            ),
        )?;

        // The Service's endpoint: this host, as if the pod ran here.
        let service = cluster
            .get("service", NAMESPACE, RELEASE)?
            .context("helm install made no Service")?;
        let port_name = service["spec"]["ports"][0]["name"]
            .as_str()
            .unwrap_or("https");
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{RELEASE}-host"),
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": RELEASE,
                    "endpointslice.kubernetes.io/managed-by": "straddle-tests",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [host_ip.to_string()], "conditions": {"ready": true}}],
        });
        cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&slice.to_string()))?;

        let mut webhook = Webhook {
            cluster: cluster.name.clone(),
            args,
            port,
            probe_port,
            dir,
            kubeconfig,
            binary: binary.to_path_buf(),
            volumes,
            process: None,
        };
        if certificates == Certificates::CertManager {
            webhook.issue_certificate(cluster)?;
        }
        webhook.project_volumes(cluster)?;
        webhook.start()?;
        webhook.wait_for_ca_bundle(cluster)?;
        Ok(webhook)
    }

    /// Writes every ConfigMap and Secret volume's keys as the kubelet
    /// would (each file replaced atomically).
    pub fn project_volumes(&self, cluster: &Cluster) -> Result<()> {
        for (path, kind, name) in &self.volumes {
            let kind_arg = if *kind == "configMap" {
                "configmap"
            } else {
                "secret"
            };
            let object = cluster
                .get(kind_arg, NAMESPACE, name)?
                .with_context(|| format!("{kind} {name} does not exist"))?;
            let mut files: Vec<(String, Vec<u8>)> = Vec::new();
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                let text = value.as_str().unwrap_or_default();
                files.push((
                    key.clone(),
                    if *kind == "secret" {
                        B64.decode(text)?
                    } else {
                        text.as_bytes().to_vec()
                    },
                ));
            }
            for (key, value) in object["binaryData"].as_object().into_iter().flatten() {
                files.push((key.clone(), B64.decode(value.as_str().unwrap_or_default())?));
            }
            for (key, bytes) in files {
                let tmp = path.join(format!(".{key}.tmp"));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path.join(&key))?;
            }
        }
        Ok(())
    }

    /// Starts the webhook and waits for `/readyz`.
    pub fn start(&mut self) -> Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST");
        let process = Process::spawn(
            &format!("{}/straddle-webhook", self.cluster),
            command,
            &self.dir.join("webhook.log"),
        )?;
        self.process = Some(process);
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.process.as_mut()
                && let Some(status) = p.exited()
            {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    p.name,
                    p.log_tail(4000)
                );
            }
            if self.readyz().is_ok_and(|r| r.starts_with("ready")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: the webhook was not ready within {timeout:?}:\n{}",
                    self.cluster,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /readyz` on the probe port (plain HTTP).
    pub fn readyz(&self) -> Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.probe_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{head}");
        }
        Ok(body.to_string())
    }

    /// Stops the webhook (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the webhook: a frozen webhook
    /// accepts connections and never answers.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let p = self
            .process
            .as_ref()
            .context("the webhook is not running")?;
        p.signal(if frozen { Signal::STOP } else { Signal::CONT })
    }

    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(4000))
            .unwrap_or_else(|| crate::process::tail(&self.dir.join("webhook.log"), 4000))
    }

    /// Waits until the MutatingWebhookConfiguration's caBundle holds a CA
    /// (self-managed: the webhook patches it; cert-manager: the injector).
    fn wait_for_ca_bundle(&self, cluster: &Cluster) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let config = cluster.kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                RELEASE,
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ])?;
            if !config.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: the caBundle is still empty:\n{}",
                    self.cluster,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// cert-manager's part: a CA and a serving certificate for the chart's
    /// Certificate, in its Secret (`tls.crt`, `tls.key`, `ca.crt`), and the
    /// CA in the webhook's caBundle (the CA injector). Called again, it
    /// rotates both, as a renewal with a new CA would.
    pub fn issue_certificate(&self, cluster: &Cluster) -> Result<()> {
        let certificate = cluster
            .list("certificates.cert-manager.io", NAMESPACE)?
            .into_iter()
            .find(|c| c["spec"]["isCA"] != true)
            .context("the chart made no serving Certificate")?;
        let secret_name = certificate["spec"]["secretName"]
            .as_str()
            .context("Certificate without secretName")?;
        let dns_names: Vec<String> = certificate["spec"]["dnsNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, format!("{RELEASE}-ca"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(dns_names)?;
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer)?;

        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": secret_name, "namespace": NAMESPACE},
            "data": {
                "tls.crt": B64.encode(cert.pem()),
                "tls.key": B64.encode(key.serialize_pem()),
                "ca.crt": B64.encode(ca_cert.pem()),
            },
        });
        cluster.kubectl_stdin(&["apply", "-f", "-"], Some(&secret.to_string()))?;
        let patch = json!([{
            "op": "replace",
            "path": "/webhooks/0/clientConfig/caBundle",
            "value": B64.encode(ca_cert.pem()),
        }]);
        cluster.kubectl(&[
            "patch",
            "mutatingwebhookconfiguration",
            RELEASE,
            "--type=json",
            "-p",
            &patch.to_string(),
        ])?;
        Ok(())
    }

    /// Replaces the policy: the ConfigMap updated (as `kubectl create
    /// configmap … --dry-run=client -o yaml | kubectl apply` would), then
    /// projected into the webhook's volume.
    pub fn update_policy(&self, cluster: &Cluster, policy: &[u8]) -> Result<()> {
        let patch = json!({"binaryData": {"policy.wasm": B64.encode(policy)}});
        // A file: the module is longer than one command-line argument may be.
        let patch_file = self.dir.join("policy-patch.json");
        std::fs::write(&patch_file, patch.to_string())?;
        cluster.kubectl(&[
            "patch",
            "configmap",
            POLICY_CONFIGMAP,
            "-n",
            NAMESPACE,
            "--type=merge",
            &format!("--patch-file={}", patch_file.display()),
        ])?;
        self.project_volumes(cluster)
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One container argument with the pod's world mapped onto the host:
/// mount paths to their directories, the listen addresses to this host's.
fn map_arg(
    arg: &str,
    mounts: &[(String, PathBuf)],
    host_ip: Ipv4Addr,
    port: u16,
    probe_port: u16,
) -> String {
    if arg.starts_with("--listen=") {
        return format!("--listen={host_ip}:{port}");
    }
    if arg.starts_with("--probe-listen=") {
        return format!("--probe-listen=127.0.0.1:{probe_port}");
    }
    if let Some((flag, value)) = arg.split_once('=') {
        for (mount, dir) in mounts {
            if let Some(rest) = value.strip_prefix(mount.as_str()) {
                return format!("{flag}={}{rest}", dir.display());
            }
        }
    }
    arg.to_string()
}
