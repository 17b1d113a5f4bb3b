//! The policy engine on an arbitrary object against real compiled plans;
//! the invariants are in `tests/src/fuzzing.rs` (`straddle_tests::fuzzing::policy_review`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| straddle_tests::fuzzing::policy_review(data));
