//! The `straddle-webhook` binary as a process: refusing to start, JSON logs,
//! SIGTERM draining in-flight requests, fast restarts from the cache.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::modules::{Misbehaviour, misbehaving};
use common::*;
use rustix::process::Signal;
use serde_json::Value;

/// The binary under test, as a [`straddle_test_support::process::Process`]
/// (its own process group, killed with the test) with its JSON log in a file.
struct Process {
    process: straddle_test_support::process::Process,
}

/// Starts the binary with JSON logs on `dir`'s files and `extra` flags.
fn spawn(dir: &Path, cluster: &str, extra: &[&str]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_straddle-webhook"));
    command
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
        .args(extra);
    let log = dir.join("webhook.log");
    let _ = std::fs::remove_file(&log);
    let process =
        straddle_test_support::process::Process::spawn("straddle-webhook", command, &log).unwrap();
    Process { process }
}

impl Process {
    async fn ready(&mut self) -> (SocketAddr, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.log().iter().find_map(|line| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .filter(|event| event["message"] == "ready")
            });
            if let Some(event) = ready {
                return (event["listen"].as_str().unwrap().parse().unwrap(), event);
            }
            assert!(self.process.exited().is_none(), "exited: {:?}", self.log());
            assert!(Instant::now() < deadline, "not ready: {:?}", self.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the process to exit (its log is then complete).
    async fn exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "the process exits");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn signal(&self, signal: Signal) {
        self.process.signal(signal).unwrap();
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(&self.process.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn files(name: &str, module: &[u8]) -> Scratch {
    let dir = Scratch::new(name).unwrap();
    pki().write(dir.path());
    std::fs::write(dir.join("policy.wasm"), module).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_when_it_must_not_serve() {
    let dir = files("refuse", &compile(CP_TWO));
    // A cluster the policy does not know must not mutate anything.
    let mut p = spawn(dir.path(), "cluster-9", &[]);
    assert_eq!(p.exit().await.code(), Some(1));
    let log = p.log().join("\n");
    assert!(log.contains(r#"cluster \"cluster-9\" is not a member of stretch \"confluent-stretch\" (spec.clusters: cluster-0, cluster-1)"#), "{log}");

    // A key that does not belong to the certificate.
    let (_, other_key) = pki().server(7);
    std::fs::write(dir.join("tls.key"), other_key).unwrap();
    let mut p = spawn(dir.path(), "cluster-0", &[]);
    assert_eq!(p.exit().await.code(), Some(1));
    assert!(
        p.log()
            .join("\n")
            .contains("do not form a usable certificate and key"),
        "{:?}",
        p.log()
    );

    // No policy file.
    std::fs::remove_file(dir.join("policy.wasm")).unwrap();
    let mut p = spawn(dir.path(), "cluster-0", &[]);
    assert_eq!(p.exit().await.code(), Some(1));
    assert!(
        p.log().join("\n").contains("reading the policy"),
        "{:?}",
        p.log()
    );

    // A bad flag value.
    let mut p = spawn(dir.path(), "cluster-0", &["--policy-timeout", "soon"]);
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
        dir.path(),
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
    p.signal(Signal::TERM);
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
    let cache = dir.join("cache");
    let cache_arg = cache.to_str().unwrap();
    let mut times = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let mut p = spawn(dir.path(), "west", &["--cache-dir", cache_arg]);
        let (addr, event) = p.ready().await;
        let mut client = Client::connect(addr, pki().client_config(None, false))
            .await
            .unwrap();
        assert_eq!(client.get("/readyz").await.unwrap().status, 200);
        let to_ready = started.elapsed();
        times.push((event["startup_ms"].as_f64().unwrap(), to_ready));
        p.signal(Signal::TERM);
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
