//! Verified bundles on local disk, so a webhook starts and serves while the
//! registry is down.
//!
//! ```text
//! <dir>/bundles/sha256-<hex>/manifest.json     the manifest, as fetched
//!                            policy.wasm       the layer
//!                            signatures.json   the signatures it was verified with
//! <dir>/tags/<sha256 of REGISTRY/REPO:TAG>.json  the digest a tag last resolved to
//! ```
//!
//! A bundle directory is written under a temporary name and renamed into
//! place, so it is whole or absent. Reading it checks everything again
//! (manifest digest, layer digest and size, and the caller re-verifies the
//! signatures): the cache is a copy of what was verified, not a source of
//! trust.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::artifact::{BundleMeta, check_blob, check_manifest, sha256_digest};
use crate::reference::{PolicyRef, check_digest};
use crate::signature::SignatureLayer;

pub struct Cache {
    root: PathBuf,
}

/// A bundle read back from the cache, checked.
#[derive(Clone, Debug)]
pub struct Cached {
    pub manifest_digest: String,
    pub module: Vec<u8>,
    pub meta: BundleMeta,
    pub signatures: Vec<SignatureLayer>,
}

#[derive(Serialize, Deserialize)]
struct StoredSignature {
    payload: String,
    signature: String,
}

#[derive(Serialize, Deserialize)]
struct TagRecord {
    reference: String,
    digest: String,
}

impl Cache {
    /// A cache under `dir` (the webhook's `--cache-dir`), in `dir/oci`.
    pub fn new(dir: &Path) -> Cache {
        Cache {
            root: dir.join("oci"),
        }
    }

    fn bundle_dir(&self, digest: &str) -> PathBuf {
        self.root.join("bundles").join(digest.replacen(':', "-", 1))
    }

    /// Stores a bundle that was just fetched and verified.
    pub fn store(
        &self,
        manifest_digest: &str,
        manifest: &[u8],
        module: &[u8],
        signatures: &[SignatureLayer],
    ) -> Result<()> {
        check_digest(manifest_digest)?;
        let target = self.bundle_dir(manifest_digest);
        if target.is_dir() {
            return Ok(());
        }
        let parent = target.parent().expect("bundles/");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the bundle cache {}", parent.display()))?;
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            &manifest_digest[7..19]
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let stored: Vec<StoredSignature> = signatures
            .iter()
            .map(|s| StoredSignature {
                payload: BASE64.encode(&s.payload),
                signature: s.signature.clone(),
            })
            .collect();
        let written = (|| -> std::io::Result<()> {
            std::fs::write(tmp.join("manifest.json"), manifest)?;
            std::fs::write(tmp.join("policy.wasm"), module)?;
            std::fs::write(
                tmp.join("signatures.json"),
                serde_json::to_vec(&stored).expect("signatures serialize"),
            )?;
            std::fs::rename(&tmp, &target)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another process may have stored the same bundle meanwhile.
            if !target.is_dir() {
                return Err(e).with_context(|| format!("writing {}", target.display()));
            }
        }
        Ok(())
    }

    /// The bundle with this manifest digest, if cached, after checking its
    /// manifest and layer against the digest again. A damaged entry is an
    /// error (and is left for inspection).
    pub fn load(&self, manifest_digest: &str) -> Result<Option<Cached>> {
        check_digest(manifest_digest)?;
        let dir = self.bundle_dir(manifest_digest);
        if !dir.is_dir() {
            return Ok(None);
        }
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .with_context(|| format!("reading {}", dir.join(name).display()))
        };
        let manifest = read("manifest.json")?;
        let checked = check_manifest(&manifest, manifest_digest)
            .with_context(|| format!("the cached bundle {} is damaged", dir.display()))?;
        let module = read("policy.wasm")?;
        check_blob(&checked.layer, &module)
            .with_context(|| format!("the cached bundle {} is damaged", dir.display()))?;
        let stored: Vec<StoredSignature> = serde_json::from_slice(&read("signatures.json")?)
            .with_context(|| format!("{}/signatures.json", dir.display()))?;
        let signatures = stored
            .into_iter()
            .map(|s| {
                Ok(SignatureLayer {
                    payload: BASE64.decode(&s.payload)?,
                    signature: s.signature,
                })
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("{}/signatures.json", dir.display()))?;
        Ok(Some(Cached {
            manifest_digest: manifest_digest.to_owned(),
            module,
            meta: checked.meta,
            signatures,
        }))
    }

    fn tag_file(&self, reference: &PolicyRef) -> PathBuf {
        let name = sha256_digest(reference.to_string().as_bytes());
        self.root.join("tags").join(format!("{}.json", &name[7..]))
    }

    /// Remembers the digest `reference` (a tag) resolved to.
    pub fn remember_tag(&self, reference: &PolicyRef, digest: &str) -> Result<()> {
        let path = self.tag_file(reference);
        let dir = path.parent().expect("tags/");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let record = TagRecord {
            reference: reference.to_string(),
            digest: digest.to_owned(),
        };
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&record).expect("serializes"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The digest `reference` (a tag) last resolved to, if known.
    pub fn tag(&self, reference: &PolicyRef) -> Option<String> {
        let bytes = std::fs::read(self.tag_file(reference)).ok()?;
        let record: TagRecord = serde_json::from_slice(&bytes).ok()?;
        (record.reference == reference.to_string() && check_digest(&record.digest).is_ok())
            .then_some(record.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::build;
    use crate::signature::{SigningKey, sign};

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("straddle-oci-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempdir("rt");
        let cache = Cache::new(&dir);
        let module = b"\0asm module";
        let a = build(module, &BundleMeta::default());
        assert!(cache.load(&a.manifest_digest).unwrap().is_none());
        let sig = sign(&SigningKey::generate(), "r.io/p", &a.manifest_digest);
        cache
            .store(
                &a.manifest_digest,
                &a.manifest,
                module,
                std::slice::from_ref(&sig),
            )
            .unwrap();
        let back = cache.load(&a.manifest_digest).unwrap().unwrap();
        assert_eq!(back.module, module);
        assert_eq!(back.signatures, vec![sig]);

        // A flipped byte in the cached module is found.
        let wasm = cache.bundle_dir(&a.manifest_digest).join("policy.wasm");
        std::fs::write(&wasm, b"\0asm modulX").unwrap();
        let e = format!("{:#}", cache.load(&a.manifest_digest).unwrap_err());
        assert!(e.contains("damaged") && e.contains("corrupted"), "{e}");

        let r = PolicyRef::parse("localhost:5000/p:v1").unwrap();
        assert_eq!(cache.tag(&r), None);
        cache.remember_tag(&r, &a.manifest_digest).unwrap();
        assert_eq!(cache.tag(&r), Some(a.manifest_digest.clone()));
        assert_eq!(cache.tag(&r.tagged("v2")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
