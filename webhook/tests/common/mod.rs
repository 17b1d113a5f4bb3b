//! The webhook's own test harness: the real server in this process on
//! loopback (needs this crate's types), chart fixture documents, and
//! misbehaving modules. Everything else (PKI, HTTPS client, AdmissionReviews,
//! compiled specs, scratch directories) is `straddle-test-support`,
//! re-exported here.

#![allow(dead_code, unused_imports)]

pub mod modules;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use straddle_webhook::{App, Config, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use straddle_test_support::https::*;
pub use straddle_test_support::policy::{BITNAMI_THREE, CP_STAGE, CP_TWO};
pub use straddle_test_support::review::{apply, patch_of, review_for};
pub use straddle_test_support::scratch::Scratch;
pub use straddle_test_support::{fixture_json, root};

/// Compiled code of test modules, shared by every test binary and run (the
/// cache is keyed by module digest and engine configuration).
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webhook-cwasm-cache")
}

/// The policy module compiled from a spec (a path relative to the
/// repository root), in this process: the tests run right after the crates
/// they test were built, and the `straddle` binary may not be (the load
/// bench uses `straddle_test_support::policy::compile`, the binary).
pub fn compile(spec: &str) -> Vec<u8> {
    type Compiled = Vec<(String, Vec<u8>)>;
    static MODULES: OnceLock<Mutex<Compiled>> = OnceLock::new();
    let modules = MODULES.get_or_init(Default::default);
    if let Some((_, m)) = modules.lock().unwrap().iter().find(|(s, _)| s == spec) {
        return m.clone();
    }
    let text = std::fs::read_to_string(root().join(spec)).unwrap();
    let checked = straddle_compiler::check(spec, &text).unwrap_or_else(|r| panic!("{spec}:\n{r}"));
    let module = straddle_compiler::compile::module(&checked.topology).unwrap();
    modules
        .lock()
        .unwrap()
        .push((spec.to_owned(), module.clone()));
    module
}

/// Documents of a chart fixture's `rendered.yaml`.
pub fn fixture_docs(variant: &str) -> Vec<Value> {
    let path = root().join(format!("tests/fixtures/charts/{variant}/rendered.yaml"));
    straddle_compiler::manifest::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------- server

/// The real server, in this process, on a loopback port.
pub struct Running {
    pub addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    pub dir: Scratch,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Files for a test server: the policy and a certificate from [`pki`].
pub struct Setup {
    pub dir: Scratch,
    pub config: Config,
}

impl Setup {
    pub fn new(name: &str, cluster: &str, module: &[u8]) -> Setup {
        let dir = Scratch::new(name).unwrap();
        let (cert, key) = pki().write(dir.path());
        let policy = dir.join("policy.wasm");
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
        self.dir.join("policy.wasm")
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

pub async fn metrics_text(server: &Running) -> String {
    server.client().await.get("/metrics").await.unwrap().text()
}
