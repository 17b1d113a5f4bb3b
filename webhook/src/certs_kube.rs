//! Self-managed certificates, the I/O part: read and update the Secret,
//! patch the `caBundle` of the webhook's own MutatingWebhookConfiguration,
//! and write the serving certificate and key where the hot-reload path
//! (`--tls-cert`, `--tls-key`) picks them up.
//!
//! Needs exactly: `get`/`update` on the one Secret, `get`/`patch` on the one
//! MutatingWebhookConfiguration (RBAC with `resourceNames`; the chart creates
//! the empty Secret, so no `create`). Replicas share the Secret: updates
//! carry the `resourceVersion` they read, and the loser of a race rereads.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::certs::{self, CertSet, Identity, Lifetimes, Renewal};

/// Flags of self-managed certificates (flattened into [`crate::Config`]).
#[derive(Args, Clone, Debug, Default)]
pub struct SelfManagedCerts {
    /// Make and rotate the serving certificate here instead of reading one
    /// made elsewhere (cert-manager): a CA and a certificate for
    /// --service-name are kept in --cert-secret, the CA is written into the
    /// caBundle of --webhook-config, and the certificate and key are written
    /// to --tls-cert and --tls-key (which must be in a writable directory).
    #[arg(
        long,
        env = "STRADDLE_SELF_MANAGED_CERTS",
        requires_all = ["cert_secret", "webhook_config", "service_name"]
    )]
    pub self_managed_certs: bool,

    /// The Secret holding the CA and serving certificate (it must exist; the
    /// chart creates it empty).
    #[arg(long, env = "STRADDLE_CERT_SECRET")]
    pub cert_secret: Option<String>,

    /// The MutatingWebhookConfiguration whose caBundle to keep current.
    #[arg(long, env = "STRADDLE_WEBHOOK_CONFIG")]
    pub webhook_config: Option<String>,

    /// The Service the API server calls the webhook through; the serving
    /// certificate names `<service>.<namespace>.svc` and its variants.
    #[arg(long, env = "STRADDLE_SERVICE_NAME")]
    pub service_name: Option<String>,

    /// Namespace of the Secret and the Service (default: the pod's own, from
    /// the service account).
    #[arg(long, env = "STRADDLE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Lifetime of a new CA (renewed at two thirds of it).
    #[arg(long, env = "STRADDLE_CA_VALIDITY", default_value = "1825d", value_parser = certs::parse_lifetime)]
    pub ca_validity: Duration,

    /// Lifetime of a new serving certificate (renewed at two thirds of it).
    #[arg(long, env = "STRADDLE_CERT_VALIDITY", default_value = "90d", value_parser = certs::parse_lifetime)]
    pub cert_validity: Duration,

    /// How often the Secret is read again (to renew, and to pick up what
    /// another replica renewed).
    #[arg(long, env = "STRADDLE_CERT_CHECK_INTERVAL", default_value = "1m", value_parser = certs::parse_lifetime)]
    pub cert_check_interval: Duration,
}

/// Everything one reconciliation needs.
pub struct CertManager {
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    secret_name: String,
    webhook_config: String,
    identity: Identity,
    lifetimes: Lifetimes,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// What one reconciliation did.
#[derive(Debug, PartialEq, Eq)]
pub struct Reconciled {
    /// Why this replica made new certificates, if it did.
    pub renewal: Option<Renewal>,
    /// Whether the webhook configuration's caBundle was patched.
    pub ca_bundle_patched: bool,
    /// Whether the certificate and key files were (re)written.
    pub files_written: bool,
}

impl CertManager {
    /// From the flags; `client` talks to the API server.
    pub fn new(
        client: kube::Client,
        flags: &SelfManagedCerts,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<CertManager> {
        let missing = |flag: &str| anyhow!("--self-managed-certs needs {flag}");
        let namespace = flags
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let service = flags
            .service_name
            .clone()
            .ok_or_else(|| missing("--service-name"))?;
        Ok(CertManager {
            secrets: Api::namespaced(client.clone(), &namespace),
            webhooks: Api::all(client),
            secret_name: flags
                .cert_secret
                .clone()
                .ok_or_else(|| missing("--cert-secret"))?,
            webhook_config: flags
                .webhook_config
                .clone()
                .ok_or_else(|| missing("--webhook-config"))?,
            identity: Identity { service, namespace },
            lifetimes: Lifetimes {
                ca: flags.ca_validity,
                serving: flags.cert_validity,
            },
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        })
    }

    /// Makes sure the Secret holds good certificates for `now` (making or
    /// renewing them if needed), the webhook configuration trusts their CA,
    /// and the files hold the Secret's certificate and key.
    pub async fn reconcile(&self, now: SystemTime) -> Result<Reconciled> {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            let secret = self.secrets.get(&self.secret_name).await.map_err(|e| {
                anyhow!(
                    "reading Secret {}/{}: {e} (the chart creates it empty; with plain \
                     manifests, create it: kubectl -n {} create secret generic {})",
                    self.identity.namespace,
                    self.secret_name,
                    self.identity.namespace,
                    self.secret_name
                )
            })?;
            let data = secret.data.clone().unwrap_or_default();
            let (set, renewal) = certs::next_from_secret(
                |key| data.get(key).map(|v| v.0.as_slice()),
                &self.identity,
                self.lifetimes,
                now,
            )?;
            if renewal.is_some() {
                match self.store(&secret, &set).await {
                    Ok(()) => {}
                    // Another replica renewed first: use what it stored.
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(e) => {
                        return Err(anyhow!(
                            "updating Secret {}/{}: {e}",
                            self.identity.namespace,
                            self.secret_name
                        ));
                    }
                }
            }
            // Trust first, then serve: a certificate from a new CA must not
            // be served before the API server trusts that CA.
            let ca_bundle_patched = self.trust(&set.ca_bundle_pem).await?;
            let files_written = self.write_files(&set)?;
            if let Some(why) = &renewal {
                info!(secret = %self.secret_name, "self-managed certificates: {why}");
            }
            return Ok(Reconciled {
                renewal,
                ca_bundle_patched,
                files_written,
            });
        }
        bail!(
            "Secret {}/{} changed under every one of {ATTEMPTS} updates",
            self.identity.namespace,
            self.secret_name
        )
    }

    async fn store(&self, read: &Secret, set: &CertSet) -> Result<(), kube::Error> {
        let mut secret = read.clone();
        let data = secret.data.get_or_insert_default();
        for (key, value) in certs::encode(set) {
            data.insert(key.to_owned(), ByteString(value));
        }
        // `metadata.resourceVersion` from the read: a concurrent update wins
        // and this one gets 409.
        self.secrets
            .replace(&self.secret_name, &PostParams::default(), &secret)
            .await
            .map(drop)
    }

    /// Patches `caBundle` of every webhook in the configuration; `false` when
    /// it already held the bundle.
    async fn trust(&self, bundle_pem: &str) -> Result<bool> {
        let what = || format!("MutatingWebhookConfiguration {}", self.webhook_config);
        let config = self
            .webhooks
            .get(&self.webhook_config)
            .await
            .with_context(|| format!("reading {}", what()))?;
        let Some(patch) = ca_bundle_patch(&config, bundle_pem)? else {
            return Ok(false);
        };
        let patch: json_patch::Patch =
            serde_json::from_value(patch).context("building the caBundle patch")?;
        self.webhooks
            .patch(
                &self.webhook_config,
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
            .with_context(|| format!("patching the caBundle of {}", what()))?;
        Ok(true)
    }

    /// Writes the certificate and key files when they differ (each through a
    /// rename, so the watcher never reads half a file).
    fn write_files(&self, set: &CertSet) -> Result<bool> {
        let mut written = false;
        for (path, content) in [
            (&self.cert_path, &set.tls_cert_pem),
            (&self.key_path, &set.tls_key_pem),
        ] {
            if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
                continue;
            }
            write_atomically(path, content.as_bytes())?;
            written = true;
        }
        Ok(written)
    }

    /// Reconciles every `interval` until the process ends; failures are
    /// logged and retried (the current certificate keeps serving).
    pub async fn run(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(e) = self.reconcile(SystemTime::now()).await {
                warn!(
                    error = format!("{e:#}"),
                    "self-managed certificates: check failed"
                );
            }
        }
    }

    /// The first reconciliation at start: retried (with a growing pause, up
    /// to 30 s) until it succeeds, since the server cannot serve without it.
    pub async fn initial(&self) -> Result<Reconciled> {
        let mut pause = Duration::from_millis(500);
        loop {
            match self.reconcile(SystemTime::now()).await {
                Ok(done) => return Ok(done),
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        retry_in_ms = pause.as_millis() as u64,
                        "self-managed certificates: cannot get a serving certificate yet"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Starts self-managed certificates when `--self-managed-certs` is set:
/// the first certificate is in place when this returns, and the returned
/// task keeps it renewed.
pub async fn start(config: &crate::Config) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let flags = &config.self_managed;
    if !flags.self_managed_certs {
        return Ok(None);
    }
    let client = kube::Client::try_default().await.context(
        "--self-managed-certs: connecting to the API server (in-cluster config or kubeconfig)",
    )?;
    let manager = CertManager::new(client, flags, &config.tls_cert, &config.tls_key)?;
    let done = manager.initial().await?;
    info!(
        renewal = done.renewal.map(|r| r.to_string()).unwrap_or_default(),
        ca_bundle_patched = done.ca_bundle_patched,
        "self-managed certificates in place"
    );
    Ok(Some(tokio::spawn(manager.run(flags.cert_check_interval))))
}

/// A JSON Patch that sets every webhook's `clientConfig.caBundle` to the
/// bundle, guarded by `test` operations on the webhook names (a reordered
/// list makes the patch fail instead of landing on the wrong entry); `None`
/// when every webhook already has it.
pub fn ca_bundle_patch(
    config: &MutatingWebhookConfiguration,
    bundle_pem: &str,
) -> Result<Option<Value>> {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    if webhooks.is_empty() {
        bail!(
            "MutatingWebhookConfiguration {} has no webhooks",
            config.metadata.name.as_deref().unwrap_or("?")
        );
    }
    let encoded = base64_simd::STANDARD.encode_to_string(bundle_pem);
    let mut ops = Vec::new();
    for (i, webhook) in webhooks.iter().enumerate() {
        let current = webhook.client_config.ca_bundle.as_ref().map(|b| &b.0[..]);
        if current == Some(bundle_pem.as_bytes()) {
            continue;
        }
        ops.push(
            json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}),
        );
        ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    Ok((!ops.is_empty()).then_some(Value::Array(ops)))
}

fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Owner-only: one of the two files is a private key.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("writing {} (is its directory writable?)", temp.display()))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path)
        .with_context(|| format!("renaming {} to {}", temp.display(), path.display()))
}
