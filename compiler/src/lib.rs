//! The Straddle compiler: stretch spec -> validated topology -> plan -> policy module.
//!
//! Pure logic (spec, topology, charts, quorum, plan) is separate from I/O,
//! which lives in the `straddle` binary (`main.rs`).

pub mod admission_policy;
pub mod charts;
pub mod compile;
pub mod diag;
pub mod explain;
pub mod manifest;
pub mod preview;
pub mod quorum;
pub mod render;
pub mod rollout;
pub mod spec;
pub mod topology;

pub use compile::{Checked, check, module, plan};
