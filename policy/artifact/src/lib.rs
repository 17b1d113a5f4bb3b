//! The Straddle policy template and the plan embedder.
//!
//! [`POLICY_TEMPLATE`] is the `straddle-policy-guest` crate built for
//! `wasm32-unknown-unknown` (profile `guest`) and wrapped into a WebAssembly
//! component with `wit-component`. It exports `straddle:policy/review` and
//! imports nothing. It holds no plan: until [`embed::embed_plan`] patches one
//! in, `review` denies every request ("policy module has no valid plan: …")
//! and `describe` returns an empty bundle.
//!
//! The build script builds the guest with a nested cargo on demand (see
//! `build.rs`); `STRADDLE_POLICY_GUEST_WASM=<core module>` skips that.
//!
//! ```no_run
//! # fn plan_bytes() -> Vec<u8> { unimplemented!() }
//! let module = straddle_policy_artifact::embed::embed_plan(
//!     straddle_policy_artifact::POLICY_TEMPLATE,
//!     &plan_bytes(),
//! )?;
//! assert_eq!(straddle_policy_artifact::embed::read_plan(&module)?, plan_bytes());
//! # anyhow::Ok(())
//! ```

pub mod embed;

/// The policy component without a plan (the input of [`embed::embed_plan`]).
pub const POLICY_TEMPLATE: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/policy-template.wasm"));

/// The guest's core module, before it was wrapped into a component. For tests
/// and size reports; [`embed::embed_plan`] accepts it too.
pub const GUEST_CORE_MODULE: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/policy-guest-core.wasm"));
