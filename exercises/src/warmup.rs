//! # Warm-up: a bigram model
//!
//! The simplest language model there is: it predicts the next character from the current one
//! alone. Its only parameter is a table with one row per token; row `t` holds the logits
//! (unnormalised log-probabilities) of every token that may follow `t`. An embedding layer is
//! exactly such a table, so the whole model is one `Embedding` of vocab_size × vocab_size.
//!
//! You write two things: `forward`, which looks up the rows, and `generate`, which writes text
//! greedily, always taking the most likely next token.
//!
//! Check your work with `cargo xtask check warmup`.
//!
//! **Think about it.** Once it is green, this task's section of docs/guide.md ends with a
//! question to think about: the workbook keeps its questions there.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

/// A bigram language model: the logits of the next token are the embedding row of the current one.
pub struct SimpleDecoder {
    token_embedding: Embedding,
}

impl SimpleDecoder {
    /// One (vocab_size × vocab_size) table, named `wte`.
    pub fn new(vocab_size: usize, vb: VarBuilder) -> Result<Self> {
        let token_embedding = kit::nn::embedding(vocab_size, vocab_size, vb.pp("wte"))?;
        Ok(Self { token_embedding })
    }

    /// Greedy generation: starting from `start_token`, append the most likely next token until
    /// the sequence holds `max_length` tokens (the start token included, so at least one).
    pub fn generate(&self, start_token: u32, max_length: usize) -> Result<Vec<u32>> {
        // TODO: greedy decoding. Start from [start_token]; until the sequence holds max_length
        // tokens, run the model on the last token alone, as a (B, T) = (1, 1) batch of ids, and
        // append the id whose logit is the largest of the (1, 1, vocab_size) result. kit::sample
        // has a helper for that; the ids go on the device the embedding table lives on.
        // Example: if row 23 is largest at 46, generate(23, 3) starts [23, 46, ...].
        todo!(
            "SimpleDecoder::generate: greedy decoding, append the argmax of the last token's logits until max_length tokens"
        )
    }
}

impl Module for SimpleDecoder {
    /// # Shapes
    /// (B, T) token ids → (B, T, vocab_size) logits
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // TODO: each token id indexes a row of the embedding table; that row is the logits of the
        // next token. One call to the embedding layer does this for the whole (B, T) batch.
        todo!(
            "SimpleDecoder::forward: look up each token's row of the embedding table, (B, T) -> (B, T, vocab_size)"
        )
    }
}
