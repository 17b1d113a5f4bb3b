//! Talking to a registry: oci-client (the OCI distribution protocol, ORAS
//! project) over reqwest and rustls. This module moves bytes and translates
//! failures into messages that say what to do; every decision about the
//! bytes (is this manifest a bundle, does this blob match, is this signature
//! valid) is made by the pure modules.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

use crate::artifact::{
    self, BundleMeta, MANIFEST_MEDIA_TYPE, check_blob, check_manifest, sha256_digest,
};
use crate::auth::{self, AuthOptions, Credentials};
use crate::reference::PolicyRef;
use crate::signature::{self, SignatureLayer, SigningKey};

/// How to reach registries: the flags shared by the CLI and the webhook.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Speak plain HTTP (ORAS's `--plain-http`). Never the default.
    pub plain_http: bool,
    /// PEM CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    pub auth: AuthOptions,
    /// Connect timeout, and the longest wait for a read.
    pub timeout: Duration,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            plain_http: false,
            ca_file: None,
            auth: AuthOptions::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A client for one registry host.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    auth_source: String,
    host: String,
    plain_http: bool,
    has_ca: bool,
}

/// What `push` did.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The reference pinned to the manifest digest: what clusters should run.
    pub pinned: PolicyRef,
    pub manifest_digest: String,
    pub layer_digest: String,
    pub module_bytes: usize,
    /// Blobs already in the registry (not uploaded again).
    pub reused_blobs: usize,
}

/// A bundle fetched and checked: the manifest hashes to `manifest_digest`,
/// the module to the manifest's layer digest.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub pinned: PolicyRef,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub module: Vec<u8>,
    pub meta: BundleMeta,
}

impl Registry {
    /// A client for `reference`'s registry, with credentials resolved from
    /// `connection.auth`.
    pub fn connect(connection: &Connection, reference: &PolicyRef) -> Result<Registry> {
        // reqwest is built without a default crypto provider (no aws-lc, no
        // openssl): use ring, as the webhook's server side does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let host = reference.registry().to_owned();
        let (credentials, auth_source) = auth::resolve(&connection.auth, &host)?;
        let mut extra_roots = Vec::new();
        if let Some(path) = &connection.ca_file {
            let pem =
                std::fs::read(path).with_context(|| format!("--registry-ca {}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("BEGIN CERTIFICATE") {
                bail!(
                    "--registry-ca {}: no PEM certificate (BEGIN CERTIFICATE) in it",
                    path.display()
                );
            }
            extra_roots.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
        let config = ClientConfig {
            protocol: if connection.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // Bundles are small: one request per blob beats chunked uploads.
            use_monolithic_push: true,
            extra_root_certificates: extra_roots,
            connect_timeout: Some(connection.timeout),
            read_timeout: Some(connection.timeout),
            user_agent: concat!("straddle/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client =
            Client::try_from(config).map_err(|e| anyhow!("setting up the registry client: {e}"))?;
        Ok(Registry {
            client,
            auth: match credentials {
                Credentials::Anonymous => RegistryAuth::Anonymous,
                Credentials::Basic { username, password } => {
                    RegistryAuth::Basic(username, password)
                }
                Credentials::Bearer(token) => RegistryAuth::Bearer(token),
            },
            auth_source,
            host,
            plain_http: connection.plain_http,
            has_ca: connection.ca_file.is_some(),
        })
    }

    /// Pushes `module` as a bundle to `reference` (a tag).
    pub async fn push(
        &self,
        reference: &PolicyRef,
        module: &[u8],
        meta: &BundleMeta,
    ) -> Result<Pushed> {
        let Some(tag) = reference.tag() else {
            bail!(
                "push to a tag (REGISTRY/REPO:TAG), not a digest: the digest is computed from the bundle"
            );
        };
        let r = reference.as_reference();
        let art = artifact::build(module, meta);
        self.client
            .auth(r, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.explain(e, "authenticating to push", reference))?;
        let mut reused = 0;
        for (bytes, digest) in [
            (&art.config[..], &art.config_digest),
            (module, &art.layer_digest),
        ] {
            if self.client.blob_exists(r, digest).await.unwrap_or(false) {
                reused += 1;
                continue;
            }
            self.client
                .push_blob(r, bytes.to_vec(), digest)
                .await
                .map_err(|e| self.explain(e, &format!("uploading blob {digest}"), reference))?;
        }
        self.client
            .push_manifest_raw(
                r,
                art.manifest.clone(),
                MANIFEST_MEDIA_TYPE.parse().expect("a header value"),
            )
            .await
            .map_err(|e| {
                self.explain(e, &format!("pushing the manifest to tag {tag}"), reference)
            })?;
        Ok(Pushed {
            pinned: reference.pinned(&art.manifest_digest),
            manifest_digest: art.manifest_digest,
            layer_digest: art.layer_digest,
            module_bytes: module.len(),
            reused_blobs: reused,
        })
    }

    /// The manifest bytes and digest `reference` names. The digest is
    /// computed from the bytes, and must equal a pinned reference's.
    async fn manifest(&self, reference: &PolicyRef) -> Result<(Vec<u8>, String)> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference.as_reference(), &self.auth, &[MANIFEST_MEDIA_TYPE])
            .await
            .map_err(|e| self.explain(e, "fetching the manifest", reference))?;
        if bytes.len() > artifact::MAX_MANIFEST_BYTES {
            bail!(
                "the manifest of {reference} has {} bytes: not a policy bundle",
                bytes.len()
            );
        }
        let digest = match reference.digest() {
            Some(pinned) => pinned.to_owned(),
            None => sha256_digest(&bytes),
        };
        Ok((bytes.to_vec(), digest))
    }

    /// The manifest digest a tag points at now (a pinned reference: its digest).
    pub async fn resolve(&self, reference: &PolicyRef) -> Result<String> {
        if let Some(digest) = reference.digest() {
            return Ok(digest.to_owned());
        }
        Ok(self.manifest(reference).await?.1)
    }

    /// Fetches a bundle and checks every byte against its digest.
    pub async fn pull(&self, reference: &PolicyRef) -> Result<Pulled> {
        let (manifest, manifest_digest) = self.manifest(reference).await?;
        let checked = check_manifest(&manifest, &manifest_digest)
            .with_context(|| format!("{reference} is not a usable policy bundle"))?;
        let module = self.blob(reference, &checked.layer).await?;
        Ok(Pulled {
            pinned: reference.pinned(&manifest_digest),
            manifest_digest,
            manifest,
            module,
            meta: checked.meta,
        })
    }

    async fn blob(&self, reference: &PolicyRef, descriptor: &OciDescriptor) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(descriptor.size.clamp(0, 1 << 24) as usize);
        self.client
            .pull_blob(reference.as_reference(), descriptor, &mut bytes)
            .await
            .map_err(|e| {
                self.explain(
                    e,
                    &format!("fetching blob {}", descriptor.digest),
                    reference,
                )
            })?;
        check_blob(descriptor, &bytes)?;
        Ok(bytes)
    }

    /// The signatures stored for `manifest_digest` (none: an empty list).
    pub async fn signatures(
        &self,
        reference: &PolicyRef,
        manifest_digest: &str,
    ) -> Result<Vec<SignatureLayer>> {
        let sig_ref = reference.tagged(&signature::signature_tag(manifest_digest)?);
        let manifest = match self
            .client
            .pull_manifest_raw(
                sig_ref.as_reference(),
                &self.auth,
                &[MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST],
            )
            .await
        {
            Ok((bytes, _)) => bytes,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.explain(e, "fetching the signatures", &sig_ref)),
        };
        let mut layers = Vec::new();
        for (descriptor, signature) in signature::signature_descriptors(&manifest)? {
            if descriptor.size > 1 << 20 {
                continue; // not a simple-signing payload
            }
            let payload = self.blob(&sig_ref, &descriptor).await?;
            layers.push(SignatureLayer { payload, signature });
        }
        Ok(layers)
    }

    /// Signs the bundle `reference` names (its current digest, for a tag)
    /// and stores the signature next to it, cosign-style. Returns the
    /// signed digest and where the signature went.
    pub async fn sign(
        &self,
        reference: &PolicyRef,
        key: &SigningKey,
    ) -> Result<(String, PolicyRef)> {
        let pulled = self.pull(reference).await?;
        let digest = pulled.manifest_digest;
        let sig_ref = reference.tagged(&signature::signature_tag(&digest)?);
        let r = sig_ref.as_reference();
        self.client
            .auth(r, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.explain(e, "authenticating to push the signature", &sig_ref))?;
        let existing = match self
            .client
            .pull_manifest_raw(r, &self.auth, &[MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST])
            .await
        {
            Ok((bytes, _)) => signature::signature_descriptors(&bytes)?
                .into_iter()
                .map(|(d, _)| d)
                .collect(),
            Err(e) if is_not_found(&e) => Vec::new(),
            Err(e) => return Err(self.explain(e, "fetching the existing signatures", &sig_ref)),
        };
        let layer = signature::sign(key, &reference.repository_name(), &digest);
        let (config, manifest) = signature::signature_manifest(&existing, &layer);
        for bytes in [layer.payload.clone(), config] {
            let blob_digest = sha256_digest(&bytes);
            self.client
                .push_blob(r, bytes, &blob_digest)
                .await
                .map_err(|e| self.explain(e, "uploading the signature", &sig_ref))?;
        }
        self.client
            .push_manifest_raw(
                r,
                manifest,
                MANIFEST_MEDIA_TYPE.parse().expect("a header value"),
            )
            .await
            .map_err(|e| self.explain(e, "pushing the signature manifest", &sig_ref))?;
        Ok((digest, sig_ref))
    }

    /// An error that says what went wrong and what to do about it.
    fn explain(
        &self,
        error: OciDistributionError,
        action: &str,
        reference: &PolicyRef,
    ) -> anyhow::Error {
        let host = &self.host;
        let hint = match &error {
            OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
                Some(self.credentials_hint())
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                envelope.errors.iter().find_map(|e| match e.code {
                    OciErrorCode::Unauthorized | OciErrorCode::Denied => Some(self.credentials_hint()),
                    OciErrorCode::NameUnknown => Some(format!(
                        "repository {} does not exist on {host}: check the name, or push a bundle to it first (`straddle push`)",
                        reference.repository()
                    )),
                    OciErrorCode::ManifestUnknown => Some(format!(
                        "{reference} does not exist: no such tag or digest in {} (list tags with your registry's UI or `oras repo tags`)",
                        reference.repository_name()
                    )),
                    _ => None,
                })
            }
            OciDistributionError::ServerError { code: 401 | 403, .. } => Some(self.credentials_hint()),
            OciDistributionError::ServerError { code: 404, .. } => Some(format!(
                "{reference} does not exist on {host} (no such repository, tag or digest)"
            )),
            OciDistributionError::DigestError(_) => Some(
                "the registry served bytes that do not match their digest (corrupted storage or a tampering proxy); nothing was used".to_owned(),
            ),
            OciDistributionError::RequestError(e) => Some(self.transport_hint(e)),
            _ => None,
        };
        match hint {
            Some(hint) => anyhow!("{action} for {reference}: {hint} ({error})"),
            None => anyhow!("{action} for {reference}: {error}"),
        }
    }

    fn credentials_hint(&self) -> String {
        format!(
            "registry {} refused the credentials ({}): check --username/--password \
             (STRADDLE_REGISTRY_USERNAME/PASSWORD), --registry-token, or the entry for {} in \
             --registry-config (the config.json `docker login` writes)",
            self.host, self.auth_source, self.host
        )
    }

    fn transport_hint(&self, error: &reqwest::Error) -> String {
        let chain = error_chain(error);
        let host = &self.host;
        let lower = chain.to_ascii_lowercase();
        if !self.plain_http
            && (lower.contains("corrupt message") || lower.contains("invalidcontenttype"))
        {
            format!(
                "{host} does not answer in TLS [{chain}]: if this registry speaks plain HTTP (a local \
                 test registry), use --plain-http"
            )
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
            || lower.contains("ssl")
        {
            if self.has_ca {
                format!(
                    "TLS to {host} failed: the certificate does not chain to --registry-ca or does not name {host} [{chain}]"
                )
            } else {
                format!(
                    "TLS to {host} failed [{chain}]: if the registry's certificate comes from a private CA, \
                     pass it with --registry-ca FILE; if the registry speaks plain HTTP, use --plain-http"
                )
            }
        } else if self.plain_http && (lower.contains("invalid http") || lower.contains("parse")) {
            format!(
                "{host} did not answer in plain HTTP [{chain}]: it probably speaks HTTPS, drop --plain-http"
            )
        } else if error.is_timeout() {
            format!("{host} did not answer in time [{chain}]")
        } else if error.is_connect() {
            format!(
                "cannot connect to {host} [{chain}]: is the registry running and the address right?"
            )
        } else {
            format!("talking to {host} failed [{chain}]")
        }
    }
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn is_not_found(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NotFound
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
