//! The Straddle policy engine.
//!
//! A pure function from (plan, admission request) to a verdict: allow, a
//! JSON Patch, or a denial. The same code runs natively (compiler tests,
//! `straddle explain`) and inside the wasm policy module.
//!
//! The plan (see [`plan`]) carries, for every object the stretch spec names
//! in every cluster, the *desired* values computed by the compiler. The
//! engine reads only the record of the object under review and emits patch
//! operations where the object differs from those values, so reviewing an
//! already-mutated object yields no patch, and CREATE and UPDATE agree.

pub mod admission;
#[cfg(feature = "digest")]
pub mod digest;
pub mod engine;
pub mod json;
pub mod k8s;
pub mod patch;
pub mod plan;
pub mod props;

pub use engine::{Operation, Request, Verdict, review};
pub use plan::{BundleInfo, Plan, PlanError};
