//! Policy bundles in OCI registries: push once, every cluster runs the same
//! signed digest.
//!
//! ```text
//! reference  `oci://REGISTRY/REPO[:TAG][@sha256:…]` parsing (pure)
//! artifact   the Wasm OCI artifact: config, layer, manifest, annotations;
//!            checks of pulled manifests and blobs (pure)
//! signature  cosign-compatible key-based signatures: simple-signing
//!            payload, ECDSA P-256, the `sha256-<hex>.sig` manifest (pure)
//! auth       credentials: flags, environment, Docker `config.json` (pure)
//! cache      verified bundles on disk, by manifest digest; last digest of a tag
//! registry   the registry I/O (oci-client over reqwest/rustls) and
//!            errors that say what to do
//! ```
//!
//! The pure modules never touch the network, so every rule (what a valid
//! manifest is, what a valid signature is) is unit-tested without a
//! registry; `registry` only moves bytes and hands them to those rules.

pub mod artifact;
pub mod auth;
pub mod cache;
pub mod flags;
pub mod reference;
pub mod registry;
pub mod signature;

pub use artifact::{BundleMeta, sha256_digest};
pub use auth::Credentials;
pub use cache::Cache;
pub use flags::RegistryFlags;
pub use reference::PolicyRef;
pub use registry::{Connection, Pulled, Pushed, Registry};
pub use signature::{SigningKey, VerifyingKey};
