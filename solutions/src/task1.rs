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
        let heads = (0..num_heads)
            .map(|i| AttentionHead::new(hidden, head_dim, vb.pp(format!("heads.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let width = num_heads * head_dim;
        let proj = dense(width, width, vb.pp("proj"))?;
        Ok(Self { heads, proj })
    }
}

impl Module for MultiHeadAttention {
    /// # Shapes
    /// (B, T, C) → (B, T, num_heads·head_dim)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let outs = self
            .heads
            .iter()
            .map(|h| h.forward(xs)) // each (B, T, head_dim)
            .collect::<Result<Vec<_>>>()?;
        let cat = Tensor::cat(&outs, D::Minus1)?; // (B, T, num_heads·head_dim)
        self.proj.forward(&cat)
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
        Ok(Self {
            ln_1: LayerNorm::new(hidden, vb.pp("ln_1"))?,
            attn: MultiHeadAttention::new(hidden, num_heads, hidden / num_heads, vb.pp("attn"))?,
            ln_2: LayerNorm::new(hidden, vb.pp("ln_2"))?,
            mlp: FeedForward::new(hidden, vb.pp("mlp"))?,
        })
    }
}

impl Module for DecoderBlock {
    /// # Shapes
    /// (B, T, C) → (B, T, C)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // Normalise the input of each sub-layer, and add its output to the residual stream.
        let xs = (xs + self.attn.forward(&self.ln_1.forward(xs)?)?)?;
        &xs + self.mlp.forward(&self.ln_2.forward(&xs)?)?
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
        let c = config.hidden;
        let blocks = (0..config.num_layers)
            .map(|i| DecoderBlock::new(c, config.num_heads, vb.pp(format!("h.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wte: embedding(config.vocab_size, c, vb.pp("wte"))?,
            wpe: embedding(config.block_size, c, vb.pp("wpe"))?,
            blocks,
            ln_f: LayerNorm::new(c, vb.pp("ln_f"))?,
            lm_head: dense(c, config.vocab_size, vb.pp("lm_head"))?,
            config,
        })
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
        if prompt.is_empty() {
            candle_core::bail!("generate needs a prompt of at least one token")
        }
        let device = self.wte.embeddings().device();
        let mut tokens = prompt.to_vec();
        for _ in 0..max_new_tokens {
            // The model has position embeddings for block_size positions only.
            let context = &tokens[tokens.len().saturating_sub(self.config.block_size)..];
            let x = Tensor::new(context, device)?.unsqueeze(0)?; // (1, T)
            let logits = self.forward(&x)?; // (1, T, V)
            let last = logits.i((0, context.len() - 1))?; // (V)
            tokens.push(sampler.sample(&last)?);
        }
        Ok(tokens)
    }
}

impl Module for MiniGPT {
    /// # Shapes
    /// (B, T) token ids, T ≤ block_size → (B, T, vocab_size) logits
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        let (_b, t) = idx.dims2()?;
        if t > self.config.block_size {
            candle_core::bail!(
                "MiniGPT got {t} positions but has position embeddings for {} only",
                self.config.block_size
            )
        }
        let positions = Tensor::arange(0u32, t as u32, idx.device())?; // (T)
        let tok = self.wte.forward(idx)?; // (B, T, C)
        let pos = self.wpe.forward(&positions)?; // (T, C)
        let mut xs = tok.broadcast_add(&pos)?;
        for block in &self.blocks {
            xs = block.forward(&xs)?;
        }
        self.lm_head.forward(&self.ln_f.forward(&xs)?) // (B, T, V)
    }
}
