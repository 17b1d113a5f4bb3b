//! The `straddle-webhook` binary as a process: refusing to start, JSON logs,
//! SIGTERM draining in-flight requests, fast restarts from the cache.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::modules::{Misbehaviour, misbehaving};
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_straddle-webhook");

struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    ready: mpsc::UnboundedReceiver<Value>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the binary with JSON logs on `dir`'s files and `extra` flags.
fn spawn(dir: &Path, cluster: &str, extra: &[&str]) -> Process {
    let mut child = Command::new(BIN)
        .args([
            "--cluster",
            cluster,
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--policy")
        .arg(dir.join("policy.wasm"))
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, ready) = mpsc::unbounded_channel();
    let collected = lines.clone();
    let reader = tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["message"] == "ready"
            {
                let _ = tx.send(event);
            }
            collected.lock().unwrap().push(line);
        }
    });
    Process {
        child,
        lines,
        ready,
        reader: Some(reader),
    }
}

impl Process {
    async fn ready(&mut self) -> (SocketAddr, Value) {
        let event = tokio::time::timeout(Duration::from_secs(30), self.ready.recv())
            .await
            .unwrap_or_else(|_| panic!("not ready: {:?}", self.lines.lock().unwrap()))
            .unwrap_or_else(|| panic!("exited: {:?}", self.lines.lock().unwrap()));
        (event["listen"].as_str().unwrap().parse().unwrap(), event)
    }

    /// Waits for the process to exit and for its log to be read to the end.
    async fn exit(&mut self) -> std::process::ExitStatus {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the process exits")
            .unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
        }
        status
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn files(name: &str, module: &[u8]) -> TempDir {
    let dir = TempDir::new(name);
    pki().write(&dir.0);
    std::fs::write(dir.path("policy.wasm"), module).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_when_it_must_not_serve() {
    let dir = files("refuse", &compile(CP_TWO));
    // A cluster the policy does not know must not mutate anything.
    let mut p = spawn(&dir.0, "cluster-9", &[]);
    assert_eq!(p.exit().await.code(), Some(1));
    let log = p.log().join("\n");
    assert!(log.contains(r#"cluster \"cluster-9\" is not a member of stretch \"confluent-stretch\" (spec.clusters: cluster-0, cluster-1)"#), "{log}");

    // A key that does not belong to the certificate.
    let (_, other_key) = pki().server(7);
    std::fs::write(dir.path("tls.key"), other_key).unwrap();
    let mut p = spawn(&dir.0, "cluster-0", &[]);
    assert_eq!(p.exit().await.code(), Some(1));
    assert!(
        p.log()
            .join("\n")
            .contains("do not form a usable certificate and key"),
        "{:?}",
        p.log()
    );

    // No policy file.
    std::fs::remove_file(dir.path("policy.wasm")).unwrap();
    let mut p = spawn(&dir.0, "cluster-0", &[]);
    assert_eq!(p.exit().await.code(), Some(1));
    assert!(
        p.log().join("\n").contains("reading the policy"),
        "{:?}",
        p.log()
    );

    // A bad flag value.
    let mut p = spawn(&dir.0, "cluster-0", &["--policy-timeout", "soon"]);
    assert_eq!(p.exit().await.code(), Some(2));
}

/// SIGTERM: not ready at once, keep serving through --shutdown-delay, stop
/// accepting, finish in-flight requests, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    // StatefulSet reviews spin until the 400 ms deadline, then fail open:
    // slow requests that still succeed.
    let module = misbehaving(&compile(CP_TWO), Misbehaviour::Loop, true);
    let dir = files("sigterm", &module);
    let mut p = spawn(
        &dir.0,
        "cluster-0",
        &[
            "--policy-timeout",
            "400ms",
            "--on-policy-error",
            "allow",
            "--shutdown-delay",
            "300ms",
        ],
    );
    let (addr, _) = p.ready().await;
    let sts = fixture_json(
        "cp-zk-kafka-only",
        "statefulset-confluent-cp-zookeeper.json",
    );
    let mut in_flight = Vec::new();
    for i in 0..4 {
        let mut client = Client::connect(addr, pki().client_config(None, false))
            .await
            .unwrap();
        let review = review_for(&sts, "confluent", "CREATE", &format!("drain-{i}"));
        in_flight.push(tokio::spawn(async move {
            let started = Instant::now();
            (client.review(&review).await, started.elapsed())
        }));
    }
    let mut probe = Client::connect(addr, pki().client_config(None, false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = probe.get("/readyz").await.unwrap();
    assert_eq!(
        (ready.status.as_u16(), ready.text()),
        (503, "shutting down\n".to_owned())
    );

    for task in in_flight {
        let (result, took) = task.await.unwrap();
        let r = result.expect("an in-flight request survives SIGTERM");
        assert_eq!(r["allowed"], true, "{r}");
        assert!(
            r["warnings"][0].as_str().unwrap().contains("timeout"),
            "{r}"
        );
        assert!(took >= Duration::from_millis(350), "{took:?}");
    }
    assert!(p.exit().await.success());
    assert!(
        Client::connect(addr, pki().client_config(None, false))
            .await
            .is_err()
    );

    // Structured logs: every line is a JSON object.
    let log = p.log();
    for line in &log {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{line}"
        );
    }
    let messages: Vec<String> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    for expected in [
        "policy loaded",
        "ready",
        "SIGTERM received",
        "shutting down: not ready any more",
        "drained; bye",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected:?} not in {messages:?}"
        );
    }
    let errors = log
        .iter()
        .filter(|l| l.contains("\"policy error\""))
        .count();
    assert_eq!(errors, 4, "{log:?}");
}

/// A restart with the compiled module in --cache-dir skips compilation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_are_fast_with_a_cache_dir() {
    let dir = files("restart", &compile(BITNAMI_THREE));
    let cache = dir.path("cache");
    let cache_arg = cache.to_str().unwrap();
    let mut times = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let mut p = spawn(&dir.0, "west", &["--cache-dir", cache_arg]);
        let (addr, event) = p.ready().await;
        let mut client = Client::connect(addr, pki().client_config(None, false))
            .await
            .unwrap();
        assert_eq!(client.get("/readyz").await.unwrap().status, 200);
        let to_ready = started.elapsed();
        times.push((event["startup_ms"].as_f64().unwrap(), to_ready));
        p.signal("-TERM");
        assert!(p.exit().await.success());
    }
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "one compiled module in the cache"
    );
    eprintln!(
        "startup (ms, in-process) and spawn-to-ready: cold {:?}, cached {:?}",
        times[0], times[1]
    );
    assert!(
        times[1].0 < times[0].0,
        "the cached start is not faster: {times:?}"
    );
}
