//! The `straddle-webhook` binary of this build as a child process on
//! loopback (a [`Process`]: its own process group, killed with the test).
//! Shared by the load generator (`webhook/benches/load.rs`) and the soak
//! test (`webhook/tests/soak.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::Signal;
use serde_json::Value;

use crate::https::plain_get;
use crate::process::{Process, workspace_binary};
pub use crate::stats::{cpu_seconds, mib, ms, quantile, rss};

/// The binary as a child process, ready (its `/readyz` said 200).
pub struct ChildServer {
    process: Process,
    pub addr: SocketAddr,
    pub probe_addr: SocketAddr,
    pub pid: u32,
    /// The server's own startup time, from its "ready" log line.
    pub startup_ms: f64,
}

impl ChildServer {
    /// Starts the binary as `cluster-0` on `dir`'s `policy.wasm`, `tls.crt`
    /// and `tls.key`, with `cache` as its `--cache-dir` and `extra` flags;
    /// its JSON log goes to `dir/webhook.log`.
    pub async fn start(dir: &Path, cache: &Path, extra: &[String]) -> Result<ChildServer> {
        let mut command = Command::new(workspace_binary("straddle-webhook", "straddle-webhook")?);
        command
            .args([
                "--cluster",
                "cluster-0",
                "--listen",
                "127.0.0.1:0",
                "--probe-listen",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json", "--log", "info"])
            .arg("--policy")
            .arg(dir.join("policy.wasm"))
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .arg("--cache-dir")
            .arg(cache)
            .args(extra);
        let log = dir.join("webhook.log");
        let _ = std::fs::remove_file(&log);
        let mut process = Process::spawn("straddle-webhook", command, &log)?;
        let pid = process.pid();
        // The "ready" log line names the ports; then /readyz must say 200.
        let event = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let mut ready = None;
            for line in text.lines() {
                let event: Value = serde_json::from_str(line).unwrap_or_default();
                if event["message"] == "ready" {
                    ready = Some(event);
                    break;
                }
                if event["level"] == "ERROR" {
                    bail!("the server failed: {line}");
                }
            }
            if let Some(event) = ready {
                break event;
            }
            if process.exited().is_some() {
                bail!(
                    "the server exited before it was ready:\n{}",
                    process.log_tail(4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let addr: SocketAddr = event["listen"].as_str().context("listen")?.parse()?;
        let probe_addr: SocketAddr = event["probe_listen"]
            .as_str()
            .context("probe_listen")?
            .parse()?;
        while plain_get(probe_addr, "/readyz")
            .await
            .ok()
            .map(|a| a.status.as_u16())
            != Some(200)
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Ok(ChildServer {
            process,
            addr,
            probe_addr,
            pid,
            startup_ms: event["startup_ms"].as_f64().unwrap_or(f64::NAN),
        })
    }

    /// SIGTERM, then the exit status must be success within 30 s.
    pub async fn stop(mut self) -> Result<()> {
        self.process.signal(Signal::TERM)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.process.exited() {
                break status;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the server did not exit within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        anyhow::ensure!(status.success(), "the server exited with {status}");
        Ok(())
    }
}
