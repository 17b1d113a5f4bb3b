//! Shared by the webhook's integration tests and the load generator: real
//! policy modules compiled from the example specs, a real PKI (rcgen), the
//! real server on loopback, and a real HTTPS client (hyper over rustls).

#![allow(dead_code)]

pub mod child;
pub mod modules;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use straddle_webhook::{App, Config, Server};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory under the target dir, removed by [`TempDir`]'s drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = target_tmp().join(format!(
            "{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn target_tmp() -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("straddle-webhook-tests"))
}

/// Compiled code of test modules, shared by every test binary and run (the
/// cache is keyed by module digest and engine configuration).
pub fn cache_dir() -> PathBuf {
    target_tmp().join("webhook-cwasm-cache")
}

/// The policy module compiled from a spec (a path relative to the
/// workspace), as `straddle compile` writes it.
pub fn compile(spec: &str) -> Vec<u8> {
    type Compiled = Vec<(String, Vec<u8>)>;
    static MODULES: OnceLock<Mutex<Compiled>> = OnceLock::new();
    let modules = MODULES.get_or_init(Default::default);
    if let Some((_, m)) = modules.lock().unwrap().iter().find(|(s, _)| s == spec) {
        return m.clone();
    }
    let text = std::fs::read_to_string(workspace().join(spec)).unwrap();
    let checked = straddle_compiler::check(spec, &text).unwrap_or_else(|r| panic!("{spec}:\n{r}"));
    let module = straddle_compiler::compile::module(&checked.topology).unwrap();
    modules
        .lock()
        .unwrap()
        .push((spec.to_owned(), module.clone()));
    module
}

pub const CP_TWO: &str = "examples/cp-two-clusters.yaml";
pub const CP_STAGE: &str = "tests/specs/cp-first-cluster-stage.yaml";
pub const BITNAMI_THREE: &str = "examples/bitnami-kraft-three-clusters.yaml";

/// Documents of a chart fixture's `rendered.yaml`.
pub fn fixture_docs(variant: &str) -> Vec<Value> {
    let path = workspace().join(format!("tests/fixtures/charts/{variant}/rendered.yaml"));
    straddle_compiler::manifest::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fixture object from its own JSON file.
pub fn fixture_json(variant: &str, file: &str) -> Value {
    let path = workspace().join(format!("tests/fixtures/charts/{variant}/{file}"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------- PKI

/// A CA and what it signs, written as PEM files the way cert-manager would.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "straddle test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
    pub fn server(&self, serial: u64) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("straddle-webhook #{serial}"));
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate (what the API server presents with mTLS).
    pub fn client(&self, name: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `ca.pem`, `tls.crt` and `tls.key` (serial 1) into `dir`.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).unwrap();
        let (cert, key) = self.server(1);
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    /// A TLS client configuration trusting this CA, optionally presenting a
    /// client certificate.
    pub fn client_config(
        &self,
        client_cert: Option<(String, String)>,
        h2: bool,
    ) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = ClientConfig::builder_with_provider(straddle_webhook::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Arc::new(config)
    }
}

/// A process-wide CA for tests that need no special certificates.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::new)
}

// ---------------------------------------------------------------- server

/// The real server, in this process, on a loopback port.
pub struct Running {
    pub addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Files for a test server: the policy and a certificate from [`pki`].
pub struct Setup {
    pub dir: TempDir,
    pub config: Config,
}

impl Setup {
    pub fn new(name: &str, cluster: &str, module: &[u8]) -> Setup {
        let dir = TempDir::new(name);
        let (cert, key) = pki().write(&dir.0);
        let policy = dir.path("policy.wasm");
        std::fs::write(&policy, module).unwrap();
        let mut config = Config::new(cluster, policy, cert, key);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.cache_dir = Some(cache_dir());
        config.reload_interval = Duration::from_millis(20);
        config.log = "warn".into();
        Setup { dir, config }
    }

    pub async fn start(self) -> Running {
        let Setup { dir, config } = self;
        let server = Server::bind(config).await.expect("the server starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = server.local_addr();
        let probe_addr = server.probe_addr();
        let app = server.app();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            probe_addr,
            app,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl Running {
    pub async fn client(&self) -> Client {
        Client::connect(self.addr, pki().client_config(None, false))
            .await
            .unwrap()
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path("policy.wasm")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Writes `bytes` to `path` the way Kubernetes volumes and careful tools do:
/// a new file renamed over the old one.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------- client

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One keep-alive HTTPS connection.
pub struct Client {
    sender: Sender,
    /// The server's leaf certificate (DER) seen in the handshake.
    pub server_cert: Vec<u8>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr, tls: Arc<ClientConfig>) -> Result<Client> {
        let h2 = tls.alpn_protocols == [b"h2".to_vec()];
        let stream = tls_connect(addr, tls).await?;
        let server_cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Client {
            sender,
            server_cert,
        })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Full::new(body.into()))?;
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                let (mut parts, body) = request.into_parts();
                parts.uri = format!("https://localhost{path}").parse()?;
                s.send_request(hyper::Request::from_parts(parts, body))
                    .await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer> {
        self.request("GET", path, &[], Vec::new()).await
    }

    /// `POST /mutate` with a JSON body.
    pub async fn mutate(&mut self, body: impl Into<Bytes>) -> Result<Answer> {
        self.request(
            "POST",
            "/mutate",
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Sends an AdmissionReview and returns its `response` (checking the
    /// envelope: HTTP 200, v1 AdmissionReview).
    pub async fn review(&mut self, review: &Value) -> Result<Value> {
        let answer = self.mutate(serde_json::to_vec(review)?).await?;
        if answer.status != StatusCode::OK {
            bail!("HTTP {}: {}", answer.status, answer.text());
        }
        let mut body = answer.json();
        if body["apiVersion"] != "admission.k8s.io/v1" || body["kind"] != "AdmissionReview" {
            bail!("not an AdmissionReview: {body}");
        }
        Ok(body["response"].take())
    }
}

pub async fn tls_connect(addr: SocketAddr, tls: Arc<ClientConfig>) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake")
}

// ---------------------------------------------------------------- reviews

/// An AdmissionReview v1 for `object`, shaped like the API server's.
pub fn review_for(object: &Value, namespace: &str, operation: &str, uid: &str) -> Value {
    let kind = object["kind"].as_str().unwrap_or("");
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let resource = format!("{}s", kind.to_ascii_lowercase());
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object["metadata"]["name"].as_str().unwrap_or(""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:helm", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": if operation == "UPDATE" { object.clone() } else { Value::Null },
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": if operation == "UPDATE" { "UpdateOptions" } else { "CreateOptions" }},
        }
    })
}

/// Decodes a response's base64 JSON Patch, if any.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    use base64::Engine as _;
    let patch = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    Some(serde_json::from_slice(&bytes).expect("the patch is a JSON Patch"))
}

/// `object` with the response's patch applied.
pub fn apply(object: &Value, response: &Value) -> Value {
    let mut out = object.clone();
    if let Some(patch) = patch_of(response) {
        json_patch::patch(&mut out, &patch).expect("the patch applies");
    }
    out
}

/// The value of one series in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub async fn metrics_text(server: &Running) -> String {
    server.client().await.get("/metrics").await.unwrap().text()
}

/// `GET path` over plain HTTP (the probe listener).
pub async fn plain_get(addr: SocketAddr, path: &str) -> Result<Answer> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}
