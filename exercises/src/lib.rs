//! # minigpt-candle: exercises
//!
//! Fill in each `todo!()`, file by file, and grade your work with `cargo xtask check <task>`.
//! The reference answers are in `solutions/`, with the same files and API.
//!
//! Work through the tasks in order. Part I, a GPT from its parts, and attention by hand:
//!
//! - Warm-up, [`warmup`]: a bigram model, greedy generation.
//! - Task 1, [`task1`]: MiniGPT from given parts, trained on tiny Shakespeare.
//! - Task 2, [`task2`]: causal self-attention, written by hand.
//! - Task 3, [`task3`]: multi-head attention with einsum.
//!
//! Part II, how a model is trained and how a transformer is built today:
//!
//! - Task 4, [`task4`]: the training step by hand: cross-entropy, Adam, a schedule, clipping.
//! - Task 5, [`task5`]: a backward pass by hand: LayerNorm as a custom op.
//! - Task 6, [`task6`]: generation with a KV cache.
//! - Task 7, [`task7`]: a modern block: RMSNorm, rotary position embeddings, SwiGLU.
//!
//! Part III, real tokens and real weights:
//!
//! - Task 8, [`task8`]: a byte-level BPE tokenizer, GPT-2's, trained on tiny Shakespeare.
//! - Task 9, [`task9`]: OpenAI's GPT-2, its published weights loaded into your own code.

// Until a stub is filled in, its imports, arguments and fields go unused; these warnings would
// only be noise while you work.
#![allow(unused_imports, unused_variables, dead_code)]

pub mod task1;
pub mod task2;
pub mod task3;
pub mod task4;
pub mod task5;
pub mod task6;
pub mod task7;
pub mod task8;
pub mod task9;
pub mod warmup;
