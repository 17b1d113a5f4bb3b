//! The `straddle-webhook` binary of this build as a child process on
//! loopback, and what `/proc` says about it (RSS, CPU time). Shared by the
//! load generator (`benches/load.rs`) and the soak test (`tests/soak.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::plain_get;

/// The binary as a child process, ready (its `/readyz` said 200).
pub struct ChildServer {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub probe_addr: SocketAddr,
    pub pid: u32,
    /// The server's own startup time, from its "ready" log line.
    pub startup_ms: f64,
}

impl ChildServer {
    /// Starts the binary as `cluster-0` on `dir`'s `policy.wasm`, `tls.crt`
    /// and `tls.key`, with `cache` as its `--cache-dir` and `extra` flags.
    pub async fn start(dir: &Path, cache: &Path, extra: &[String]) -> Result<ChildServer> {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_straddle-webhook"))
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
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("no pid")?;
        let stderr = child.stderr.take().context("no stderr")?;
        // The "ready" log line names the ports; then /readyz must say 200.
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let event = loop {
            let Some(line) = lines.next_line().await? else {
                bail!("the server exited before it was ready");
            };
            let event: Value = serde_json::from_str(&line).unwrap_or_default();
            if event["message"] == "ready" {
                break event;
            }
            if event["level"] == "ERROR" {
                bail!("the server failed: {line}");
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
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
            child,
            addr,
            probe_addr,
            pid,
            startup_ms: event["startup_ms"].as_f64().unwrap_or(f64::NAN),
        })
    }

    /// SIGTERM, then the exit status must be success within 30 s.
    pub async fn stop(mut self) -> Result<()> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "the server exited with {status}");
        Ok(())
    }
}

/// Resident set size and its high-water mark, in bytes (`/proc/<pid>/status`).
pub fn rss(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .context("no such field")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("value")?
            .parse::<u64>()?
            * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// The `q` quantile of sorted durations (nearest rank).
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
