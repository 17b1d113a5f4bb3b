//! `straddle-webhook`: the Straddle mutating admission webhook.
//!
//! `POST /mutate` takes an `admission.k8s.io/v1` AdmissionReview, runs the
//! compiled policy module on the object through `straddle-policy-host` (the
//! same runtime as `straddle mutate`: one wasmtime engine, memory- and
//! time-limited instances, kept warm between reviews that end cleanly) and
//! answers with a base64 JSON Patch
//! or a denial. The policy file and the TLS files are reloaded when they
//! change; `/healthz`, `/readyz` and `/metrics` serve operations.
//!
//! ```text
//! main.rs   flags, logging, signals
//! server    listeners, TLS accept, routes, body limits, review slots, drain
//! admission AdmissionReview in -> policy -> AdmissionReview out (pure)
//! app       what requests and tasks share: active policy, metrics, limits
//! policy    load + validate a module; the active policy (atomic swap)
//! source    `--policy` file or `oci://…`: one watch loop, one install path
//!           (registry bundles fetched, verified and cached)
//! reload    polling watcher for the certificate, key, client CA
//! tls       rustls configuration from PEM files
//! metrics   Prometheus metrics
//! certs     self-managed certificates: make, renew, Secret data (pure)
//! certs_kube  ... and their Secret, caBundle patch and files (kube-rs)
//! ```

pub mod admission;
pub mod app;
pub mod certs;
pub mod certs_kube;
pub mod config;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod server;
pub mod source;
pub mod tls;
pub mod workers;

pub use app::App;
pub use config::{Config, LogFormat, OnPolicyError};
pub use server::Server;
