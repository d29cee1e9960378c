//! # Task 1: MiniGPT from given parts
//!
//! Assemble a small GPT from parts that `kit` gives you, train it on tiny Shakespeare, and
//! watch it learn to write something like a play.
//!
//! Shapes use three letters: `B` the batch size, `T` the number of positions (at most
//! `block_size`), `C` the hidden size. Token ids come in as (B, T) `u32`; every layer in between
//! carries (B, T, C) floats; the model ends with (B, T, vocab_size) logits. The README's
//! diagram ("The model") draws the whole of it, with the names of its parts.
//!
//! Given in `kit::nn` (read them, do not rewrite them):
//! - `AttentionHead::new(hidden, head_dim, vb)`: one causal self-attention head,
//!   (B, T, C) → (B, T, head_dim);
//! - `FeedForward::new(hidden, vb)`: Dense(4·C), ReLU, Dense(C);
//! - `LayerNorm::new(dim, vb)`: normalises the last dimension (with a working backward pass;
//!   candle-nn's `LayerNorm`, given a bias as `candle_nn::layer_norm` gives it one, runs the
//!   fused `candle_nn::ops::layer_norm` on a contiguous input, which records no graph node, and
//!   every gradient would stop there without an error, so do not use it here);
//! - `dense(in, out, vb)`, `dense_no_bias(in, out, vb)`, `embedding(n, dim, vb)`;
//! - `kit::Sampler`: draws a token from logits, `sampler.sample(&logits)?`.
//!
//! Name parameters with `vb.pp("name")` as the doc comments say: the checks compare your
//! parameter table with the architecture.
//!
//! Check your work with `cargo xtask check task1`.

use candle_core::{D, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use kit::nn::{AttentionHead, Dense, FeedForward, LayerNorm, dense, embedding};
use kit::{GptConfig, Sampler};

/// `num_heads` attention heads side by side, their outputs concatenated on the last dimension,
/// then mixed by a dense layer.
pub struct MultiHeadAttention {
    heads: Vec<AttentionHead>,
    proj: Dense,
}

impl MultiHeadAttention {
    /// Heads named `heads.0`, `heads.1`, ...; the output layer `proj`:
    /// Dense(num_heads·head_dim → num_heads·head_dim) with a bias.
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        // TODO: num_heads attention heads from hidden to head_dim, named heads.0, heads.1, ...,
        // then a dense layer named proj from width to width, width = num_heads · head_dim. The
        // doc comment above names the parameters that the parameter-table check compares.
        todo!(
            "MultiHeadAttention::new: {num_heads} heads of {head_dim} dimensions, then the proj layer"
        )
    }
}

impl Module for MultiHeadAttention {
    /// # Shapes
    /// (B, T, C) → (B, T, num_heads·head_dim)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // TODO: run every head on xs, each giving (B, T, head_dim); join them along the feature
        // dimension, head 0 first, into (B, T, num_heads · head_dim), and apply proj.
        todo!(
            "MultiHeadAttention::forward: run each head, concatenate on the last dimension, apply proj"
        )
    }
}

/// A pre-norm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
pub struct DecoderBlock {
    ln_1: LayerNorm,
    attn: MultiHeadAttention,
    ln_2: LayerNorm,
    mlp: FeedForward,
}

impl DecoderBlock {
    /// Parts named `ln_1`, `attn`, `ln_2`, `mlp`; each head has hidden / num_heads dimensions.
    pub fn new(hidden: usize, num_heads: usize, vb: VarBuilder) -> Result<Self> {
        // TODO: ln_1 and ln_2, LayerNorms over hidden; attn, num_heads heads of hidden / num_heads
        // dimensions each; mlp, the given feed-forward layer over hidden.
        todo!(
            "DecoderBlock::new: ln_1, attn, ln_2 and mlp for hidden size {hidden} and {num_heads} heads"
        )
    }
}

impl Module for DecoderBlock {
    /// # Shapes
    /// (B, T, C) → (B, T, C)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // TODO: pre-norm residuals. First x + attn(ln_1(x)), then, on that result, x + mlp(ln_2(x)):
        // each sub-layer sees a normalised input, and its output is added to the x it was given.
        todo!("DecoderBlock::forward: x + attn(ln_1(x)), then x + mlp(ln_2(x))")
    }
}

/// The whole model: token and position embeddings, `num_layers` blocks, a final LayerNorm and
/// a dense layer to the vocabulary.
pub struct MiniGPT {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<DecoderBlock>,
    ln_f: LayerNorm,
    lm_head: Dense,
    config: GptConfig,
}

impl MiniGPT {
    /// Parts named `wte` (vocab_size × C), `wpe` (block_size × C), `h.0`, `h.1`, ... (the
    /// blocks), `ln_f` and `lm_head` (Dense C → vocab_size, with a bias).
    pub fn new(config: GptConfig, vb: VarBuilder) -> Result<Self> {
        // TODO: wte, a token embedding (vocab_size × hidden); wpe, a position embedding
        // (block_size × hidden); num_layers blocks named h.0, h.1, ...; ln_f, a LayerNorm; and
        // lm_head, a dense layer from hidden to vocab_size. Keep `config` in the struct.
        todo!(
            "MiniGPT::new: wte, wpe, {} blocks named h.i, ln_f and lm_head",
            config.num_layers
        )
    }

    /// Appends `max_new_tokens` sampled tokens to `prompt`. Each step feeds the model the last
    /// `block_size` tokens at most and samples from the logits of the last position. An empty
    /// prompt is an error: it has no last position to sample from.
    pub fn generate(
        &self,
        sampler: &mut Sampler,
        prompt: &[u32],
        max_new_tokens: usize,
    ) -> Result<Vec<u32>> {
        // TODO: refuse an empty prompt. max_new_tokens times: run the model on the last
        // block_size tokens at most (it has no position embedding beyond that) as a batch of one,
        // (1, T); draw the next token with the sampler from the logits of the last position, a
        // (vocab_size) vector, and append it. Return the prompt followed by the new tokens.
        todo!("MiniGPT::generate: sample max_new_tokens tokens, cropping the context to block_size")
    }
}

impl Module for MiniGPT {
    /// # Shapes
    /// (B, T) token ids, T ≤ block_size → (B, T, vocab_size) logits
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        // TODO: refuse T > block_size with an error. Then the token embeddings of the ids,
        // (B, T, C), plus the position embeddings of positions 0..T, (T, C), added to every row of
        // the batch; every block in order; ln_f; lm_head: (B, T, vocab_size).
        todo!("MiniGPT::forward: embeddings, blocks, ln_f, lm_head: (B, T) -> (B, T, vocab_size)")
    }
}
