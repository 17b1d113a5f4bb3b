//! The policy bundle as an OCI artifact, following the CNCF TAG Runtime
//! "Wasm OCI artifact" layout: an image manifest whose config has media type
//! `application/vnd.wasm.config.v0+json` and whose one layer is the module,
//! `application/wasm`. Tools that know the layout (wasm-pkg-tools, runwasi,
//! ORAS) see a Wasm component; Straddle's own facts ride in annotations.
//!
//! Everything here is deterministic: the same module gives the same config,
//! manifest and manifest digest, so re-pushing a bundle never changes what
//! clusters pinned.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};

use crate::reference::check_digest;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";

/// Standard annotation keys (OCI image spec, "Pre-Defined Annotation Keys").
pub const TITLE: &str = "org.opencontainers.image.title";
pub const DESCRIPTION: &str = "org.opencontainers.image.description";
/// Straddle's annotation keys.
pub const STRETCH: &str = "dev.straddle.stretch";
pub const SPEC_DIGEST: &str = "dev.straddle.spec-digest";
pub const CLUSTERS: &str = "dev.straddle.clusters";
pub const NAMESPACES: &str = "dev.straddle.namespaces";
pub const COMPILER_VERSION: &str = "dev.straddle.compiler-version";

/// The file name the layer carries (ORAS writes the layer under it).
pub const LAYER_TITLE: &str = "policy.wasm";

/// A manifest or blob larger than this is refused before it is read whole.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
pub const MAX_MODULE_BYTES: i64 = 64 << 20;

/// What the module says about itself (`describe()`), as annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleMeta {
    pub name: String,
    pub spec_digest: String,
    pub clusters: Vec<String>,
    pub namespaces: Vec<String>,
    pub compiler_version: String,
}

impl BundleMeta {
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                DESCRIPTION.to_owned(),
                format!("Straddle policy for stretch {}", self.name),
            ),
            (STRETCH.to_owned(), self.name.clone()),
            (SPEC_DIGEST.to_owned(), self.spec_digest.clone()),
            (CLUSTERS.to_owned(), self.clusters.join(",")),
            (NAMESPACES.to_owned(), self.namespaces.join(",")),
            (COMPILER_VERSION.to_owned(), self.compiler_version.clone()),
        ])
    }

    /// Reads the annotations back (missing ones stay empty).
    pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> BundleMeta {
        let get = |key: &str| {
            annotations
                .and_then(|a| a.get(key))
                .cloned()
                .unwrap_or_default()
        };
        let list = |key: &str| {
            get(key)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        BundleMeta {
            name: get(STRETCH),
            spec_digest: get(SPEC_DIGEST),
            clusters: list(CLUSTERS),
            namespaces: list(NAMESPACES),
            compiler_version: get(COMPILER_VERSION),
        }
    }
}

/// The config blob of the Wasm OCI layout (`application/vnd.wasm.config.v0+json`).
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct WasmConfig {
    /// Fixed (the Unix epoch), so the same module always gives the same
    /// manifest digest; reproducible-build tools (ko, apko) do the same.
    created: String,
    architecture: String,
    os: String,
    layer_digests: Vec<String>,
    component: ComponentInfo,
}

#[derive(Serialize, Deserialize, Debug)]
struct ComponentInfo {
    exports: Vec<String>,
    imports: Vec<String>,
}

/// What `push` uploads: two blobs and the manifest naming them.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

/// `sha256:<hex>` of `bytes`: the digest spelling shared with the host and
/// the webhook (a bundle's layer digest is its module's digest).
pub use straddle_policy::digest::sha256 as sha256_digest;

/// Builds the artifact for a policy module.
pub fn build(module: &[u8], meta: &BundleMeta) -> Artifact {
    let layer_digest = sha256_digest(module);
    let config = WasmConfig {
        created: "1970-01-01T00:00:00Z".to_owned(),
        architecture: "wasm".to_owned(),
        // A component (the layout's `wasip2`), though it imports nothing.
        os: "wasip2".to_owned(),
        layer_digests: vec![layer_digest.clone()],
        component: ComponentInfo {
            exports: vec!["straddle:policy/review@0.1.0".to_owned()],
            imports: Vec::new(),
        },
    };
    let config = serde_json::to_vec(&config).expect("a config serializes");
    let config_digest = sha256_digest(&config);
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: OciDescriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: config_digest.clone(),
            size: config.len() as i64,
            ..OciDescriptor::default()
        },
        layers: vec![OciDescriptor {
            media_type: LAYER_MEDIA_TYPE.to_owned(),
            digest: layer_digest.clone(),
            size: module.len() as i64,
            annotations: Some(BTreeMap::from([(TITLE.to_owned(), LAYER_TITLE.to_owned())])),
            ..OciDescriptor::default()
        }],
        subject: None,
        artifact_type: None,
        annotations: Some(meta.annotations()),
    };
    let manifest = serde_json::to_vec(&manifest).expect("a manifest serializes");
    Artifact {
        manifest_digest: sha256_digest(&manifest),
        config,
        config_digest,
        layer_digest,
        manifest,
    }
}

/// A pulled manifest that passed [`check_manifest`].
#[derive(Clone, Debug)]
pub struct PolicyManifest {
    pub layer: OciDescriptor,
    pub meta: BundleMeta,
}

/// Checks a manifest fetched for `digest` (its bytes must hash to it) and
/// that it is a policy bundle: an OCI image manifest, schema 2, the Wasm
/// config media type, exactly one `application/wasm` layer of sane size.
pub fn check_manifest(bytes: &[u8], digest: &str) -> Result<PolicyManifest> {
    check_digest(digest)?;
    let actual = sha256_digest(bytes);
    ensure!(
        actual == digest,
        "the manifest's bytes hash to {actual}, not the expected {digest}: the registry (or a \
         proxy) served something else; refusing it"
    );
    let manifest: OciImageManifest =
        serde_json::from_slice(bytes).context("the manifest is not an OCI image manifest")?;
    ensure!(
        manifest.schema_version == 2,
        "manifest schemaVersion is {}, expected 2",
        manifest.schema_version
    );
    if let Some(media_type) = &manifest.media_type {
        ensure!(
            media_type == MANIFEST_MEDIA_TYPE,
            "manifest mediaType is {media_type:?}, expected {MANIFEST_MEDIA_TYPE:?}"
        );
    }
    ensure!(
        manifest.config.media_type == CONFIG_MEDIA_TYPE,
        "this artifact is not a Wasm policy bundle: config mediaType is {:?}, expected {:?} \
         (push it with `straddle push`)",
        manifest.config.media_type,
        CONFIG_MEDIA_TYPE
    );
    let [layer] = manifest.layers.as_slice() else {
        bail!(
            "a policy bundle has exactly one layer, this manifest has {}",
            manifest.layers.len()
        );
    };
    ensure!(
        layer.media_type == LAYER_MEDIA_TYPE,
        "the layer's mediaType is {:?}, expected {LAYER_MEDIA_TYPE:?}",
        layer.media_type
    );
    check_digest(&layer.digest).context("the layer's digest")?;
    ensure!(
        (0..=MAX_MODULE_BYTES).contains(&layer.size),
        "the layer's size {} is outside 0..={MAX_MODULE_BYTES}",
        layer.size
    );
    Ok(PolicyManifest {
        layer: layer.clone(),
        meta: BundleMeta::from_annotations(manifest.annotations.as_ref()),
    })
}

/// Checks a fetched blob against its descriptor: size and digest.
pub fn check_blob(descriptor: &OciDescriptor, bytes: &[u8]) -> Result<()> {
    ensure!(
        bytes.len() as i64 == descriptor.size,
        "blob {} has {} bytes, the manifest says {}: refusing it",
        descriptor.digest,
        bytes.len(),
        descriptor.size
    );
    let actual = sha256_digest(bytes);
    ensure!(
        actual == descriptor.digest,
        "blob {} hashes to {actual}: corrupted or replaced in the registry; refusing it",
        descriptor.digest
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> BundleMeta {
        BundleMeta {
            name: "kafka-stretch".into(),
            spec_digest: format!("sha256:{}", "ab".repeat(32)),
            clusters: vec!["east".into(), "west".into(), "witness".into()],
            namespaces: vec!["kafka".into()],
            compiler_version: "0.1.0".into(),
        }
    }

    #[test]
    fn manifest_follows_the_wasm_layout_and_round_trips() {
        let module = b"\0asm fake module bytes";
        let a = build(module, &meta());
        let json: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(json["schemaVersion"], 2);
        assert_eq!(json["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(json["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(json["config"]["digest"], a.config_digest.as_str());
        assert_eq!(json["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(json["layers"][0]["size"], module.len());
        assert_eq!(json["annotations"][CLUSTERS], "east,west,witness");
        let config: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["layerDigests"][0], sha256_digest(module).as_str());

        let checked = check_manifest(&a.manifest, &a.manifest_digest).unwrap();
        assert_eq!(checked.meta, meta());
        check_blob(&checked.layer, module).unwrap();
        // Deterministic: same module, same digest.
        assert_eq!(build(module, &meta()).manifest_digest, a.manifest_digest);
    }

    #[test]
    fn tampering_is_refused() {
        let module = b"\0asm module";
        let a = build(module, &meta());
        let other = sha256_digest(b"other");
        let e = check_manifest(&a.manifest, &other).unwrap_err().to_string();
        assert!(e.contains("refusing"), "{e}");
        let layer = check_manifest(&a.manifest, &a.manifest_digest)
            .unwrap()
            .layer;
        let e = check_blob(&layer, b"\0asm modulX").unwrap_err().to_string();
        assert!(e.contains("corrupted"), "{e}");
        let e = check_blob(&layer, b"\0asm module+")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bytes"), "{e}");
    }

    #[test]
    fn other_artifacts_are_named() {
        let mut m: serde_json::Value =
            serde_json::from_slice(&build(b"x", &meta()).manifest).unwrap();
        m["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        let bytes = serde_json::to_vec(&m).unwrap();
        let e = check_manifest(&bytes, &sha256_digest(&bytes))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Wasm policy bundle"), "{e}");
        m["config"]["mediaType"] = CONFIG_MEDIA_TYPE.into();
        m["layers"] = serde_json::json!([]);
        let bytes = serde_json::to_vec(&m).unwrap();
        let e = check_manifest(&bytes, &sha256_digest(&bytes))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one layer"), "{e}");
    }
}
