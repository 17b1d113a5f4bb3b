//! End-to-end tests live in `tests/tests/`.
//!
//! The library holds what the fuzz targets in `fuzz/` share with the tests:
//! the invariants each target checks ([`fuzzing`]).

pub mod fuzzing;
