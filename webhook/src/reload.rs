//! Hot reload of the TLS files, by polling; [`Stamp`] is also how the
//! policy file is watched (`source.rs`).
//!
//! Every `--reload-interval` the files are `stat`ed (following symlinks, so
//! a Kubernetes Secret volume's `..data` swap shows up as a new inode).
//! Polling works the same on every filesystem and volume type and costs a
//! few system calls per interval. Certificate, key and client CA are read
//! together; a state that does not form a usable configuration (say the new
//! certificate with the old key, between two writes) is logged once and
//! retried every tick until it does, while the old configuration keeps
//! serving.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::watch;
use tracing::{error, info};

use crate::app::App;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::tls;

/// What `stat` says about a file; any change means "look again".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    ctime: (i64, i64),
    inode: (u64, u64),
}

impl Stamp {
    pub fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            inode: (meta.dev(), meta.ino()),
        })
    }
}

/// The stamps of the TLS files (certificate, key, client CA), taken before
/// they were last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsStamps(Option<Stamp>, Option<Stamp>, Option<Stamp>);

impl TlsStamps {
    pub fn read(config: &Config) -> TlsStamps {
        TlsStamps(
            Stamp::of(&config.tls_cert),
            Stamp::of(&config.tls_key),
            config.client_ca.as_deref().and_then(Stamp::of),
        )
    }
}

/// The TLS reload task: runs until `stopped` flips.
pub async fn run(
    config: Config,
    tls: Arc<ArcSwap<ServerConfig>>,
    stamps: TlsStamps,
    app: Arc<App>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut certs = TlsWatch {
        applied: stamps,
        failing: None,
    };
    let mut tick = tokio::time::interval(config.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        certs.check(&config, &tls, &app.metrics);
    }
}

struct TlsWatch {
    applied: TlsStamps,
    /// The file state that last failed, so it is reported once.
    failing: Option<TlsStamps>,
}

impl TlsWatch {
    fn check(&mut self, config: &Config, tls: &ArcSwap<ServerConfig>, metrics: &Metrics) {
        let now = TlsStamps::read(config);
        if now == self.applied {
            return;
        }
        match tls::server_config(
            &config.tls_cert,
            &config.tls_key,
            config.client_ca.as_deref(),
        ) {
            Ok(server_config) if TlsStamps::read(config) == now => {
                tls.store(Arc::new(server_config));
                self.applied = now;
                self.failing = None;
                Metrics::reload(&metrics.tls_reloads, true);
                info!(cert = %config.tls_cert.display(), "TLS certificate reloaded");
            }
            Ok(_) => {} // changed while reading: next tick
            Err(e) => {
                if self.failing.as_ref() != Some(&now) {
                    error!(
                        error = format!("{e:#}"),
                        "new TLS files are not usable (yet); still serving the previous certificate"
                    );
                    Metrics::reload(&metrics.tls_reloads, false);
                    self.failing = Some(now);
                }
            }
        }
    }
}
