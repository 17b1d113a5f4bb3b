//! `straddle-webhook`: see the crate documentation and `--help`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use straddle_webhook::{Config, LogFormat, Server};
use tracing::{error, info};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let started = Instant::now();
    let config = Config::parse();
    if let Err(e) = init_logging(&config) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(config, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "straddle-webhook stopped");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) -> Result<()> {
    let filter: Targets = config
        .log
        .parse()
        .with_context(|| format!("--log {:?} is not a log filter", config.log))?;
    let registry = tracing_subscriber::registry().with(filter);
    match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    }
    .context("installing the logger")
}

fn run(config: Config, started: Instant) -> Result<()> {
    // Connections are served on their own threads (`workers`); this runtime
    // accepts them and runs the watchers, reloads and policy loads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_name("straddle-webhook")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Listen for signals before anything can report ready: one that
        // arrives before the shutdown future is first polled would otherwise
        // kill the process with the default action, without draining.
        let shutdown = shutdown_signal();
        // With --self-managed-certs: the certificate files exist before bind.
        let cert_renewal = straddle_webhook::certs_kube::start(&config).await?;
        let server = Server::bind(config).await?;
        info!(
            listen = %server.local_addr(),
            probe_listen = server.probe_addr().map(|a| a.to_string()).unwrap_or_default(),
            startup_ms = started.elapsed().as_secs_f64() * 1e3,
            version = env!("CARGO_PKG_VERSION"),
            "ready"
        );
        let result = server.run(shutdown).await;
        if let Some(task) = cert_renewal {
            task.abort();
        }
        result
    })
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C). The handlers are installed when
/// this is called, not when the future is first polled.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = int.recv() => info!("SIGINT received"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                error!(error = %e, "cannot listen for SIGTERM/SIGINT; stopping only when killed");
                std::future::pending::<()>().await;
            }
        }
    }
}
