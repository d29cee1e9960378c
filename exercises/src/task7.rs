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
        // TODO: each row divided by the root of its mean square plus ε, √(mean(x²) + ε), then
        // multiplied by the scale. No mean subtracted, no shift.
        todo!("RmsNorm::forward: x / sqrt(mean(x^2) + eps) * weight, over the last dimension")
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
        // TODO: for positions p = start..start + T and pairs i < h/2, the angle p·θᵢ with
        // θᵢ = base^(−2i/h); then dimension i and i + h/2 of each vector turned by it:
        // (x[i]·cos − x[i + h/2]·sin, x[i]·sin + x[i + h/2]·cos).
        todo!("Rope::rotate: turn each pair (i, i + h/2) by p * base^(-2i/h) at position p")
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
        // TODO: down_proj(silu(gate_proj(x)) ⊙ up_proj(x)), silu(z) = z · sigmoid(z).
        todo!("SwiGlu::forward: down(silu(gate(x)) * up(x))")
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
        // TODO: the new keys and values after the cached ones along the positions (dimension
        // 2); then keep only the last `window` positions. Keep them in the cache and return them.
        todo!("LayerCache::append: new keys and values after the cached ones, the last window kept")
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
        // TODO: q, k, v of the new positions split into heads, (B, n, T, h); q and k rotated at
        // positions start..start + T; k and v appended to the cache (which keeps its window); the
        // scores of the new queries against the kept keys, masked causally, scaled by 1/√h and
        // normalised; the weighted values; the heads merged; o_proj.
        todo!(
            "Attention::forward_step: rotated q and k, the sliding cache, causal attention, o_proj"
        )
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
        // TODO: embed_tokens (vocab_size × C); num_layers blocks named layers.0, layers.1, …,
        // each with input_layernorm, self_attn, post_attention_layernorm and mlp; norm; lm_head,
        // C → vocab_size without bias. Keep block_size. No table of positions.
        todo!(
            "MiniLlama::new: embed_tokens, {} blocks named layers.i, norm and lm_head",
            cfg.num_layers
        )
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
        // TODO: refuse more than block_size positions at once. The token embeddings; each block
        // with its layer of the cache, its positions starting at cache.seen; norm; lm_head.
        // Then count the new tokens into cache.seen.
        todo!(
            "MiniLlama::forward_step: embeddings, the blocks with rotary attention and caches, norm, lm_head"
        )
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
