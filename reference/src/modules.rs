//! The checks' MiniGPT as candle modules: [`RefGpt`], whose attention is whatever module a task
//! supplies, and two such attentions, per-head ([`Heads`]) and fused ([`FusedHeads`]).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use kit::nn::{AttentionHead, Dense, FeedForward, LayerNorm, MultiHead, dense, embedding};
use kit::{GptConfig, Sampler};

/// A MiniGPT held by the checks, whose blocks use attention modules made by `make_attention`
/// (hidden, num_heads, head_dim, vb), and normalisations made by `make_norm` (dim, vb): kit's
/// LayerNorm unless a task supplies its own. Its parameters have Task 1's names.
pub struct RefGpt<A: Module, N: Module = LayerNorm> {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<(N, A, N, FeedForward)>,
    ln_f: N,
    lm_head: Dense,
}

impl<A: Module> RefGpt<A> {
    pub fn new(
        cfg: GptConfig,
        vb: VarBuilder,
        make_attention: impl Fn(usize, usize, usize, VarBuilder) -> Result<A>,
    ) -> Result<Self> {
        Self::with_norm(cfg, vb, make_attention, LayerNorm::new)
    }
}

impl<A: Module, N: Module> RefGpt<A, N> {
    pub fn with_norm(
        cfg: GptConfig,
        vb: VarBuilder,
        make_attention: impl Fn(usize, usize, usize, VarBuilder) -> Result<A>,
        make_norm: impl Fn(usize, VarBuilder) -> Result<N>,
    ) -> Result<Self> {
        let c = cfg.hidden;
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let vb = vb.pp(format!("h.{i}"));
                Ok((
                    make_norm(c, vb.pp("ln_1"))?,
                    make_attention(c, cfg.num_heads, cfg.head_dim(), vb.pp("attn"))?,
                    make_norm(c, vb.pp("ln_2"))?,
                    FeedForward::new(c, vb.pp("mlp"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wte: embedding(cfg.vocab_size, c, vb.pp("wte"))?,
            wpe: embedding(cfg.block_size, c, vb.pp("wpe"))?,
            blocks,
            ln_f: make_norm(c, vb.pp("ln_f"))?,
            lm_head: dense(c, cfg.vocab_size, vb.pp("lm_head"))?,
        })
    }
}

impl<N: Module> RefGpt<Heads, N> {
    /// The reference MiniGPT: Task 1's architecture with the checks' own [`Heads`], and
    /// normalisations made by `make_norm` (kit's `LayerNorm::new`, or a task's own).
    pub fn minigpt(
        cfg: GptConfig,
        vb: VarBuilder,
        make_norm: impl Fn(usize, VarBuilder) -> Result<N>,
    ) -> Result<Self> {
        Self::with_norm(cfg, vb, Heads::new, make_norm)
    }
}

/// Task 1's multi-head attention, the checks' own: `num_heads` heads on the same input, named
/// `heads.{i}` (kit's `AttentionHead` unless made otherwise), concatenated on the features,
/// then a dense layer `proj`.
pub struct Heads<H: Module = AttentionHead> {
    heads: Vec<H>,
    proj: Dense,
}

impl Heads {
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::with(hidden, num_heads, head_dim, vb, AttentionHead::new)
    }
}

impl<H: Module> Heads<H> {
    /// Heads made by `make_head` (hidden, head_dim, vb).
    pub fn with(
        hidden: usize,
        num_heads: usize,
        head_dim: usize,
        vb: VarBuilder,
        make_head: impl Fn(usize, usize, VarBuilder) -> Result<H>,
    ) -> Result<Self> {
        let heads = (0..num_heads)
            .map(|i| make_head(hidden, head_dim, vb.pp(format!("heads.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let width = num_heads * head_dim;
        Ok(Self {
            heads,
            proj: dense(width, width, vb.pp("proj"))?,
        })
    }
}

impl<H: Module> Module for Heads<H> {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let outs = self
            .heads
            .iter()
            .map(|h| h.forward(xs))
            .collect::<Result<Vec<_>>>()?;
        self.proj
            .forward(&Tensor::cat(&outs, candle_core::D::Minus1)?)
    }
}

/// Task 3's multi-head attention, the checks' own: one projection each for queries, keys and
/// values of width num_heads·head_dim (head `i` owning columns `i·head_dim..(i+1)·head_dim`),
/// causal attention in every head, the heads merged back in order, then `proj`. Its
/// parameters have Task 3's names; written with candle's ops, without einsum.
pub struct FusedHeads(MultiHead);

impl FusedHeads {
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        MultiHead::new(hidden, num_heads, head_dim, vb).map(Self)
    }
}

impl Module for FusedHeads {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let heads = &self.0;
        let (b, t, _c) = xs.dims3()?;
        let (n, h) = (heads.num_heads, heads.head_dim);
        let split = |y: Tensor| y.reshape((b, t, n, h))?.transpose(1, 2)?.contiguous();
        let q = split(heads.query.forward(xs)?)?; // (B, n, T, h)
        let k = split(heads.key.forward(xs)?)?;
        let v = split(heads.value.forward(xs)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?; // (B, n, T, T)
        let weights = kit::ops::causal_softmax(&scores, 1.0 / (h as f64).sqrt())?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.contiguous()?; // (B, T, n, h)
        heads.proj.forward(&out.reshape((b, t, n * h))?)
    }
}

impl<A: Module, N: Module> RefGpt<A, N> {
    /// `prompt` followed by `n` tokens drawn by `sampler`, each from the logits of the last
    /// position given at most the last block_size tokens.
    pub fn generate(&self, sampler: &mut Sampler, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            candle_core::bail!("an empty prompt has no last position to sample from")
        }
        let positions = self.wpe.embeddings().dim(0)?;
        let mut tokens = prompt.to_vec();
        while tokens.len() < prompt.len() + n {
            let start = tokens.len().saturating_sub(positions);
            let window = Tensor::new(&tokens[start..], self.wpe.embeddings().device())?;
            let logits = self.forward(&window.unsqueeze(0)?)?.squeeze(0)?; // (T, V)
            let next = logits.get(logits.dim(0)? - 1)?;
            tokens.push(sampler.sample(&next)?);
        }
        Ok(tokens)
    }
}

impl<A: Module, N: Module> RefGpt<A, N> {
    /// The logits of `idx` (B, T) with token `i` embedded at `positions[i]` instead of `i`: what
    /// a cached model computes when it numbers its steps' positions otherwise.
    pub fn forward_at(&self, idx: &Tensor, positions: &[u32]) -> Result<Tensor> {
        let pos = Tensor::new(positions, idx.device())?;
        let mut x = self
            .wte
            .forward(idx)?
            .broadcast_add(&self.wpe.forward(&pos)?)?;
        for (ln_1, attn, ln_2, mlp) in &self.blocks {
            x = (&x + attn.forward(&ln_1.forward(&x)?)?)?;
            x = (&x + mlp.forward(&ln_2.forward(&x)?)?)?;
        }
        self.lm_head.forward(&self.ln_f.forward(&x)?)
    }
}

impl<A: Module, N: Module> Module for RefGpt<A, N> {
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        let (_b, t) = idx.dims2()?;
        self.forward_at(idx, &(0..t as u32).collect::<Vec<_>>())
    }
}
