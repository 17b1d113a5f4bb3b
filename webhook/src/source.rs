//! `--policy oci://REGISTRY/REPO@sha256:…` (or `:TAG`): the policy comes
//! from an OCI registry instead of a file.
//!
//! * Every byte is checked against its digest (manifest, layer, signature
//!   payloads); with `--verify-key`, a bundle without a valid signature by
//!   that key is refused before it is ever loaded.
//! * Verified bundles are kept under `--cache-dir` by manifest digest, with
//!   the signatures they passed, and a tag's last digest is remembered: the
//!   webhook starts and serves from the cache while the registry is down.
//!   Cached bundles are checked (digests, signatures) again when read.
//! * A pinned digest never changes, so it is fetched once. A tag is
//!   resolved every `--policy-poll-interval`; a new digest goes through the
//!   same load-validate-swap path as a new policy file (`reload::install`),
//!   and a refused digest is remembered and not retried.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use straddle_oci::cache::Cached;
use straddle_oci::signature::{self, VerifyingKey};
use straddle_oci::{Cache, PolicyRef, Registry};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::Loader;
use crate::reload;
use crate::server::App;

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
}

impl OciSource {
    /// The source `--policy` names, or `None` for a file.
    pub fn from_config(config: &Config) -> Result<Option<OciSource>> {
        let text = config.policy.to_string_lossy();
        if !PolicyRef::is_oci_url(&text) {
            if config.verify_key.is_some() {
                return Err(anyhow!(
                    "--verify-key checks bundles from a registry; --policy {text} is a file \
                     (use --policy oci://REGISTRY/REPO@sha256:…)"
                ));
            }
            return Ok(None);
        }
        let reference = PolicyRef::parse(&text).context("--policy")?;
        let verify_key = match &config.verify_key {
            Some(path) => Some(read_public_key(path)?),
            None => None,
        };
        let registry = Registry::connect(&config.registry.connection(), &reference)?;
        Ok(Some(OciSource {
            reference,
            registry,
            cache: config.cache_dir.as_deref().map(Cache::new),
            verify_key,
        }))
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

/// Polls a tag every `interval` until `stopped` flips; a new digest is
/// fetched, verified and installed while the current policy keeps serving.
pub async fn poll(
    source: Arc<OciSource>,
    mut current: String,
    interval: Duration,
    loader: Arc<Loader>,
    app: Arc<App>,
    mut stopped: watch::Receiver<bool>,
) {
    if !source.is_tag() {
        return;
    }
    let mut rejected: Option<String> = None;
    let mut waiting_for_signature: Option<String> = None;
    let mut failing = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: startup just resolved it
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let digest = match source.registry.resolve(&source.reference).await {
            Ok(digest) => digest,
            Err(e) => {
                if !failing {
                    warn!(reference = %source.reference, error = format!("{e:#}"),
                        "cannot resolve the policy tag; still serving {current}");
                    failing = true;
                }
                continue;
            }
        };
        if failing {
            info!(reference = %source.reference, "the registry answers again");
            failing = false;
        }
        if digest == current || rejected.as_deref() == Some(digest.as_str()) {
            continue;
        }
        let started = Instant::now();
        match source.fetch(&digest).await {
            Ok(fetched) => {
                let label = format!("oci://{}", source.reference.pinned(&digest));
                if reload::install(&loader, &app, fetched.module, &label).await {
                    info!(
                        reference = %source.reference,
                        digest = %digest,
                        previous = %current,
                        fetch_ms = started.elapsed().as_secs_f64() * 1e3,
                        "the policy tag moved; new bundle serving"
                    );
                    source.remember_tag(&digest);
                    current = digest;
                    rejected = None;
                } else {
                    rejected = Some(digest);
                }
            }
            Err(e) if e.downcast_ref::<NotSigned>().is_some() => {
                // Retried every poll: the signature may follow the push.
                if waiting_for_signature.as_deref() != Some(digest.as_str()) {
                    warn!(
                        reference = %source.reference,
                        digest = %digest,
                        error = format!("{e:#}"),
                        "the tag points at an unsigned bundle; still serving {current} until it is signed"
                    );
                    waiting_for_signature = Some(digest);
                }
            }
            Err(e) => {
                error!(
                    reference = %source.reference,
                    digest = %digest,
                    error = format!("{e:#}"),
                    "new bundle refused; still serving {current}"
                );
                Metrics::reload(&app.metrics.policy_reloads, false);
                rejected = Some(digest);
            }
        }
    }
}
