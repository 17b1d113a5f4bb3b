//! What every crate's tests and benches share (one place each):
//!
//! - [`root`]: the repository root, for fixtures, specs and examples;
//! - [`process`]: child processes in their own process group that die with
//!   the test (rustix: `PR_SET_PDEATHSIG`, group signals), and the
//!   workspace's binaries (`straddle`, `straddle-webhook`) built on demand;
//! - [`scratch`]: scratch directories a killed test does not leave behind;
//! - [`review`]: AdmissionReview v1 requests shaped like the API server's,
//!   and their JSON Patch answers (the fuzz seeds are written with it too);
//! - [`policy`]: a stretch spec compiled by the `straddle` binary (the load
//!   bench; tests with the compiler at hand compile in process);
//! - [`registry`]: a real OCI registry on loopback;
//! - [`stats`]: what `/proc` says about a process, quantiles;
//! - [`host_plan`] (feature `host-plan`): a small plan in the real template;
//! - [`https`], [`webhook_child`] (feature `https`): a test PKI, an HTTPS
//!   client, and the `straddle-webhook` binary as a child on loopback.
//!
//! No workspace crate is a dependency (only the `host-plan` feature adds
//! the policy engine and template, whose own tests do not use this crate),
//! so every crate can take it as a dev-dependency without a cycle. Harnesses
//! that need the compiler (the chart model, control planes, the netns lab)
//! live in `straddle-tests`, built on this crate.

use std::path::{Path, PathBuf};

#[cfg(feature = "host-plan")]
pub mod host_plan;
#[cfg(feature = "https")]
pub mod https;
pub mod policy;
pub mod process;
pub mod registry;
pub mod review;
pub mod scratch;
pub mod stats;
#[cfg(feature = "https")]
pub mod webhook_child;

/// The repository root (the workspace's top directory).
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `rel` under the repository root.
pub fn path(rel: impl AsRef<Path>) -> PathBuf {
    root().join(rel)
}

/// An object of a chart fixture from its own JSON file
/// (`tests/fixtures/charts/<variant>/<file>`).
pub fn fixture_json(variant: &str, file: &str) -> serde_json::Value {
    let path = path(format!("tests/fixtures/charts/{variant}/{file}"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
