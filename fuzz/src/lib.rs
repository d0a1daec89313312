//! The fuzz targets' bodies, shared with `tests/fuzz_regressions.rs`.

pub mod checks;
