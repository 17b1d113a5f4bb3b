//! The spec parser and checker on arbitrary YAML bytes;
//! the invariants are in `tests/src/fuzzing.rs` (`straddle_tests::fuzzing::spec_check`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| straddle_tests::fuzzing::spec_check(data));
