//! kit's integration tests, one module per concern, in one test binary: each binary links kit
//! and candle at opt-level 3, so one binary builds much faster than one per file.

mod candle_claims;
mod common;
mod data;
mod ops;
mod resume;
mod train;
