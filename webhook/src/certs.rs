//! Self-managed certificates, the pure part: make a CA and a serving
//! certificate, decide when to renew them, and store them in a Secret's data.
//!
//! The API server must trust the webhook's serving certificate. Without
//! cert-manager, the webhook makes its own CA at start, keeps CA and serving
//! certificate in a Secret (so every replica serves a certificate from the
//! same CA), and puts the CA into the `caBundle` of its own
//! MutatingWebhookConfiguration ([`crate::certs_kube`] does the I/O).
//!
//! Renewal happens at two thirds of a certificate's lifetime. A new CA is
//! trusted next to the old one (`ca.crt` holds both until the old one
//! expires), so replicas still serving a certificate from the old CA keep
//! working while they pick up the new one.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// Secret data keys. `tls.crt`/`tls.key` follow `kubernetes.io/tls`;
/// `ca.crt` is the trust bundle (signing CA first), `ca.key` the signing
/// CA's key.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// Renew a certificate once this share of its lifetime has passed.
const RENEW_AT_NUM: u32 = 2;
const RENEW_AT_DEN: u32 = 3;

/// Certificates are valid from a little before they are made, so a node
/// whose clock is slightly behind still accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Who the serving certificate is for: the webhook's Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub service: String,
    pub namespace: String,
}

impl Identity {
    /// The names the API server may use to reach the Service (it uses
    /// `<service>.<namespace>.svc`).
    pub fn dns_names(&self) -> Vec<String> {
        let (s, n) = (&self.service, &self.namespace);
        vec![
            format!("{s}.{n}.svc"),
            format!("{s}.{n}.svc.cluster.local"),
            format!("{s}.{n}"),
            s.clone(),
        ]
    }
}

/// How long new certificates are valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: Duration,
    pub serving: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca: Duration::from_secs(5 * 365 * 24 * 3600),
            serving: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Everything kept in the Secret, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct CertSet {
    /// The trust bundle for `caBundle`: the signing CA first, then older CAs
    /// that have not expired yet.
    pub ca_bundle_pem: String,
    pub ca_key_pem: String,
    pub tls_cert_pem: String,
    pub tls_key_pem: String,
}

impl fmt::Debug for CertSet {
    // Never print private keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSet")
            .field("ca_bundle_pem", &self.ca_bundle_pem)
            .field("tls_cert_pem", &self.tls_cert_pem)
            .finish_non_exhaustive()
    }
}

/// Why a certificate was (re)made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The Secret held no certificates (first start).
    Created,
    /// The Secret's content could not be used; the reason.
    Replaced(String),
    /// The CA reached two thirds of its lifetime (or expired): a new CA and
    /// serving certificate, the old CA still trusted until it expires.
    CaRotated,
    /// The serving certificate reached two thirds of its lifetime, expired,
    /// or no longer names the Service; the reason.
    ServingRenewed(String),
    /// An expired old CA was dropped from the trust bundle.
    BundlePruned,
}

impl fmt::Display for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Renewal::Created => write!(f, "created a CA and a serving certificate"),
            Renewal::Replaced(why) => write!(f, "replaced unusable certificates ({why})"),
            Renewal::CaRotated => write!(f, "rotated the CA and the serving certificate"),
            Renewal::ServingRenewed(why) => write!(f, "renewed the serving certificate ({why})"),
            Renewal::BundlePruned => write!(f, "dropped an expired CA from the trust bundle"),
        }
    }
}

/// The certificates to keep, given what the Secret holds (`None`: nothing)
/// at time `now`: the same set and `None` when it is good, or a new set and
/// the reason.
pub fn next(
    stored: Option<&CertSet>,
    identity: &Identity,
    lifetimes: Lifetimes,
    now: SystemTime,
) -> Result<(CertSet, Option<Renewal>)> {
    let Some(stored) = stored else {
        return Ok((create(identity, lifetimes, now)?, Some(Renewal::Created)));
    };
    let cas = match parse_bundle(&stored.ca_bundle_pem) {
        Ok(cas) => cas,
        Err(e) => {
            let set = create(identity, lifetimes, now)?;
            return Ok((set, Some(Renewal::Replaced(format!("{e:#}")))));
        }
    };
    let signing = &cas[0];
    if let Err(e) = key_matches(&stored.ca_key_pem, &signing.der) {
        let set = create(identity, lifetimes, now)?;
        return Ok((set, Some(Renewal::Replaced(format!("CA key: {e:#}")))));
    }
    if signing.renewal_due(now) {
        let ca = new_ca(lifetimes.ca, now)?;
        let serving = new_serving(&ca, identity, lifetimes.serving, now)?;
        // Keep trusting the old CAs still valid: other replicas may serve
        // certificates they signed until they reread the Secret.
        let mut bundle = ca.cert_pem.clone();
        for old in cas.iter().filter(|c| !c.expired(now)) {
            bundle.push_str(&old.pem);
        }
        let set = CertSet {
            ca_bundle_pem: bundle,
            ca_key_pem: ca.key_pem,
            tls_cert_pem: serving.0,
            tls_key_pem: serving.1,
        };
        return Ok((set, Some(Renewal::CaRotated)));
    }
    if let Some(why) = serving_problem(stored, signing, identity, now) {
        let ca = SigningCa::from_pem(&signing.pem, &stored.ca_key_pem)?;
        let (cert, key) = new_serving(&ca, identity, lifetimes.serving, now)?;
        let set = CertSet {
            ca_bundle_pem: bundle_without_expired(&cas, now),
            ca_key_pem: stored.ca_key_pem.clone(),
            tls_cert_pem: cert,
            tls_key_pem: key,
        };
        return Ok((set, Some(Renewal::ServingRenewed(why))));
    }
    if cas.iter().any(|c| c.expired(now)) {
        let mut set = stored.clone();
        set.ca_bundle_pem = bundle_without_expired(&cas, now);
        return Ok((set, Some(Renewal::BundlePruned)));
    }
    Ok((stored.clone(), None))
}

/// [`next`] from a Secret's data (`get` returns a key's bytes): data that
/// cannot be used (a key missing, not PEM) is replaced, with the reason.
pub fn next_from_secret<'a>(
    get: impl FnMut(&str) -> Option<&'a [u8]>,
    identity: &Identity,
    lifetimes: Lifetimes,
    now: SystemTime,
) -> Result<(CertSet, Option<Renewal>)> {
    match decode(get) {
        Ok(stored) => next(stored.as_ref(), identity, lifetimes, now),
        Err(why) => Ok((
            create(identity, lifetimes, now)?,
            Some(Renewal::Replaced(why)),
        )),
    }
}

/// A new CA and a serving certificate from it.
pub fn create(identity: &Identity, lifetimes: Lifetimes, now: SystemTime) -> Result<CertSet> {
    let ca = new_ca(lifetimes.ca, now)?;
    let (tls_cert_pem, tls_key_pem) = new_serving(&ca, identity, lifetimes.serving, now)?;
    Ok(CertSet {
        ca_bundle_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        tls_cert_pem,
        tls_key_pem,
    })
}

/// Reads the Secret's data (`None` when it holds no certificates yet, as
/// the chart creates it). Keys other than ours are ignored.
pub fn decode<'a>(
    mut get: impl FnMut(&str) -> Option<&'a [u8]>,
) -> Result<Option<CertSet>, String> {
    let keys = [CA_CRT, CA_KEY, TLS_CRT, TLS_KEY];
    let values: Vec<Option<&[u8]>> = keys.iter().map(|k| get(k)).collect();
    if values.iter().all(|v| v.is_none_or(|v| v.is_empty())) {
        return Ok(None);
    }
    let mut text = Vec::with_capacity(4);
    for (key, value) in keys.iter().zip(values) {
        let value = value.filter(|v| !v.is_empty()).ok_or(format!("no {key}"))?;
        let value = String::from_utf8(value.to_vec()).map_err(|_| format!("{key} is not PEM"))?;
        text.push(value);
    }
    let mut text = text.into_iter();
    let mut next = || text.next().unwrap_or_default();
    Ok(Some(CertSet {
        ca_bundle_pem: next(),
        ca_key_pem: next(),
        tls_cert_pem: next(),
        tls_key_pem: next(),
    }))
}

/// The Secret's data for a set (key, bytes).
pub fn encode(set: &CertSet) -> [(&'static str, Vec<u8>); 4] {
    [
        (CA_CRT, set.ca_bundle_pem.clone().into_bytes()),
        (CA_KEY, set.ca_key_pem.clone().into_bytes()),
        (TLS_CRT, set.tls_cert_pem.clone().into_bytes()),
        (TLS_KEY, set.tls_key_pem.clone().into_bytes()),
    ]
}

/// Checks that `set`'s serving certificate chains to its bundle and names
/// every Service DNS name at `now` (rustls' WebPKI verifier, as a client
/// would).
pub fn verify_serving(set: &CertSet, identity: &Identity, now: SystemTime) -> Result<()> {
    let mut roots = RootCertStore::empty();
    for ca in parse_bundle(&set.ca_bundle_pem)? {
        roots
            .add(ca.der)
            .context("adding a CA to the trust store")?;
    }
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
            .build()
            .context("building a WebPKI verifier")?;
    let chain = CertificateDer::pem_slice_iter(set.tls_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("tls.crt is not PEM")?;
    let (leaf, intermediates) = chain
        .split_first()
        .context("tls.crt holds no certificate")?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("time before 1970")?;
    for name in identity.dns_names() {
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| anyhow!("{name:?} is not a DNS name"))?;
        verifier
            .verify_server_cert(
                leaf,
                intermediates,
                &server_name,
                &[],
                UnixTime::since_unix_epoch(since_epoch),
            )
            .map_err(|e| anyhow!("serving certificate for {name}: {e}"))?;
    }
    key_matches(&set.tls_key_pem, leaf).context("tls.key")?;
    Ok(())
}

/// The validity window of the first certificate in `pem`.
pub fn validity(pem: &str) -> Result<(SystemTime, SystemTime)> {
    let certs = parse_certs(pem, "certificate")?;
    Ok((certs[0].not_before, certs[0].not_after))
}

struct ParsedCert {
    pem: String,
    der: CertificateDer<'static>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl ParsedCert {
    fn renewal_due(&self, now: SystemTime) -> bool {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        now >= self.not_before + lifetime * RENEW_AT_NUM / RENEW_AT_DEN || self.expired(now)
    }

    fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

fn parse_bundle(pem: &str) -> Result<Vec<ParsedCert>> {
    parse_certs(pem, CA_CRT)
}

/// The certificates of a PEM text (`what` names it in errors).
fn parse_certs(pem: &str, what: &str) -> Result<Vec<ParsedCert>> {
    let mut certs = Vec::new();
    for block in ::pem::parse_many(pem).with_context(|| format!("{what} is not PEM"))? {
        ensure!(
            block.tag() == "CERTIFICATE",
            "{what} holds a {} block",
            block.tag()
        );
        let der = CertificateDer::from(block.contents().to_vec());
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow!("{what} holds an unreadable certificate: {e}"))?;
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let (not_before, not_after) = (
            time(cert.validity().not_before),
            time(cert.validity().not_after),
        );
        certs.push(ParsedCert {
            // LF, as rcgen writes PEM (the crate's default is CRLF).
            pem: ::pem::encode_config(
                &block,
                ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
            ),
            der,
            not_before,
            not_after,
        });
    }
    ensure!(!certs.is_empty(), "{what} holds no certificate");
    Ok(certs)
}

fn bundle_without_expired(cas: &[ParsedCert], now: SystemTime) -> String {
    // The signing CA stays first even if it is about to expire: it is
    // replaced by CA rotation, not here.
    cas.iter()
        .enumerate()
        .filter(|(i, c)| *i == 0 || !c.expired(now))
        .map(|(_, c)| c.pem.as_str())
        .collect()
}

/// Why the stored serving certificate must be replaced, if it must.
fn serving_problem(
    stored: &CertSet,
    signing: &ParsedCert,
    identity: &Identity,
    now: SystemTime,
) -> Option<String> {
    let leaf = match parse_certs(&stored.tls_cert_pem, TLS_CRT) {
        Ok(mut certs) => certs.remove(0),
        Err(e) => return Some(format!("{e:#}")),
    };
    if leaf.renewal_due(now) {
        return Some("two thirds of its lifetime passed".into());
    }
    // Chains to the signing CA, names the Service, matches its key.
    let only_signing = CertSet {
        ca_bundle_pem: signing.pem.clone(),
        ..stored.clone()
    };
    verify_serving(&only_signing, identity, now)
        .err()
        .map(|e| format!("{e:#}"))
}

fn key_matches(key_pem: &str, cert: &CertificateDer<'_>) -> Result<()> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| anyhow!("not a usable private key: {e}"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| anyhow!("unreadable certificate: {e}"))?;
    ensure!(
        parsed.public_key().raw == key.subject_public_key_info().as_slice(),
        "the key does not belong to the certificate"
    );
    Ok(())
}

struct SigningCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl SigningCa {
    fn from_pem(cert_pem: &str, key_pem: &str) -> Result<SigningCa> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| anyhow!("ca.key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| anyhow!("ca.crt: {e}"))?;
        Ok(SigningCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }
}

fn new_ca(lifetime: Duration, now: SystemTime) -> Result<SigningCa> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "straddle-webhook self-managed CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, &key, lifetime, now)?;
    let cert = params.self_signed(&key).context("signing the CA")?;
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    let issuer = Issuer::new(params, key);
    Ok(SigningCa {
        cert_pem,
        key_pem,
        issuer,
    })
}

/// A serving certificate for the Service names, never outliving its CA.
fn new_serving(
    ca: &SigningCa,
    identity: &Identity,
    lifetime: Duration,
    now: SystemTime,
) -> Result<(String, String)> {
    let (_, ca_not_after) = validity(&ca.cert_pem)?;
    let lifetime = lifetime.min(
        ca_not_after
            .duration_since(now)
            .context("the CA has expired")?,
    );
    if lifetime.is_zero() {
        bail!("the CA has expired");
    }
    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(identity.dns_names())
        .context("the Service name is not a valid DNS name")?;
    params
        .distinguished_name
        .push(DnType::CommonName, identity.dns_names()[0].clone());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, &key, lifetime, now)?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .context("signing the serving certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn set_validity(
    params: &mut CertificateParams,
    key: &KeyPair,
    lifetime: Duration,
    now: SystemTime,
) -> Result<()> {
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    params.not_before = not_before.into();
    params.not_after = (now + lifetime).into();
    // A serial unique per key and time, without another source of randomness.
    let mut digest = Sha256::new();
    digest.update(key.der_bytes());
    digest.update(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_be_bytes(),
    );
    let mut serial = digest.finalize()[..16].to_vec();
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

/// `90d`, `12h`, `30m`, `45s`: certificate lifetimes and check intervals.
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90d, 12h, 30m)"))?;
    let unit_secs = match unit {
        "d" => 24 * 3600,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use d, h, m or s)"
            ));
        }
    };
    let secs = value
        .checked_mul(unit_secs)
        .ok_or(format!("{text:?} is too long"))?;
    if secs == 0 {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(Duration::from_secs(secs))
}
