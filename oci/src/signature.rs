//! Signatures in cosign's key-based format, so `cosign verify --key` can
//! check what `straddle sign` wrote (and the webhook can check what `cosign
//! sign --key` wrote):
//!
//! * the signed bytes are a "simple signing" JSON payload naming the
//!   repository (`critical.identity.docker-reference`) and the manifest
//!   digest (`critical.image.docker-manifest-digest`), type
//!   `cosign container image signature`;
//! * the signature is ECDSA P-256 over SHA-256 of the payload, ASN.1 DER,
//!   base64, in the layer annotation `dev.cosignproject.cosign/signature`;
//! * the payload is a layer (`application/vnd.dev.cosign.simplesigning.v1+json`)
//!   of an image manifest tagged `sha256-<hex>.sig` in the same repository;
//!   signing again appends a layer.
//!
//! Keys are PEM: PKCS#8 (or SEC1) private keys, SPKI public keys, the form of
//! cosign's `cosign.pub`. A cosign-generated *encrypted* private key must be
//! converted first; the public key is usable as is.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};

use crate::artifact::{MANIFEST_MEDIA_TYPE, sha256_digest};
use crate::reference::check_digest;

pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The tag cosign stores the signatures of `manifest_digest` under.
pub fn signature_tag(manifest_digest: &str) -> Result<String> {
    check_digest(manifest_digest)?;
    Ok(format!("{}.sig", manifest_digest.replacen(':', "-", 1)))
}

#[derive(Serialize, Deserialize, Debug)]
struct SimpleSigning {
    critical: Critical,
    optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Serialize, Deserialize, Debug)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    type_name: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The bytes that get signed.
pub fn payload(repository_name: &str, manifest_digest: &str) -> Vec<u8> {
    serde_json::to_vec(&SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: repository_name.to_owned(),
            },
            image: Image {
                docker_manifest_digest: manifest_digest.to_owned(),
            },
            type_name: PAYLOAD_TYPE.to_owned(),
        },
        optional: None,
    })
    .expect("a payload serializes")
}

/// A private key that signs bundles.
pub struct SigningKey(p256::ecdsa::SigningKey);

impl std::fmt::Debug for SigningKey {
    // Never print a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey(P-256, public {})",
            self.verifying_key().to_pem().lines().nth(1).unwrap_or("")
        )
    }
}

/// A public key that verifies them.
#[derive(Clone, Debug)]
pub struct VerifyingKey(p256::ecdsa::VerifyingKey);

impl SigningKey {
    pub fn generate() -> SigningKey {
        SigningKey(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
    }

    /// PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`) PEM.
    pub fn from_pem(pem: &str) -> Result<SigningKey> {
        if pem.contains("ENCRYPTED") {
            bail!(
                "this private key is encrypted (cosign's default); export it unencrypted as \
                 PKCS#8 PEM, e.g. `openssl pkcs8 -topk8 -nocrypt`, or make a key with `straddle keygen`"
            );
        }
        if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey(key));
        }
        let secret = p256::SecretKey::from_sec1_pem(pem).map_err(|_| {
            anyhow!("not an ECDSA P-256 private key in PEM (PKCS#8 or SEC1); make one with `straddle keygen`")
        })?;
        Ok(SigningKey(secret.into()))
    }

    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a P-256 key encodes")
            .to_string()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(*self.0.verifying_key())
    }

    /// Signs `payload`: base64 of the DER-encoded ECDSA signature.
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature: Signature = self.0.sign(payload);
        BASE64.encode(signature.to_der().as_bytes())
    }
}

impl VerifyingKey {
    /// SPKI PEM (`BEGIN PUBLIC KEY`), as in cosign's `cosign.pub`.
    pub fn from_pem(pem: &str) -> Result<VerifyingKey> {
        p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map(VerifyingKey)
            .map_err(|_| {
                anyhow!("not an ECDSA P-256 public key in PEM (BEGIN PUBLIC KEY, as cosign.pub)")
            })
    }

    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key encodes")
    }

    fn verify(&self, payload: &[u8], signature_b64: &str) -> Result<()> {
        let der = BASE64
            .decode(signature_b64.trim())
            .context("the signature annotation is not base64")?;
        let signature = DerSignature::try_from(der.as_slice())
            .ok()
            .and_then(|d| Signature::from_der(d.as_bytes()).ok())
            .ok_or_else(|| anyhow!("the signature is not a DER ECDSA signature"))?;
        self.0
            .verify(payload, &signature)
            .map_err(|_| anyhow!("the signature does not match the key"))
    }
}

/// One signature as stored: the payload blob and its signature annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureLayer {
    pub payload: Vec<u8>,
    pub signature: String,
}

impl SignatureLayer {
    pub fn descriptor(&self) -> OciDescriptor {
        OciDescriptor {
            media_type: PAYLOAD_MEDIA_TYPE.to_owned(),
            digest: sha256_digest(&self.payload),
            size: self.payload.len() as i64,
            annotations: Some(BTreeMap::from([(
                SIGNATURE_ANNOTATION.to_owned(),
                self.signature.clone(),
            )])),
            ..OciDescriptor::default()
        }
    }
}

/// Signs `manifest_digest` of `repository_name`.
pub fn sign(key: &SigningKey, repository_name: &str, manifest_digest: &str) -> SignatureLayer {
    let payload = payload(repository_name, manifest_digest);
    let signature = key.sign(&payload);
    SignatureLayer { payload, signature }
}

/// The layers of a `.sig` manifest that carry a signature, with it.
pub fn signature_descriptors(manifest: &[u8]) -> Result<Vec<(OciDescriptor, String)>> {
    let manifest: OciImageManifest = serde_json::from_slice(manifest)
        .context("the signature manifest is not an OCI image manifest")?;
    Ok(manifest
        .layers
        .into_iter()
        .filter(|l| l.media_type == PAYLOAD_MEDIA_TYPE)
        .filter_map(|l| {
            let sig = l.annotations.as_ref()?.get(SIGNATURE_ANNOTATION)?.clone();
            Some((l, sig))
        })
        .collect())
}

/// The `.sig` manifest and its config after adding `new` to the signatures
/// already there (`existing` layers, kept as they are).
pub fn signature_manifest(existing: &[OciDescriptor], new: &SignatureLayer) -> (Vec<u8>, Vec<u8>) {
    let mut layers: Vec<OciDescriptor> = existing.to_vec();
    let added = new.descriptor();
    if !layers
        .iter()
        .any(|l| l.digest == added.digest && l.annotations == added.annotations)
    {
        layers.push(added);
    }
    // An image config as go-containerregistry writes for cosign: the layers'
    // digests as rootfs diff_ids, nothing else.
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
        "config": {}
    }))
    .expect("a config serializes");
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: OciDescriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: sha256_digest(&config),
            size: config.len() as i64,
            ..OciDescriptor::default()
        },
        layers,
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    (
        config,
        serde_json::to_vec(&manifest).expect("a manifest serializes"),
    )
}

/// Succeeds if one of `signatures` is a valid signature by `key` of a
/// payload naming `manifest_digest`. The error lists why each one failed.
pub fn verify(
    key: &VerifyingKey,
    signatures: &[SignatureLayer],
    manifest_digest: &str,
) -> Result<()> {
    ensure!(
        !signatures.is_empty(),
        "bundle {manifest_digest} is not signed (no {} in the repository); sign it with \
         `straddle sign REF --key KEY` (or `cosign sign --key`)",
        signature_tag(manifest_digest).unwrap_or_default()
    );
    let mut reasons = Vec::new();
    for (i, layer) in signatures.iter().enumerate() {
        match verify_one(key, layer, manifest_digest) {
            Ok(()) => return Ok(()),
            Err(e) => reasons.push(format!("signature {}: {e:#}", i + 1)),
        }
    }
    bail!(
        "no valid signature of bundle {manifest_digest} by the configured key ({}); was it signed \
         with a different key?",
        reasons.join("; ")
    )
}

fn verify_one(key: &VerifyingKey, layer: &SignatureLayer, manifest_digest: &str) -> Result<()> {
    key.verify(&layer.payload, &layer.signature)?;
    // Only a signed payload is trusted, and only for the digest it names.
    let payload: SimpleSigning = serde_json::from_slice(&layer.payload)
        .context("the signed payload is not simple-signing JSON")?;
    ensure!(
        payload.critical.type_name == PAYLOAD_TYPE,
        "the payload's type is {:?}, not {PAYLOAD_TYPE:?}",
        payload.critical.type_name
    );
    ensure!(
        payload.critical.image.docker_manifest_digest == manifest_digest,
        "the signature is for {}, not this bundle",
        payload.critical.image.docker_manifest_digest
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const E: &str = "sha256:1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn payload_is_cosign_simple_signing() {
        let p: serde_json::Value = serde_json::from_slice(&payload("r.io/straddle/p", D)).unwrap();
        assert_eq!(
            p["critical"]["identity"]["docker-reference"],
            "r.io/straddle/p"
        );
        assert_eq!(p["critical"]["image"]["docker-manifest-digest"], D);
        assert_eq!(p["critical"]["type"], PAYLOAD_TYPE);
        assert!(p["optional"].is_null());
        assert_eq!(
            signature_tag(D).unwrap(),
            "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
        );
    }

    #[test]
    fn sign_verify_and_refusals() {
        let key = SigningKey::generate();
        let public = VerifyingKey::from_pem(&key.verifying_key().to_pem()).unwrap();
        let private = SigningKey::from_pem(&key.to_pem()).unwrap();
        let good = sign(&private, "r.io/p", D);
        verify(&public, std::slice::from_ref(&good), D).unwrap();

        // Not signed at all.
        let e = verify(&public, &[], D).unwrap_err().to_string();
        assert!(e.contains("not signed"), "{e}");
        // Signed by someone else.
        let other = sign(&SigningKey::generate(), "r.io/p", D);
        let e = verify(&public, std::slice::from_ref(&other), D)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match the key"), "{e}");
        // A valid signature of another bundle.
        let e = verify(&public, std::slice::from_ref(&good), E)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not this bundle"), "{e}");
        // A payload changed after signing.
        let mut forged = good.clone();
        forged.payload = payload("r.io/p", E);
        assert!(verify(&public, &[forged], E).is_err());
        // One good signature among bad ones is enough.
        verify(&public, &[other, good], D).unwrap();
    }

    #[test]
    fn signature_manifest_appends_and_lists() {
        let key = SigningKey::generate();
        let first = sign(&key, "r.io/p", D);
        let (_, m1) = signature_manifest(&[], &first);
        let layers = signature_descriptors(&m1).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].1, first.signature);
        let second = sign(&SigningKey::generate(), "r.io/p", D);
        let existing: Vec<_> = layers.into_iter().map(|(d, _)| d).collect();
        let (config, m2) = signature_manifest(&existing, &second);
        assert_eq!(signature_descriptors(&m2).unwrap().len(), 2);
        // Signing again with the same signature adds nothing.
        let existing: Vec<_> = signature_descriptors(&m2)
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(signature_manifest(&existing, &second).1, m2);
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn keys_say_what_they_are_not() {
        let e =
            SigningKey::from_pem("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n").unwrap_err();
        assert!(e.to_string().contains("encrypted"));
        assert!(VerifyingKey::from_pem("nope").is_err());
        assert!(
            SigningKey::from_pem("nope")
                .unwrap_err()
                .to_string()
                .contains("keygen")
        );
    }
}
