//! # checks: the graded tests of minigpt-candle
//!
//! The tests in `tests/` grade the crate re-exported here as [`learner`]: `exercises` by
//! default, `solutions` with the `solutions` feature. The checks never use `solutions` as their
//! reference: the `reference` crate holds their own, written independently (plain f64 loops
//! where exactness matters).
//!
//! Run them with `cargo xtask check <task>`; the maintainers' `cargo test --features solutions`
//! runs them all against the reference solutions.

#[cfg(not(feature = "solutions"))]
pub use exercises as learner;
#[cfg(feature = "solutions")]
pub use solutions as learner;

pub mod diagnose;
pub mod fixture;
pub mod support;
