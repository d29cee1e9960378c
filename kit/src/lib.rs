//! # kit: what the minigpt-candle learner is given for free
//!
//! Everything a task needs but does not teach lives here:
//!
//! - [`tokenizer`] and [`data`]: characters to token ids (or any [`Codec`]: Task 8's BPE is
//!   one), the train / eval split, random batches;
//! - [`bpe`]: what Task 8's byte-level BPE tokenizer is given (GPT-2's chunks, its byte
//!   characters and its files);
//! - [`gpt2`]: what Task 9's GPT-2 is given (its settings from `config.json`, its weights
//!   file opened);
//! - [`init`]: parameters drawn from a seeded generator, so a run can be repeated exactly;
//! - [`nn`]: the layers a task uses but does not write (dense, embedding, LayerNorm,
//!   feed-forward, the Task 1 attention head);
//! - [`ops`]: what those layers compute, each op fused with an analytic backward pass (LayerNorm,
//!   causal softmax, cross-entropy, dense, causal attention) beside its composed twin;
//! - [`adam`]: plain Adam: its rule, [`adam::update`], and the optimiser that runs it in one
//!   in-place pass per parameter;
//! - [`train`]: the training loop; one step of it, forward → cross-entropy → backward → the
//!   optimiser's update, is [`train::step`], in `train/step.rs`;
//! - [`sample`]: drawing the next token from logits;
//! - [`decode`]: what a model with a cache offers a generation loop;
//! - [`checkpoint`]: a trained model, or a run that can go on, on disk.
//!
//! The settings ([`GptConfig`], [`train::TrainConfig`]), the corpus and the files written whole
//! come from the `common` crate, which the command line shares.
//!
//! The layers follow candle's shape: a struct, a constructor that takes its sizes and a
//! [`candle_nn::VarBuilder`], and `impl Module`.

pub mod adam;
pub mod bpe;
pub mod checkpoint;
pub mod data;
pub mod decode;
pub mod gpt2;
pub mod init;
pub mod nn;
pub mod ops;
pub mod sample;
pub mod tokenizer;
pub mod train;

pub use common::config::GptConfig;
pub use data::Dataset;
pub use init::SeededVarMap;
pub use sample::Sampler;
pub use tokenizer::{Codec, Tokenizer};
