//! # reference: the checks' own computations, written independently of `solutions/`
//!
//! The `*_f64` functions are plain loops in f64 over row-major slices; weights use candle's
//! layout, (out, in). [`RefGpt`] is a MiniGPT held by the checks whose attention is whatever
//! module a task supplies, so that Task 3 can be graded without the learner's Task 1.
//!
//! [`bpe`] is a byte-level BPE written from Task 8's definitions as plainly as they read.
//!
//! [`gpt2`] is GPT-2's forward pass from a Hugging Face file's weights, and the ways of
//! loading them wrong that Task 9's diagnosis tries.
//!
//! The checks compare the learner's code with these; the model commands train [`RefGpt`] for
//! the tasks that write only its attention, and draw attention maps with
//! [`minigpt_f64_traced`]. [`curves`] holds the reference solutions' loss curves, which
//! `cargo xtask train` and the graded checks compare a run with.

pub mod attention;
pub mod bpe;
pub mod curves;
pub mod gpt2;
pub mod llama;
mod maths;
mod minigpt;
mod modules;
pub mod norm;
pub mod training;

pub use maths::*;
pub use minigpt::*;
pub use modules::*;
