//! # reference: the checks' own computations, written independently of `solutions/`
//!
//! The `*_f64` functions are plain loops in f64 over row-major slices; weights use candle's
//! layout, (out, in). [`RefGpt`] is a MiniGPT held by the checks whose attention is whatever
//! module a task supplies, so that Task 3 can be graded without the learner's Task 1.
//!
//! The checks compare the learner's code with these; the model commands train [`RefGpt`] for
//! the tasks that write only its attention, and draw attention maps with
//! [`minigpt_f64_traced`]. [`curves`] holds the reference solutions' loss curves, which
//! `cargo xtask train` and the graded checks compare a run with.

pub mod curves;
pub mod llama;
pub mod norm;
pub mod training;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use kit::nn::{AttentionHead, Dense, FeedForward, LayerNorm, dense, embedding};
use kit::{GptConfig, Sampler, SeededVarMap};

/// Values of a tensor as f64, flattened.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("tensor values")
}

/// The value of a named parameter as f64, row-major.
pub fn param(params: &SeededVarMap, name: &str) -> Vec<f64> {
    let vars = params.named_vars();
    let var = vars.iter().find(|(n, _)| n == name).unwrap_or_else(|| {
        panic!(
            "no parameter named {name}; the model has: {}",
            vars.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    values(var.1.as_tensor())
}

/// `y = x Wᵀ + b` for `rows` rows of `x` (rows × n_in), `w` (n_out × n_in).
pub fn dense_f64(x: &[f64], rows: usize, w: &[f64], b: Option<&[f64]>, n_out: usize) -> Vec<f64> {
    let n_in = w.len() / n_out;
    let mut y = vec![0.0; rows * n_out];
    for r in 0..rows {
        for o in 0..n_out {
            let mut acc = b.map_or(0.0, |b| b[o]);
            for i in 0..n_in {
                acc += x[r * n_in + i] * w[o * n_in + i];
            }
            y[r * n_out + o] = acc;
        }
    }
    y
}

/// Causal attention of one head on already projected q, k, v, each (B, T, D) row-major:
/// `softmax(q kᵀ · scale, keys ≤ query) v`.
pub fn attend_f64(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    b: usize,
    t: usize,
    d: usize,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; b * t * d];
    for bi in 0..b {
        let r = bi * t * d..(bi + 1) * t * d;
        let w = causal_weights_f64(&q[r.clone()], &k[r.clone()], t, d, scale);
        mix_values(&w, &v[r.clone()], t, d, &mut out[r]);
    }
    out
}

/// The attention weights of one sequence: row `i` is `softmax(q_i · k_j · scale)` over the
/// positions `j ≤ i`, zero after. q, k: (T, D) → (T, T).
pub fn causal_weights_f64(q: &[f64], k: &[f64], t: usize, d: usize, scale: f64) -> Vec<f64> {
    let mut w = vec![0.0; t * t];
    for i in 0..t {
        let scores: Vec<f64> = (0..=i)
            .map(|j| (0..d).map(|e| q[i * d + e] * k[j * d + e]).sum::<f64>() * scale)
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
        for j in 0..=i {
            w[i * t + j] = (scores[j] - max).exp() / total;
        }
    }
    w
}

/// `out (T, D) = w (T, T) · v (T, D)`.
fn mix_values(w: &[f64], v: &[f64], t: usize, d: usize, out: &mut [f64]) {
    for i in 0..t {
        for e in 0..d {
            out[i * d + e] = (0..t).map(|j| w[i * t + j] * v[j * d + e]).sum();
        }
    }
}

/// One causal self-attention head: x (B, T, C), wq/wk/wv (D, C) → (B, T, D).
#[allow(clippy::too_many_arguments)]
pub fn attention_head_f64(
    x: &[f64],
    b: usize,
    t: usize,
    wq: &[f64],
    wk: &[f64],
    wv: &[f64],
    d: usize,
    scale: f64,
) -> Vec<f64> {
    let q = dense_f64(x, b * t, wq, None, d);
    let k = dense_f64(x, b * t, wk, None, d);
    let v = dense_f64(x, b * t, wv, None, d);
    attend_f64(&q, &k, &v, b, t, d, scale)
}

/// Concatenates per-head outputs, each (B·T, D), on the last dimension.
pub fn concat_heads(heads: &[Vec<f64>], rows: usize, d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows * d * heads.len());
    for r in 0..rows {
        for h in heads {
            out.extend_from_slice(&h[r * d..(r + 1) * d]);
        }
    }
    out
}

/// Rows `head·d .. (head+1)·d` of a (n·d, C) weight: the slice that belongs to one head.
pub fn head_rows(w: &[f64], head: usize, d: usize, c: usize) -> Vec<f64> {
    w[head * d * c..(head + 1) * d * c].to_vec()
}

/// LayerNorm over the last dimension, eps 1e-6.
pub fn layer_norm_f64(x: &[f64], c: usize, g: &[f64], b: &[f64]) -> Vec<f64> {
    norm::layer_norm_way_f64(x, c, g, b, norm::Forward::Right)
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Where a block's attention keeps each head's projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLayout {
    /// Task 1: `attn.heads.{j}.query.weight`, (D, C) per head.
    PerHead,
    /// Task 3: `attn.query.weight`, (n·D, C), head `j` owning rows `j·D..(j+1)·D`.
    Fused,
}

/// MiniGPT's forward pass in f64 from its named parameters (GPT-2 names, as the Task 1 docs
/// give them): what the learner's model must compute, op by op.
pub fn minigpt_f64(params: &SeededVarMap, cfg: &GptConfig, ids: &[Vec<u32>]) -> Vec<f64> {
    minigpt_f64_traced(params, cfg, ids, HeadLayout::PerHead, &mut |_, _, _, _| {})
}

/// Receives `(layer, head, batch, weights)` from [`minigpt_f64_traced`].
pub type WeightsSink<'a> = dyn FnMut(usize, usize, usize, &[f64]) + 'a;

/// What one block of [`minigpt_f64`] computes, stage by stage, each (B·T, C).
#[derive(Debug, Clone)]
pub struct BlockStages {
    /// The block's input x.
    pub input: Vec<f64>,
    /// ln_1(x).
    pub ln_1: Vec<f64>,
    /// attn(ln_1(x)): the heads concatenated, then proj.
    pub attn: Vec<f64>,
    /// x + attn(ln_1(x)).
    pub after_attn: Vec<f64>,
    /// The block's output: that, plus mlp(ln_2(that)).
    pub output: Vec<f64>,
}

/// Every block's stages in [`minigpt_f64`] on `ids`, in order.
pub fn minigpt_block_stages(
    params: &SeededVarMap,
    cfg: &GptConfig,
    ids: &[Vec<u32>],
) -> Vec<BlockStages> {
    let mut stages = Vec::new();
    minigpt_f64_staged(
        params,
        cfg,
        ids,
        HeadLayout::PerHead,
        &mut |_, _, _, _| {},
        &mut |s| stages.push(s),
    );
    stages
}

/// [`minigpt_f64`], calling `on_weights(layer, head, batch, weights)` with every head's (T, T)
/// attention weights on the way.
pub fn minigpt_f64_traced(
    params: &SeededVarMap,
    cfg: &GptConfig,
    ids: &[Vec<u32>],
    layout: HeadLayout,
    on_weights: &mut WeightsSink,
) -> Vec<f64> {
    minigpt_f64_staged(params, cfg, ids, layout, on_weights, &mut |_| {})
}

fn minigpt_f64_staged(
    params: &SeededVarMap,
    cfg: &GptConfig,
    ids: &[Vec<u32>],
    layout: HeadLayout,
    on_weights: &mut WeightsSink,
    on_block: &mut dyn FnMut(BlockStages),
) -> Vec<f64> {
    let (b, t, c) = (ids.len(), ids[0].len(), cfg.hidden);
    let p = |name: &str| param(params, name);
    let mut x = embed_f64(&p("wte.weight"), &p("wpe.weight"), ids, c);
    for l in 0..cfg.num_layers {
        let stages = block_f64(params, cfg, l, &x, (b, t), layout, on_weights);
        x = stages.output.clone();
        on_block(stages);
    }
    let h = layer_norm_f64(&x, c, &p("ln_f.weight"), &p("ln_f.bias"));
    dense_f64(
        &h,
        b * t,
        &p("lm_head.weight"),
        Some(&p("lm_head.bias")),
        cfg.vocab_size,
    )
}

/// Token plus position embeddings: ids (B, T) → (B, T, C).
fn embed_f64(wte: &[f64], wpe: &[f64], ids: &[Vec<u32>], c: usize) -> Vec<f64> {
    let mut x = Vec::with_capacity(ids.len() * ids[0].len() * c);
    for row in ids {
        for (pos, &tok) in row.iter().enumerate() {
            let tok = tok as usize;
            x.extend((0..c).map(|i| wte[tok * c + i] + wpe[pos * c + i]));
        }
    }
    x
}

/// Block `l` on x (B, T, C): `x + attn(ln_1(x))`, then `+ mlp(ln_2(·))`, every stage kept.
fn block_f64(
    params: &SeededVarMap,
    cfg: &GptConfig,
    l: usize,
    x: &[f64],
    (b, t): (usize, usize),
    layout: HeadLayout,
    on_weights: &mut WeightsSink,
) -> BlockStages {
    let c = cfg.hidden;
    let p = |name: &str| param(params, &format!("h.{l}.{name}"));
    let norm = |x: &[f64], name: &str| {
        layer_norm_f64(
            x,
            c,
            &p(&format!("{name}.weight")),
            &p(&format!("{name}.bias")),
        )
    };
    let dense = |x: &[f64], name: &str, n_out: usize| {
        let bias = p(&format!("{name}.bias"));
        dense_f64(x, b * t, &p(&format!("{name}.weight")), Some(&bias), n_out)
    };
    let ln_1 = norm(x, "ln_1");
    let heads = heads_f64(params, cfg, l, &ln_1, (b, t), layout, on_weights);
    let attn = dense(&heads, "attn.proj", cfg.num_heads * cfg.head_dim());
    let after_attn = add(x, &attn);
    let up: Vec<f64> = dense(&norm(&after_attn, "ln_2"), "mlp.fc", 4 * c)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let output = add(&after_attn, &dense(&up, "mlp.proj", c));
    BlockStages {
        input: x.to_vec(),
        ln_1,
        attn,
        after_attn,
        output,
    }
}

/// Block `l`'s heads on h (B, T, C), side by side before the output projection:
/// (B, T, heads·head_dim). Each head's (T, T) weights go to `on_weights` on the way.
fn heads_f64(
    params: &SeededVarMap,
    cfg: &GptConfig,
    l: usize,
    h: &[f64],
    (b, t): (usize, usize),
    layout: HeadLayout,
    on_weights: &mut WeightsSink,
) -> Vec<f64> {
    let (n, d, c) = (cfg.num_heads, cfg.head_dim(), cfg.hidden);
    let p = |name: &str| param(params, &format!("h.{l}.attn.{name}"));
    let heads: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let w = |m: &str| match layout {
                HeadLayout::PerHead => p(&format!("heads.{j}.{m}.weight")),
                HeadLayout::Fused => head_rows(&p(&format!("{m}.weight")), j, d, c),
            };
            let q = dense_f64(h, b * t, &w("query"), None, d);
            let k = dense_f64(h, b * t, &w("key"), None, d);
            let v = dense_f64(h, b * t, &w("value"), None, d);
            let mut out = vec![0.0; b * t * d];
            for bi in 0..b {
                let r = bi * t * d..(bi + 1) * t * d;
                let scale = 1.0 / (d as f64).sqrt();
                let weights = causal_weights_f64(&q[r.clone()], &k[r.clone()], t, d, scale);
                on_weights(l, j, bi, &weights);
                mix_values(&weights, &v[r.clone()], t, d, &mut out[r]);
            }
            out
        })
        .collect();
    concat_heads(&heads, b * t, d)
}

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
pub struct FusedHeads {
    query: Dense,
    key: Dense,
    value: Dense,
    proj: Dense,
    num_heads: usize,
    head_dim: usize,
}

impl FusedHeads {
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let width = num_heads * head_dim;
        Ok(Self {
            query: kit::nn::dense_no_bias(hidden, width, vb.pp("query"))?,
            key: kit::nn::dense_no_bias(hidden, width, vb.pp("key"))?,
            value: kit::nn::dense_no_bias(hidden, width, vb.pp("value"))?,
            proj: dense(width, width, vb.pp("proj"))?,
            num_heads,
            head_dim,
        })
    }
}

impl Module for FusedHeads {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, _c) = xs.dims3()?;
        let (n, h) = (self.num_heads, self.head_dim);
        let split = |y: Tensor| y.reshape((b, t, n, h))?.transpose(1, 2)?.contiguous();
        let q = split(self.query.forward(xs)?)?; // (B, n, T, h)
        let k = split(self.key.forward(xs)?)?;
        let v = split(self.value.forward(xs)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?; // (B, n, T, T)
        let weights = kit::ops::causal_softmax(&scores, 1.0 / (h as f64).sqrt())?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.contiguous()?; // (B, T, n, h)
        self.proj.forward(&out.reshape((b, t, n * h))?)
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
