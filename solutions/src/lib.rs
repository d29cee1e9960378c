//! # minigpt-candle: reference solutions
//!
//! The same files and public API as `exercises/`, filled in. The checks grade this crate with
//! `cargo test --features solutions` (or `cargo xtask check <task> --solutions`).
//!
//! Work through the tasks in order:
//!
//! 1. [`warmup`]: a bigram model, greedy generation.
//! 2. [`task1`]: MiniGPT from given parts, trained on tiny Shakespeare.
//! 3. [`task2`]: causal self-attention, written by hand.
//! 4. [`task3`]: multi-head attention with einsum.

pub mod task1;
pub mod task2;
pub mod task3;
pub mod warmup;
