//! # Task 7: a modern block (RMSNorm, RoPE, SwiGLU)
//!
//! MiniGPT's block has the layout of GPT-2's (its feed-forward layer uses ReLU where GPT-2's
//! uses GELU). The models you will meet next (Llama, Mistral, Qwen: all in candle-transformers)
//! changed three of its parts, and here you write them and build a "MiniLlama" with them, with
//! Llama's parameter names:
//!
//! 1. **RMSNorm** instead of LayerNorm: no mean subtracted, no shift. For a row `x` of C values
//!    with the scale γ: `yᵢ = γᵢ · xᵢ / √(mean(x²) + ε)`, ε = 1e-6.
//! 2. **Rotary position embeddings** (RoPE) instead of a learned table of positions. Nothing is
//!    added to the tokens; instead each query and key is rotated by an angle that grows with its
//!    position. A head's h dimensions make h/2 pairs, dimension `i` with `i + h/2`; pair `i`
//!    turns by `p·θᵢ` at position `p`, with `θᵢ = base^(−2i/h)`, base 10000:
//!    ```text
//!    out[i]       = x[i] · cos(p·θᵢ) − x[i + h/2] · sin(p·θᵢ)      for i < h/2
//!    out[i + h/2] = x[i] · sin(p·θᵢ) + x[i + h/2] · cos(p·θᵢ)
//!    ```
//!    The score of a query at position m and a key at position n then depends on the two
//!    positions only through m − n. RoPE has two conventions for the pairs. This one, the two
//!    halves of a vector, (i, i + h/2), is HF Llama's and candle's `rope`; RoFormer, Meta's Llama
//!    code and CS336 turn adjacent pairs, (2i, 2i + 1). Both are the same rotations of the
//!    dimensions in another order and have every property above, but weights trained with one
//!    are wrong for the other: the checks take the halves, and say so if yours turns adjacent
//!    pairs.
//! 3. **SwiGLU** instead of Dense, ReLU, Dense: `down(silu(gate(x)) ⊙ up(x))`, three matrices
//!    without bias, `silu(z) = z · sigmoid(z)`. Its width F = (8C + 5)/3 gives the three as many
//!    parameters as MiniGPT's two with their biases (343 for C = 128).
//!
//! The attention is Task 3's (one projection each for queries, keys and values, `o_proj` after
//! the heads, no bias anywhere), with the queries and keys rotated, and a cache as in Task 6.
//! This cache *slides*: once it holds block_size positions, it drops the oldest and goes on.
//! What it then computes is sliding-window attention, as Mistral's: each query sees the last
//! block_size keys up to its own position. A step of T new tokens that overflows the cache drops
//! the oldest keys before any of its queries attend: with a full cache, new query `i` (from 0)
//! sees block_size − T + 1 + i keys, not block_size, so only steps of one token are
//! sliding-window attention exactly. MiniLlama implements kit's `Decoder` like Task 6's model,
//! with a cache that always has room, so Task 6's `generate_cached` writes with it one token at a
//! time after the prompt, and never rebuilds.
//! Shapes: `B` batch, `T` new positions, `S` positions cached before the step, `K` kept after
//! it, min(S + T, block_size), `n` heads, `h` head size, `C` hidden.
//!
//! 4. `LayerCache::append`: the new keys and values after the cached ones, keeping the last
//!    `window` positions at most (`LayerCache::new(window)`). Task 6's cache has the same
//!    `append` and `positions`; this one slides.
//! 5. `Attention::forward_step`: q, k, v of the new positions, split into heads; q and k rotated
//!    at their positions `start..start + T`; k and v appended to the cache; each new query
//!    against the cached keys up to its own position (`kit::ops::causal_softmax`), the weighted
//!    values, the heads merged, `o_proj`.
//! 6. `MiniLlama::new`: the parts, named as Llama's: `embed_tokens`, the blocks `layers.{i}`
//!    with their two RMSNorms, attention and SwiGLU, `norm`, and `lm_head` without bias; no
//!    table of positions.
//! 7. `MiniLlama::forward_step`: the token embeddings (no position embeddings: RoPE is in the
//!    attention); each block, `x + attn(input_layernorm(x))` then
//!    `x + mlp(post_attention_layernorm(x))`; `norm`; `lm_head`. The new tokens' positions start
//!    where the tokens seen so far end, `cache.seen()`, which counts every token run (the cache
//!    keeps `cache.positions()` of them).
//!
//! Every part must be differentiable. candle-nn 0.11 has RMSNorm and RoPE, but
//! `candle_nn::ops::rms_norm` and the fused `candle_nn::rotary_emb::rope` record no backward,
//! and the `candle_nn::RmsNorm` module calls `ops::rms_norm` on any contiguous input, falling
//! back to differentiable ops only for an input that is not (its `forward_diff` always takes
//! them).
//! Write each part with candle's tensor ops; hint 3 of each part names the calls.
//!
//! Check your work with `cargo xtask check task7`; its last check trains MiniLlama.
//!
//! **Think about it.** Once it is green, this task's section of docs/guide.md ends with a
//! question to think about: the workbook keeps its questions there.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use kit::GptConfig;
use kit::decode::Decoder;
use kit::nn::{Dense, dense_no_bias, embedding};

/// RMSNorm over the last dimension: a scale, and no shift.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub const EPS: f64 = 1e-6;

    /// The scale `weight`, ones, of size `dim`.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", candle_nn::init::ONE)?,
            eps: Self::EPS,
        })
    }
}

impl Module for RmsNorm {
    /// # Shapes
    /// (..., C) → (..., C)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // The root of the mean square of each row: its size, whatever its mean.
        let rms = (xs.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?; // (..., 1)
        xs.broadcast_div(&rms)?.broadcast_mul(&self.weight)
    }
}

/// Rotary position embeddings for heads of `head_dim` dimensions.
#[derive(Debug, Clone)]
pub struct Rope {
    head_dim: usize,
    base: f64,
}

impl Rope {
    pub const BASE: f64 = 10_000.0;

    pub fn new(head_dim: usize) -> Self {
        Self {
            head_dim,
            base: Self::BASE,
        }
    }

    /// `x` with the vector of each position rotated by its angles: positions `start..start + T`.
    ///
    /// # Shapes
    /// (B, n, T, h) → (B, n, T, h)
    pub fn rotate(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let (_b, _n, t, h) = x.dims4()?;
        let half = h / 2;
        // θᵢ = base^(−2i/h) for each pair i, and the angle p·θᵢ for each position p.
        let angles: Vec<f32> = (start..start + t)
            .flat_map(|p| {
                (0..half).map(move |i| {
                    let theta = self.base.powf(-2.0 * i as f64 / self.head_dim as f64);
                    (p as f64 * theta) as f32
                })
            })
            .collect();
        let angles = Tensor::from_vec(angles, (t, half), x.device())?; // (T, h/2)
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let x1 = x.narrow(D::Minus1, 0, half)?; // the first of each pair
        let x2 = x.narrow(D::Minus1, half, half)?; // the second
        let first = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let second = (x1.broadcast_mul(&sin)? + x2.broadcast_mul(&cos)?)?;
        Tensor::cat(&[first, second], D::Minus1)
    }
}

/// The gated feed-forward layer: `down(silu(gate(x)) ⊙ up(x))`.
#[derive(Debug, Clone)]
pub struct SwiGlu {
    gate_proj: Dense,
    up_proj: Dense,
    down_proj: Dense,
}

impl SwiGlu {
    /// The width of the gate: (8C + 5)/3, so that the three matrices hold as many parameters
    /// as MiniGPT's feed-forward layer, two matrices of C × 4C with their biases.
    pub fn width(hidden: usize) -> usize {
        (8 * hidden + 5) / 3
    }

    /// `gate_proj` and `up_proj`: C → F; `down_proj`: F → C; no bias.
    pub fn new(hidden: usize, vb: VarBuilder) -> Result<Self> {
        let f = Self::width(hidden);
        Ok(Self {
            gate_proj: dense_no_bias(hidden, f, vb.pp("gate_proj"))?,
            up_proj: dense_no_bias(hidden, f, vb.pp("up_proj"))?,
            down_proj: dense_no_bias(f, hidden, vb.pp("down_proj"))?,
        })
    }
}

impl Module for SwiGlu {
    /// # Shapes
    /// (B, T, C) → (B, T, C)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // The gate decides, feature by feature, how much of `up` goes through.
        let gate = candle_nn::ops::silu(&self.gate_proj.forward(xs)?)?; // (B, T, F)
        self.down_proj.forward(&(gate * self.up_proj.forward(xs)?)?)
    }
}

/// One layer's keys, already rotated, and values of the last `window` positions at most, each
/// (B, n, S, h).
#[derive(Debug, Clone)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    window: usize,
}

impl LayerCache {
    /// An empty cache that keeps `window` positions at most.
    pub fn new(window: usize) -> Self {
        Self {
            k: None,
            v: None,
            window,
        }
    }

    /// Positions cached.
    pub fn positions(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    /// Appends the keys and values (B, n, T, h) of new positions after the cached ones, keeping
    /// the last `window` positions at most; returns the kept ones, (B, n, K, h).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match (&self.k, &self.v) {
            (Some(old_k), Some(old_v)) => {
                (Tensor::cat(&[old_k, k], 2)?, Tensor::cat(&[old_v, v], 2)?)
            }
            _ => (k.clone(), v.clone()),
        };
        // The window slides: the oldest positions go.
        let len = k.dims()[2];
        let drop = len.saturating_sub(self.window);
        let (k, v) = (
            k.narrow(2, drop, len - drop)?,
            v.narrow(2, drop, len - drop)?,
        );
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        Ok((k, v))
    }
}

/// Every layer's cache, and how many tokens the model has seen.
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<LayerCache>,
    seen: usize,
}

impl Cache {
    /// Positions whose keys and values are kept: block_size at most.
    pub fn positions(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::positions)
    }

    /// Tokens run so far: the position of the next one.
    pub fn seen(&self) -> usize {
        self.seen
    }
}

/// Causal multi-head self-attention with rotary position embeddings.
pub struct Attention {
    q_proj: Dense,
    k_proj: Dense,
    v_proj: Dense,
    o_proj: Dense,
    rope: Rope,
    num_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `q_proj`, `k_proj`, `v_proj`: C → num_heads·head_dim; `o_proj`: back to C; no bias.
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let width = num_heads * head_dim;
        Ok(Self {
            q_proj: dense_no_bias(hidden, width, vb.pp("q_proj"))?,
            k_proj: dense_no_bias(hidden, width, vb.pp("k_proj"))?,
            v_proj: dense_no_bias(hidden, width, vb.pp("v_proj"))?,
            o_proj: dense_no_bias(width, hidden, vb.pp("o_proj"))?,
            rope: Rope::new(head_dim),
            num_heads,
            head_dim,
        })
    }

    /// The attention of `xs`, new positions `start..start + T`, over the cached ones and
    /// themselves.
    ///
    /// # Shapes
    /// (B, T, C) → (B, T, C)
    pub fn forward_step(
        &self,
        xs: &Tensor,
        cache: &mut LayerCache,
        start: usize,
    ) -> Result<Tensor> {
        let (b, t, _c) = xs.dims3()?;
        let (n, h) = (self.num_heads, self.head_dim);
        let split = |y: Tensor| y.reshape((b, t, n, h))?.transpose(1, 2)?.contiguous();
        // Queries and keys carry their positions as rotations; values carry none.
        let q = self.rope.rotate(&split(self.q_proj.forward(xs)?)?, start)?; // (B, n, T, h)
        let k = self.rope.rotate(&split(self.k_proj.forward(xs)?)?, start)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let (k, v) = cache.append(&k, &v)?; // (B, n, K, h), the new ones last
        let scores = q.matmul(&k.t()?.contiguous()?)?; // (B, n, T, K)
        let weights = kit::ops::causal_softmax(&scores, 1.0 / (h as f64).sqrt())?;
        let out = weights.matmul(&v)?; // (B, n, T, h)
        self.o_proj
            .forward(&out.transpose(1, 2)?.contiguous()?.reshape((b, t, n * h))?)
    }
}

/// A pre-norm block with Llama's parts and names.
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: SwiGlu,
}

/// MiniGPT's shape with Llama's block: RMSNorm, rotary position embeddings, SwiGLU.
pub struct MiniLlama {
    embed_tokens: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Dense,
    block_size: usize,
}

impl MiniLlama {
    /// Parts named as Llama's: `embed_tokens`; `layers.{i}.input_layernorm`, `self_attn`
    /// (`q_proj`, `k_proj`, `v_proj`, `o_proj`), `post_attention_layernorm`, `mlp` (`gate_proj`,
    /// `up_proj`, `down_proj`); `norm`; `lm_head`, without bias. No position table.
    pub fn new(cfg: GptConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden;
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(Block {
                    input_layernorm: RmsNorm::new(c, vb.pp("input_layernorm"))?,
                    self_attn: Attention::new(
                        c,
                        cfg.num_heads,
                        cfg.head_dim(),
                        vb.pp("self_attn"),
                    )?,
                    post_attention_layernorm: RmsNorm::new(c, vb.pp("post_attention_layernorm"))?,
                    mlp: SwiGlu::new(c, vb.pp("mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: embedding(cfg.vocab_size, c, vb.pp("embed_tokens"))?,
            layers,
            norm: RmsNorm::new(c, vb.pp("norm"))?,
            lm_head: dense_no_bias(c, cfg.vocab_size, vb.pp("lm_head"))?,
            block_size: cfg.block_size,
        })
    }

    /// An empty cache, one layer per block, each keeping the last block_size positions.
    pub fn new_cache(&self) -> Cache {
        Cache {
            layers: vec![LayerCache::new(self.block_size); self.layers.len()],
            seen: 0,
        }
    }

    /// The logits of `tokens`, the positions after the tokens seen so far, whose keys and values
    /// every layer adds to its cache (which keeps the last block_size).
    ///
    /// # Shapes
    /// (B, T) → (B, T, vocab_size), T at most block_size
    pub fn forward_step(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (_b, t) = tokens.dims2()?;
        if t > self.block_size {
            candle_core::bail!(
                "MiniLlama got {t} positions at once; it attends to {} at most",
                self.block_size
            )
        }
        let start = cache.seen;
        // No position embedding: the attention rotates queries and keys by their positions.
        let mut xs = self.embed_tokens.forward(tokens)?; // (B, T, C)
        for (block, layer) in self.layers.iter().zip(&mut cache.layers) {
            let normed = block.input_layernorm.forward(&xs)?;
            xs = (&xs + block.self_attn.forward_step(&normed, layer, start)?)?;
            xs = (&xs
                + block
                    .mlp
                    .forward(&block.post_attention_layernorm.forward(&xs)?)?)?;
        }
        cache.seen += t;
        self.lm_head.forward(&self.norm.forward(&xs)?) // (B, T, V)
    }
}

impl Module for MiniLlama {
    /// The whole of `idx` at once: one step from an empty cache, positions 0..T.
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        self.forward_step(idx, &mut self.new_cache())
    }
}

/// MiniLlama as a generation loop sees it (Task 6's `generate_cached`): its cache slides, so it
/// always has room for the next position.
impl Decoder for MiniLlama {
    type Cache = Cache;

    fn new_cache(&self) -> Cache {
        MiniLlama::new_cache(self)
    }

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn has_room(&self, _cache: &Cache) -> bool {
        true
    }

    fn forward_step(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        MiniLlama::forward_step(self, tokens, cache)
    }
}
