//! # Task 6: generation with a KV cache
//!
//! Task 1's `generate` runs the whole context through the model for every new token: to write
//! the 20th character it runs the 19 before it, though 18 of them went through the model in the
//! step before and their keys and values have not changed. In a causal model the key and the
//! value of a position depend on that position and earlier ones only, so they can be kept: a
//! **KV cache**. With it, each new token costs one position through the model.
//!
//! The model is MiniGPT with Task 3's kind of attention: one projection each for queries, keys
//! and values, head `i` owning their columns `i·h .. (i+1)·h`, then `proj`. Its parameters have
//! Task 3's names, so a Task 3 checkpoint loads into it. Shapes: `B` batch, `S` positions in the
//! cache, `T` new positions, `n` heads, `h` the size of a head, `V` the vocabulary.
//!
//! 1. `LayerCache::append`: the keys and the values of the new positions, each (B, n, T, h), go
//!    after the cached ones along the positions; it returns all of them, (B, n, S + T, h).
//! 2. `CachedAttention::forward_step`: the queries, keys and values of the new positions only;
//!    their keys and values appended to the layer's cache; then each new query attends to the
//!    cached keys at or before its own position: new query `i` is at position `S + i` and sees
//!    keys `0 ..= S + i`. `kit::ops::causal_softmax` masks a (T, S + T) score matrix exactly so.
//!    Then the heads are merged and `proj` applied: (B, T, n·h).
//! 3. `CachedGpt::forward_step`: the token embeddings of the new tokens plus the position
//!    embeddings of *their* positions, `S .. S + T`; each block, with its own layer of the cache;
//!    `ln_f`; `lm_head`: (B, T, V). More than block_size positions in all is an error.
//! 4. `generate_cached`: the prompt (its last block_size tokens at most) through the model once,
//!    which fills the cache; then each new token, sampled from the last logits, runs alone, one
//!    position, except the last: nothing asks for the logits after it, so it is sampled and not
//!    run (with a prompt of 3 and 4 new tokens, the calls run 3, 1, 1 and 1 positions, and the
//!    checks count them). The model has position embeddings for block_size positions only:
//!    once the cache is full, the next token would need position block_size, which does not
//!    exist, and the model's `Decoder::has_room` says so. Then rebuild the cache from the last
//!    block_size tokens. `generate_cached` sees the model only through kit's `Decoder` trait,
//!    which gives no device: make your token tensors on `candle_core::Device::Cpu`, where every
//!    model of the workbook lives. Task 7's MiniLlama writes with your loop too: its cache
//!    always has room.
//!
//! Check your work with `cargo xtask check task6`. `cargo xtask bench generate --yours` shows
//! what your cache is worth: tokens per second with and without it (without `--yours`, it
//! times the reference solution's cache). To write with yours,
//! `cargo xtask generate --cache --checkpoint runs/task3` needs a Task 3 model: train one with
//! `cargo xtask train task3`, or with `cargo xtask train task3 --solutions` (the reference's
//! attention) until your Task 3 passes.
//!
//! **Think about it.** Once it is green, this task's section of docs/guide.md ends with a
//! question to think about: the workbook keeps its questions there.

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use kit::decode::Decoder;
use kit::nn::{Dense, FeedForward, LayerNorm, MultiHead, dense, embedding};
use kit::{GptConfig, Sampler};
use std::ops::Deref;

/// One layer's keys and values of the positions run so far, each (B, n, S, h).
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

impl LayerCache {
    /// Positions cached.
    pub fn positions(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    /// Appends the keys and values (B, n, T, h) of new positions after the cached ones;
    /// returns all of them, (B, n, S + T, h).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match (&self.k, &self.v) {
            // Dimension 2 is the positions: (B, n, S, h) and (B, n, T, h) make (B, n, S + T, h).
            (Some(old_k), Some(old_v)) => {
                (Tensor::cat(&[old_k, k], 2)?, Tensor::cat(&[old_v, v], 2)?)
            }
            _ => (k.clone(), v.clone()),
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        Ok((k, v))
    }
}

/// Every layer's cache, first layer first.
#[derive(Debug, Clone)]
pub struct Cache {
    pub layers: Vec<LayerCache>,
}

impl Cache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); layers],
        }
    }

    /// Positions cached.
    pub fn positions(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::positions)
    }
}

/// Causal multi-head self-attention, Task 3's, that runs new positions on top of a cache.
///
/// Its layers and sizes are kit's `MultiHead`, given: `self.query`, `self.key`, `self.value`,
/// `self.proj`, `self.num_heads` and `self.head_dim` are its fields, reached through `Deref`.
pub struct CachedAttention(MultiHead);

impl CachedAttention {
    /// `query`, `key`, `value`: Dense(hidden → num_heads·head_dim) without bias; `proj`:
    /// Dense(num_heads·head_dim → num_heads·head_dim) with a bias.
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        MultiHead::new(hidden, num_heads, head_dim, vb).map(Self)
    }

    /// The attention of `xs`, the new positions, over the cached ones and themselves.
    ///
    /// # Shapes
    /// (B, T, C) → (B, T, num_heads·head_dim)
    pub fn forward_step(&self, xs: &Tensor, cache: &mut LayerCache) -> Result<Tensor> {
        let (b, t, _c) = xs.dims3()?;
        let (n, h) = (self.num_heads, self.head_dim);
        // (B, T, n·h) → (B, n, T, h): head i owns columns i·h..(i+1)·h.
        let split = |y: Tensor| y.reshape((b, t, n, h))?.transpose(1, 2)?.contiguous();
        let q = split(self.query.forward(xs)?)?; // (B, n, T, h)
        let k = split(self.key.forward(xs)?)?;
        let v = split(self.value.forward(xs)?)?;
        let (k, v) = cache.append(&k, &v)?; // (B, n, S + T, h)
        let scores = q.matmul(&k.t()?.contiguous()?)?; // (B, n, T, S + T)
        // New query i sits at position S + i: the mask of a (T, S + T) matrix lets it see 0..=S + i.
        let weights = kit::ops::causal_softmax(&scores, 1.0 / (h as f64).sqrt())?;
        let out = weights.matmul(&v)?; // (B, n, T, h)
        self.proj
            .forward(&out.transpose(1, 2)?.contiguous()?.reshape((b, t, n * h))?)
    }
}

impl Deref for CachedAttention {
    type Target = MultiHead;

    fn deref(&self) -> &MultiHead {
        &self.0
    }
}

/// A pre-norm block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
struct Block {
    ln_1: LayerNorm,
    attn: CachedAttention,
    ln_2: LayerNorm,
    mlp: FeedForward,
}

/// MiniGPT with a KV cache.
pub struct CachedGpt {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Dense,
    block_size: usize,
}

impl CachedGpt {
    /// MiniGPT's parts with Task 3's attention, named as in Task 3's model: `wte`, `wpe`,
    /// `h.{i}.ln_1 / attn / ln_2 / mlp`, `ln_f`, `lm_head`.
    pub fn new(cfg: GptConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden;
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let vb = vb.pp(format!("h.{i}"));
                Ok(Block {
                    ln_1: LayerNorm::new(c, vb.pp("ln_1"))?,
                    attn: CachedAttention::new(c, cfg.num_heads, cfg.head_dim(), vb.pp("attn"))?,
                    ln_2: LayerNorm::new(c, vb.pp("ln_2"))?,
                    mlp: FeedForward::new(c, vb.pp("mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wte: embedding(cfg.vocab_size, c, vb.pp("wte"))?,
            wpe: embedding(cfg.block_size, c, vb.pp("wpe"))?,
            blocks,
            ln_f: LayerNorm::new(c, vb.pp("ln_f"))?,
            lm_head: dense(c, cfg.vocab_size, vb.pp("lm_head"))?,
            block_size: cfg.block_size,
        })
    }

    /// An empty cache, one layer per block.
    pub fn new_cache(&self) -> Cache {
        Cache::new(self.blocks.len())
    }

    /// The logits of `tokens`, the positions after those in `cache`, whose keys and values
    /// every layer adds to its cache.
    ///
    /// # Shapes
    /// (B, T) → (B, T, vocab_size), with T plus the cached positions at most block_size
    pub fn forward_step(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (_b, t) = tokens.dims2()?;
        let start = cache.positions();
        if start + t > self.block_size {
            candle_core::bail!(
                "{start} cached and {t} new positions are more than the {} the model has \
                 position embeddings for",
                self.block_size
            )
        }
        // The new tokens sit at positions start..start + t, not 0..t.
        let positions = Tensor::arange(start as u32, (start + t) as u32, tokens.device())?;
        let mut xs = self
            .wte
            .forward(tokens)?
            .broadcast_add(&self.wpe.forward(&positions)?)?; // (B, T, C)
        for (block, layer) in self.blocks.iter().zip(&mut cache.layers) {
            xs = (&xs + block.attn.forward_step(&block.ln_1.forward(&xs)?, layer)?)?;
            xs = (&xs + block.mlp.forward(&block.ln_2.forward(&xs)?)?)?;
        }
        self.lm_head.forward(&self.ln_f.forward(&xs)?) // (B, T, V)
    }
}

impl Module for CachedGpt {
    /// The whole of `idx` at once: one step from an empty cache.
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        self.forward_step(idx, &mut self.new_cache())
    }
}

impl Decoder for CachedGpt {
    type Cache = Cache;

    fn new_cache(&self) -> Cache {
        CachedGpt::new_cache(self)
    }

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn has_room(&self, cache: &Cache) -> bool {
        cache.positions() < self.block_size
    }

    fn forward_step(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        CachedGpt::forward_step(self, tokens, cache)
    }
}

/// Appends `max_new_tokens` tokens to `prompt`, each sampled from the logits of the last
/// position, running the prompt once and then one position per token on top of the cache.
/// When the cache has no room left, it is rebuilt from the last block_size tokens.
pub fn generate_cached<D: Decoder + ?Sized>(
    model: &D,
    sampler: &mut Sampler,
    prompt: &[u32],
    max_new_tokens: usize,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        candle_core::bail!("generate needs a prompt of at least one token")
    }
    let block_size = model.block_size();
    let device = candle_core::Device::Cpu;
    // The logits of the last position of `tokens`, run on top of `cache`.
    let last = |tokens: &[u32], cache: &mut D::Cache| -> Result<Tensor> {
        let logits = model.forward_step(&Tensor::new(tokens, &device)?.unsqueeze(0)?, cache)?;
        logits.i((0, tokens.len() - 1)) // (V)
    };
    let mut tokens = prompt.to_vec();
    let mut cache = model.new_cache();
    let mut logits = last(
        &prompt[prompt.len().saturating_sub(block_size)..],
        &mut cache,
    )?;
    for i in 0..max_new_tokens {
        let next = sampler.sample(&logits)?;
        tokens.push(next);
        if i + 1 == max_new_tokens {
            break;
        }
        logits = if model.has_room(&cache) {
            last(&[next], &mut cache)? // one new position
        } else {
            // Every position would shift by one: the cached keys and values are stale.
            cache = model.new_cache();
            last(&tokens[tokens.len() - block_size..], &mut cache)?
        };
    }
    Ok(tokens)
}
