//! The webhook's AdmissionReview decoder on an arbitrary request body;
//! the invariants are in `tests/src/fuzzing.rs` (`straddle_tests::fuzzing::admission_decode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| straddle_tests::fuzzing::admission_decode(data));
