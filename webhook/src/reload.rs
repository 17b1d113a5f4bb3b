//! Hot reload of the policy module and the TLS files, by polling.
//!
//! Every `--reload-interval` the files are `stat`ed (following symlinks, so
//! a Kubernetes Secret or ConfigMap volume's `..data` swap shows up as a new
//! inode). Polling works the same on every filesystem and volume type and
//! costs a few system calls per interval.
//!
//! * Policy: a changed file is read (and re-`stat`ed: a file still being
//!   written is retried on the next tick), hashed, loaded and validated on a
//!   blocking thread while the old policy keeps serving, then swapped in. A
//!   module that fails is logged, counted and remembered by digest, so it is
//!   not retried until the file changes again.
//! * TLS: certificate, key and client CA are read together; a state that
//!   does not form a usable configuration (say the new certificate with the
//!   old key, between two writes) is logged once and retried every tick
//!   until it does, while the old configuration keeps serving.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::Loader;
use crate::server::App;
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

/// The stamps of every watched file, taken before they were last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamps {
    policy: Option<Stamp>,
    tls: TlsStamps,
}

type TlsStamps = (Option<Stamp>, Option<Stamp>, Option<Stamp>);

impl Stamps {
    pub fn read(config: &Config) -> Stamps {
        Stamps {
            policy: Stamp::of(&config.policy),
            tls: tls_stamps(config),
        }
    }
}

fn tls_stamps(config: &Config) -> TlsStamps {
    (
        Stamp::of(&config.tls_cert),
        Stamp::of(&config.tls_key),
        config.client_ca.as_deref().and_then(Stamp::of),
    )
}

pub fn sha256(bytes: &[u8]) -> String {
    let mut out = String::from("sha256:");
    for b in Sha256::digest(bytes) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The reload task: runs until `stopped` flips.
pub async fn run(
    config: Config,
    loader: Arc<Loader>,
    app: Arc<App>,
    tls: Arc<ArcSwap<ServerConfig>>,
    stamps: Stamps,
    mut stopped: watch::Receiver<bool>,
) {
    let mut policy = PolicyWatch {
        seen: stamps.policy,
        rejected: None,
        missing_reported: false,
    };
    let mut certs = TlsWatch {
        applied: stamps.tls,
        failing: None,
    };
    let mut tick = tokio::time::interval(config.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        if !straddle_oci::PolicyRef::is_oci_url(&config.policy.to_string_lossy()) {
            policy.check(&config, &loader, &app).await;
        }
        certs.check(&config, &tls, &app.metrics);
    }
}

struct PolicyWatch {
    /// The stamp of the file when it was last read.
    seen: Option<Stamp>,
    /// The digest of the last module refused, not retried until it changes.
    rejected: Option<String>,
    missing_reported: bool,
}

impl PolicyWatch {
    async fn check(&mut self, config: &Config, loader: &Arc<Loader>, app: &App) {
        let path = &config.policy;
        let Some(before) = Stamp::of(path) else {
            if !self.missing_reported {
                warn!(path = %path.display(), "the policy file is gone; still serving the loaded policy");
                self.missing_reported = true;
            }
            return;
        };
        self.missing_reported = false;
        if self.seen.as_ref() == Some(&before) {
            return;
        }
        let Ok(bytes) = std::fs::read(path) else {
            return; // vanished between stat and read: next tick
        };
        if Stamp::of(path).as_ref() != Some(&before) {
            return; // still being written: next tick
        }
        self.seen = Some(before);
        let digest = sha256(&bytes);
        let current = app.active.get();
        if current.as_ref().is_some_and(|p| p.digest() == digest)
            || self.rejected.as_deref() == Some(digest.as_str())
        {
            return;
        }
        if install(loader, app, bytes, &path.display().to_string()).await {
            self.rejected = None;
        } else {
            self.rejected = Some(digest);
        }
    }
}

/// Loads and validates `bytes` (from `source`, for the logs) on a blocking
/// thread while the current policy keeps serving, then swaps it in. Logs and
/// counts the outcome; false if the module was refused.
pub async fn install(loader: &Arc<Loader>, app: &App, bytes: Vec<u8>, source: &str) -> bool {
    let digest = sha256(&bytes);
    let current = app.active.get();
    let loading = loader.clone();
    let result = tokio::task::spawn_blocking(move || loading.load(&bytes)).await;
    match result {
        Ok(Ok(loaded)) => {
            info!(
                digest = %digest,
                source,
                previous = current.as_ref().map(|p| p.digest()).unwrap_or(""),
                stretch = %loaded.policy.bundle().name,
                spec_digest = %loaded.policy.bundle().spec_digest,
                load_ms = loaded.load_time.as_secs_f64() * 1e3,
                "policy reloaded"
            );
            app.active.swap(loaded, &app.metrics);
            Metrics::reload(&app.metrics.policy_reloads, true);
            true
        }
        Ok(Err(e)) => {
            error!(
                digest = %digest,
                source,
                error = format!("{e:#}"),
                "new policy refused; still serving the previous one"
            );
            Metrics::reload(&app.metrics.policy_reloads, false);
            false
        }
        Err(e) => {
            error!(error = %e, source, "the policy loader panicked; still serving the previous policy");
            Metrics::reload(&app.metrics.policy_reloads, false);
            false
        }
    }
}

struct TlsWatch {
    applied: TlsStamps,
    /// The file state that last failed, so it is reported once.
    failing: Option<TlsStamps>,
}

impl TlsWatch {
    fn check(&mut self, config: &Config, tls: &ArcSwap<ServerConfig>, metrics: &Metrics) {
        let now = tls_stamps(config);
        if now == self.applied {
            return;
        }
        match tls::server_config(
            &config.tls_cert,
            &config.tls_key,
            config.client_ca.as_deref(),
        ) {
            Ok(server_config) if tls_stamps(config) == now => {
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
