//! Where the policy comes from, and the one loop that follows it.
//!
//! `--policy PATH` is a file, `--policy oci://REGISTRY/REPO@sha256:…` (or
//! `:TAG`) a registry bundle; both are a [`PolicySource`], parsed once at
//! startup. [`watch`] asks the source every interval whether its module
//! changed; a new module is loaded and validated on a blocking thread while
//! the current one keeps serving, then swapped in ([`install`]). A refused
//! module is logged, counted and remembered by its key (the module digest of
//! a file, the manifest digest of a bundle), and not retried until the
//! source moves on.
//!
//! * File: `stat`ed every `--reload-interval` (following symlinks, so a
//!   ConfigMap volume's `..data` swap shows up as a new inode); a file still
//!   being written is retried on the next tick.
//! * Registry: every byte is checked against its digest (manifest, layer,
//!   signature payloads); with `--verify-key`, a bundle without a valid
//!   signature by that key is refused before it is ever loaded. Verified
//!   bundles are kept under `--cache-dir` by manifest digest, with the
//!   signatures they passed, and a tag's last digest is remembered: the
//!   webhook starts and serves from the cache while the registry is down.
//!   Cached bundles are checked (digests, signatures) again when read. A
//!   pinned digest never changes, so it is fetched once; a tag is resolved
//!   every `--policy-poll-interval`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use straddle_oci::cache::Cached;
use straddle_oci::signature::{self, VerifyingKey};
use straddle_oci::{Cache, PolicyRef, Registry};
use straddle_policy::digest::sha256;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::app::App;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{Loaded, Loader};
use crate::reload::Stamp;

/// Where `--policy` points.
pub enum PolicySource {
    File(FileSource),
    // Boxed: a registry client is large next to a path and a stamp.
    Oci(Box<OciSource>),
}

/// The module a source starts with, and its key (see [`watch`]).
pub struct Initial {
    pub module: Vec<u8>,
    pub key: String,
}

impl PolicySource {
    pub fn from_config(config: &Config) -> Result<PolicySource> {
        let text = config.policy.to_string_lossy();
        if PolicyRef::is_oci_url(&text) {
            return Ok(PolicySource::Oci(Box::new(OciSource::from_config(
                config, &text,
            )?)));
        }
        if config.verify_key.is_some() {
            return Err(anyhow!(
                "--verify-key checks bundles from a registry; --policy {text} is a file \
                 (use --policy oci://REGISTRY/REPO@sha256:…)"
            ));
        }
        Ok(PolicySource::File(FileSource {
            path: config.policy.clone(),
            seen: None,
            missing_reported: false,
            pending: None,
        }))
    }

    /// The module to start with; an error stops the webhook.
    pub async fn initial(&mut self) -> Result<Initial> {
        match self {
            PolicySource::File(file) => {
                // Stamped before reading: a write during startup is seen.
                file.seen = Stamp::of(&file.path);
                let module = std::fs::read(&file.path)
                    .with_context(|| format!("reading the policy {}", file.path.display()))?;
                Ok(Initial {
                    key: sha256(&module),
                    module,
                })
            }
            PolicySource::Oci(oci) => {
                let fetched = oci
                    .initial()
                    .await
                    .with_context(|| format!("fetching the policy oci://{}", oci.reference))?;
                info!(
                    reference = %oci.reference,
                    digest = %fetched.manifest_digest,
                    from = ?fetched.origin,
                    verified = oci.verify_key.is_some(),
                    "policy bundle fetched"
                );
                Ok(Initial {
                    module: fetched.module,
                    key: fetched.manifest_digest,
                })
            }
        }
    }

    /// How often to look for a change; `None`: never (a pinned digest).
    pub fn interval(&self, config: &Config) -> Option<Duration> {
        match self {
            PolicySource::File(_) => Some(config.reload_interval),
            PolicySource::Oci(oci) => oci.is_tag().then_some(config.policy_poll_interval),
        }
    }

    /// The key of what the source holds now, if it can tell (else: next tick).
    async fn look(&mut self, current: &str) -> Option<String> {
        match self {
            PolicySource::File(file) => file.look(),
            PolicySource::Oci(oci) => oci.look(current).await,
        }
    }

    /// The module with this key and a label for the logs; `Ok(None)`: not
    /// yet (ask again next tick, without refusing it).
    async fn module(&mut self, key: &str, current: &str) -> Result<Option<(Vec<u8>, String)>> {
        match self {
            PolicySource::File(file) => Ok(file
                .pending
                .take()
                .map(|module| (module, file.path.display().to_string()))),
            PolicySource::Oci(oci) => oci.module(key, current).await,
        }
    }

    /// The module with this key now serves.
    fn installed(&mut self, key: &str, previous: &str) {
        if let PolicySource::Oci(oci) = self {
            oci.installed(key, previous);
        }
    }

    fn label(&self) -> String {
        match self {
            PolicySource::File(file) => file.path.display().to_string(),
            PolicySource::Oci(oci) => format!("oci://{}", oci.reference),
        }
    }
}

/// `--policy PATH`.
pub struct FileSource {
    path: PathBuf,
    /// The stamp of the file when it was last read.
    seen: Option<Stamp>,
    missing_reported: bool,
    /// The bytes read by the last `look`, for `module`.
    pending: Option<Vec<u8>>,
}

impl FileSource {
    fn look(&mut self) -> Option<String> {
        let path = &self.path;
        let Some(before) = Stamp::of(path) else {
            if !self.missing_reported {
                warn!(path = %path.display(), "the policy file is gone; still serving the loaded policy");
                self.missing_reported = true;
            }
            return None;
        };
        self.missing_reported = false;
        if self.seen.as_ref() == Some(&before) {
            return None;
        }
        // Vanished between stat and read, or still being written: next tick.
        let bytes = std::fs::read(path).ok()?;
        if Stamp::of(path).as_ref() != Some(&before) {
            return None;
        }
        self.seen = Some(before);
        let key = sha256(&bytes);
        self.pending = Some(bytes);
        Some(key)
    }
}

/// Follows `source` every `interval` until `stopped` flips, installing each
/// new module; `current` is the key of the module serving.
pub async fn watch(
    mut source: PolicySource,
    mut current: String,
    interval: Duration,
    loader: Arc<Loader>,
    app: Arc<App>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut rejected: Option<String> = None;
    // Startup just read the source: the first look is one interval later.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let Some(key) = source.look(&current).await else {
            continue;
        };
        if key == current || rejected.as_deref() == Some(key.as_str()) {
            continue;
        }
        match source.module(&key, &current).await {
            Ok(Some((module, label))) => {
                if install(&loader, &app, module, &label).await {
                    source.installed(&key, &current);
                    current = key;
                    rejected = None;
                } else {
                    rejected = Some(key);
                }
            }
            Ok(None) => {}
            Err(e) => {
                error!(
                    source = %source.label(),
                    digest = %key,
                    error = format!("{e:#}"),
                    "new policy refused; still serving {current}"
                );
                Metrics::reload(&app.metrics.policy_reloads, false);
                rejected = Some(key);
            }
        }
    }
}

/// Loads and validates `module` on a blocking thread.
pub async fn load(loader: &Arc<Loader>, module: Vec<u8>) -> Result<Loaded> {
    let loader = loader.clone();
    tokio::task::spawn_blocking(move || loader.load(&module))
        .await
        .context("the policy loader panicked")?
}

/// Loads and validates `module` (from `source`, for the logs) while the
/// current policy keeps serving, then swaps it in. Logs and counts the
/// outcome; false if the module was refused.
pub async fn install(loader: &Arc<Loader>, app: &App, module: Vec<u8>, source: &str) -> bool {
    let digest = sha256(&module);
    let current = app.active.get();
    match load(loader, module).await {
        Ok(loaded) => {
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
        Err(e) => {
            error!(
                digest = %digest,
                source,
                error = format!("{e:#}"),
                "new policy refused; still serving the previous one"
            );
            Metrics::reload(&app.metrics.policy_reloads, false);
            false
        }
    }
}

/// Where a module came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Registry,
    Cache,
}

/// A module whose bundle passed every check.
pub struct Fetched {
    pub manifest_digest: String,
    pub module: Vec<u8>,
    pub origin: Origin,
}

/// A bundle with no signature at all, while `--verify-key` wants one. Not
/// remembered as refused by the poller: `straddle push` then `straddle
/// sign` (or cosign) moves the tag before the signature exists.
#[derive(Debug)]
pub struct NotSigned(pub String);

impl std::fmt::Display for NotSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bundle {} is not signed (no {}.sig); sign it with `straddle sign REF --key KEY` (or `cosign sign --key`)",
            self.0,
            self.0.replacen(':', "-", 1)
        )
    }
}

impl std::error::Error for NotSigned {}

/// The registry source of the policy.
pub struct OciSource {
    pub reference: PolicyRef,
    registry: Registry,
    cache: Option<Cache>,
    verify_key: Option<VerifyingKey>,
    /// The registry failed the last resolve (reported once).
    failing: bool,
    /// An unsigned digest the tag points at (reported once, retried).
    waiting_for_signature: Option<String>,
    /// When the bundle being fetched was asked for.
    fetch_started: Option<Instant>,
}

impl OciSource {
    /// The registry source of `--policy oci://…` (`text`).
    fn from_config(config: &Config, text: &str) -> Result<OciSource> {
        let reference = PolicyRef::parse(text).context("--policy")?;
        let verify_key = match &config.verify_key {
            Some(path) => Some(read_public_key(path)?),
            None => None,
        };
        let registry = Registry::connect(&config.registry.connection(), &reference)?;
        Ok(OciSource {
            reference,
            registry,
            cache: config.cache_dir.as_deref().map(Cache::new),
            verify_key,
            failing: false,
            waiting_for_signature: None,
            fetch_started: None,
        })
    }

    /// Whether the reference can change (a tag) and so is polled.
    pub fn is_tag(&self) -> bool {
        self.reference.digest().is_none()
    }

    /// The module to start with: a pinned digest from the cache without
    /// touching the network; otherwise the registry, falling back to the
    /// cached bundle the tag last resolved to when the registry fails.
    pub async fn initial(&self) -> Result<Fetched> {
        if let Some(digest) = self.reference.digest() {
            if let Some(fetched) = self.cached_bundle(digest) {
                return Ok(fetched);
            }
            return self.fetch(digest).await;
        }
        let from_registry = async {
            let digest = self.registry.resolve(&self.reference).await?;
            let fetched = self.fetch(&digest).await?;
            self.remember_tag(&digest);
            anyhow::Ok(fetched)
        };
        match from_registry.await {
            Ok(fetched) => Ok(fetched),
            Err(e) => {
                let cached = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.tag(&self.reference))
                    .and_then(|digest| self.cached_bundle(&digest));
                match cached {
                    Some(fetched) => {
                        warn!(
                            reference = %self.reference,
                            digest = %fetched.manifest_digest,
                            error = format!("{e:#}"),
                            "registry unavailable; starting with the cached bundle this tag last resolved to"
                        );
                        Ok(fetched)
                    }
                    None => Err(e.context(match &self.cache {
                        Some(_) => "no cached bundle for this tag either",
                        None => "and no --cache-dir to fall back on",
                    })),
                }
            }
        }
    }

    /// The bundle with this manifest digest: from the cache if it is there
    /// and still checks out, else from the registry (then cached).
    pub async fn fetch(&self, manifest_digest: &str) -> Result<Fetched> {
        if let Some(fetched) = self.cached_bundle(manifest_digest) {
            return Ok(fetched);
        }
        let pinned = self.reference.pinned(manifest_digest);
        // Signatures first: they name the manifest digest, so a bundle that
        // is not signed (yet) costs one request, not a download.
        let signatures = match &self.verify_key {
            Some(key) => {
                let signatures = self.registry.signatures(&pinned, manifest_digest).await?;
                if signatures.is_empty() {
                    return Err(anyhow::Error::new(NotSigned(manifest_digest.to_owned())))
                        .with_context(|| format!("refusing {pinned}"));
                }
                signature::verify(key, &signatures, manifest_digest)
                    .with_context(|| format!("refusing {pinned}"))?;
                signatures
            }
            None => Vec::new(),
        };
        let pulled = self.registry.pull(&pinned).await?;
        if let Some(cache) = &self.cache
            && let Err(e) = cache.store(
                manifest_digest,
                &pulled.manifest,
                &pulled.module,
                &signatures,
            )
        {
            warn!(
                error = format!("{e:#}"),
                "cannot cache the bundle; serving it anyway"
            );
        }
        Ok(Fetched {
            manifest_digest: pulled.manifest_digest,
            module: pulled.module,
            origin: Origin::Registry,
        })
    }

    /// Remembers what the tag resolved to, for a start while the registry is down.
    fn remember_tag(&self, digest: &str) {
        if let (Some(cache), true) = (&self.cache, self.is_tag())
            && let Err(e) = cache.remember_tag(&self.reference, digest)
        {
            warn!(error = format!("{e:#}"), "cannot remember the tag's digest");
        }
    }

    /// A cached bundle that still passes every check (with `--verify-key`,
    /// its stored signatures too); a damaged one is logged and ignored.
    fn cached_bundle(&self, manifest_digest: &str) -> Option<Fetched> {
        let cache = self.cache.as_ref()?;
        let checked = cache.load(manifest_digest).and_then(|cached| match cached {
            Some(cached) => self.check_cached(cached).map(Some),
            None => Ok(None),
        });
        match checked {
            Ok(Some(cached)) => Some(Fetched {
                manifest_digest: cached.manifest_digest,
                module: cached.module,
                origin: Origin::Cache,
            }),
            Ok(None) => None,
            Err(e) => {
                warn!(
                    digest = manifest_digest,
                    error = format!("{e:#}"),
                    "ignoring the cached bundle"
                );
                None
            }
        }
    }

    /// What the tag points at now; a registry failure is reported once.
    async fn look(&mut self, current: &str) -> Option<String> {
        match self.registry.resolve(&self.reference).await {
            Ok(digest) => {
                if self.failing {
                    info!(reference = %self.reference, "the registry answers again");
                    self.failing = false;
                }
                Some(digest)
            }
            Err(e) => {
                if !self.failing {
                    warn!(reference = %self.reference, error = format!("{e:#}"),
                        "cannot resolve the policy tag; still serving {current}");
                    self.failing = true;
                }
                None
            }
        }
    }

    /// The verified module of `digest`; an unsigned bundle is waited for
    /// (the signature may follow the push), not refused.
    async fn module(&mut self, digest: &str, current: &str) -> Result<Option<(Vec<u8>, String)>> {
        self.fetch_started = Some(Instant::now());
        match self.fetch(digest).await {
            Ok(fetched) => Ok(Some((
                fetched.module,
                format!("oci://{}", self.reference.pinned(digest)),
            ))),
            Err(e) if e.downcast_ref::<NotSigned>().is_some() => {
                if self.waiting_for_signature.as_deref() != Some(digest) {
                    warn!(
                        reference = %self.reference,
                        digest = %digest,
                        error = format!("{e:#}"),
                        "the tag points at an unsigned bundle; still serving {current} until it is signed"
                    );
                    self.waiting_for_signature = Some(digest.to_owned());
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn installed(&mut self, digest: &str, previous: &str) {
        info!(
            reference = %self.reference,
            digest = %digest,
            previous = %previous,
            fetch_ms = self.fetch_started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3),
            "the policy tag moved; new bundle serving"
        );
        self.remember_tag(digest);
    }

    fn check_cached(&self, cached: Cached) -> Result<Cached> {
        if let Some(key) = &self.verify_key {
            signature::verify(key, &cached.signatures, &cached.manifest_digest)
                .context("the cached bundle's signatures do not verify with --verify-key")?;
        }
        Ok(cached)
    }
}

fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("--verify-key {}", path.display()))?;
    VerifyingKey::from_pem(&pem).with_context(|| format!("--verify-key {}", path.display()))
}
