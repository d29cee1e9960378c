//! # Task 9: OpenAI's GPT-2 on your own code
//!
//! MiniGPT has had GPT-2's layout since Task 1. Here you write GPT-2 exactly as OpenAI shipped
//! it, load the weights they published into it, and write text with them: the smallest GPT-2,
//! 124 million parameters, with Task 8's tokenizer reading OpenAI's `vocab.json` and
//! `merges.txt`. What changes from MiniGPT is small and must be exact, or the published weights
//! compute nonsense:
//!
//! - LayerNorm's ε is 1e-5 (kit's `LayerNorm::new` takes Flax's 1e-6:
//!   `LayerNorm::with_eps(dim, cfg.layer_norm_epsilon, vb)` takes the config's).
//! - The attention makes its queries, keys and values with **one** projection, `c_attn`,
//!   C → 3C, with a bias: columns `0..C` are the queries, `C..2C` the keys, `2C..3C` the
//!   values, and within each, head `i` owns columns `i·h..(i+1)·h`. Then `c_proj`, C → C, with a
//!   bias.
//! - The feed-forward layer is `c_fc` (C → 4C), GELU, `c_proj` (4C → C), with biases. GPT-2's
//!   GELU is the tanh approximation, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: candle's
//!   `Tensor::gelu` computes it, and `Tensor::gelu_erf` the exact `x·Φ(x)`, which differs by up
//!   to about 5e-4 and is not what the weights were trained with.
//! - The output layer has no weight of its own: it is the token embedding `wte` (V, C), used
//!   as a Dense weight, (out, in) = (V, C), without a bias. The weights are **tied**.
//! - Hugging Face stores GPT-2's projections as `Conv1D` layers (a name from OpenAI's
//!   TensorFlow code; they are dense layers): `y = x W + b` with the weight stored **(in, out)**,
//!   the transpose of `Dense`'s (out, in). Loaded as it is stored, a square weight (`attn.c_proj`)
//!   loads without a complaint and computes `x Wᵀ`: wrong, silently.
//!
//! The names in `model.safetensors`, C the width, V the vocabulary, P the positions:
//!
//! ```text
//! wte.weight (V, C)            h.{i}.ln_1.weight, .bias (C)
//! wpe.weight (P, C)            h.{i}.attn.c_attn.weight (C, 3C), .bias (3C)
//! ln_f.weight, .bias (C)       h.{i}.attn.c_proj.weight (C, C), .bias (C)
//! lm_head.weight (V, C)?       h.{i}.ln_2.weight, .bias (C)
//!                              h.{i}.mlp.c_fc.weight (C, 4C), .bias (4C)
//!                              h.{i}.mlp.c_proj.weight (4C, C), .bias (C)
//! ```
//!
//! Two layouts are found in the wild: OpenAI's own files name the tensors as above, and
//! `transformers`' `save_pretrained` writes `transformer.wte.weight`, `transformer.h.0…`. Some
//! files also hold `lm_head.weight` (a copy of `wte.weight`), most do not. Your loader takes
//! both: the prefix if the file has `transformer.wte.weight`, and `lm_head.weight` if the file
//! has it, else `wte`. OpenAI's files also hold `h.{i}.attn.bias`, the causal mask as a
//! (1, 1, 1024, 1024) table: not a weight, and never read.
//!
//! Shapes: `B` batch, `T` new positions, `S` cached before the step, `n` heads, `h` head size,
//! `C` width, `V` vocabulary.
//!
//! 1. `conv1d`: a `Conv1D` of the file as kit's `Dense`: the weight read (in, out), as stored,
//!    and transposed to (out, in), made contiguous once at load (a transposed view would be
//!    copied at every call); the bias (out).
//! 2. `Mlp::forward`: `c_proj(gelu(c_fc(x)))`, GELU's tanh approximation.
//! 3. `Attention::forward_step`: `c_attn` of the new positions, (B, T, 3C), split into q, k, v,
//!    each into heads, (B, n, T, h); k and v appended to the layer's cache (your Task 6
//!    `LayerCache`: Task 9 keeps its keys and values in it); each new query against the cached
//!    keys up to its own position, scaled by 1/√h (`kit::ops::causal_softmax`); the weighted
//!    values; the heads merged; `c_proj`.
//! 4. `Gpt2::new`: the parts from a `VarBuilder` over the file's names: under `transformer` if
//!    the file has `transformer.wte.weight`; `wte`, `wpe`, each block `h.{i}` (`ln_1`, `attn`,
//!    `ln_2`, `mlp`), `ln_f`; and the output layer: `lm_head.weight` where the file has it
//!    (at the root, never under the prefix), else `wte`'s table. `Gpt2::load(dir)` reads
//!    `config.json` and `model.safetensors` and calls it.
//! 5. `Gpt2::forward_step`: Task 6's step with GPT-2's parts: the token embeddings plus the
//!    position embeddings of `S..S + T`; each block `x + attn(ln_1(x))`, then
//!    `x + mlp(ln_2(x))`; `ln_f`; the output layer. More than n_positions (1024) in all is an
//!    error.
//!
//! Sampling, as `transformers`' `generate` does it, in this order: the logits divided by the
//! temperature; the `k` most likely tokens kept (**top-k**); of what is left, the most likely
//! tokens whose probabilities first add up to at least `p` kept (**top-p**, nucleus sampling),
//! the fewest that do; the probabilities made to add up to 1 again. Tokens are ranked by their
//! logit, the lower id first among equals.
//!
//! 6. `distribution`: the probability of each of the V ids after those steps: zero outside
//!    what is kept. A temperature of 0 is greedy: probability 1 for the most likely token (the
//!    lowest id among equals).
//! 7. `pick`: the id that a number `u` in [0, 1) draws from probabilities: the first id, in id
//!    order, at which the probabilities added up so far exceed `u`, so that id `i` is drawn for
//!    `u` in [the sum before `i`, the sum with `i`), an interval as long as its probability.
//!    Rounding can leave the whole sum at or under `u`: then the last id whose probability is
//!    not 0. `Sampler::sample`, given, draws one `u` per token (`self.rng.random::<f64>()`,
//!    whatever the settings) and picks with `distribution`'s probabilities: the same seed draws
//!    the same tokens, and the checks draw the same ones as you.
//! 8. `generate`: Task 6's loop, with or without the cache, sampling each token with your
//!    sampler and stopping after `stop` (`<|endoftext|>`) if it is drawn. With the cache: the
//!    prompt's last n_positions tokens at most once, then one position per new token but the
//!    last, the cache rebuilt from the last n_positions tokens when it has no room. Without it:
//!    every new token from the logits of the last n_positions tokens, run whole. Both write
//!    the same tokens; `transformers`' `generate(do_sample=False)` writes the same greedy ones.
//!
//! Check your work with `cargo xtask check task9`: against a tiny random GPT-2 that
//! `transformers` made and saved in both layouts (`data/fixtures/task9-gpt2/`), its logits,
//! its greedy texts and its tokenizer's ids. Then `cargo xtask gpt2 --dir PATH --prompt "…"`
//! writes with OpenAI's GPT-2 from a folder holding its four files, and
//! `cargo xtask gpt2 --download` fetches them first. `cargo xtask bench gpt2 --yours` times
//! your model at GPT-2's size against `transformers` (without `--yours`, the reference's).
//!
//! **Think about it.** Once it is green, this task's section of docs/guide.md ends with a
//! question to think about: the workbook keeps its questions there.

use candle_core::{D, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use kit::decode::Decoder;
// Your Task 6 cache: each layer's keys and values, and every layer's.
pub use crate::task6::{Cache, LayerCache};
use kit::gpt2::Gpt2Config;
use kit::nn::{Dense, LayerNorm, embedding};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// A `Conv1D` of a Hugging Face GPT-2 file, `weight` (in, out) and `bias` (out) under `vb`, as
/// a [`Dense`] layer, whose weight is (out, in).
pub fn conv1d(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Dense> {
    // Stored (in, out): y = x W + b. Dense computes x Wᵀ + b, so it takes the transpose, laid
    // out once here rather than at every call.
    let weight = vb.get((in_dim, out_dim), "weight")?.t()?.contiguous()?;
    let bias = vb.get(out_dim, "bias")?;
    Ok(Dense::new(weight, Some(bias)))
}

/// GPT-2's feed-forward layer: `c_fc` (C → 4C), GELU's tanh approximation, `c_proj` (4C → C).
#[derive(Debug, Clone)]
pub struct Mlp {
    c_fc: Dense,
    c_proj: Dense,
}

impl Mlp {
    /// `c_fc` and `c_proj`, `Conv1D`s under `vb`.
    pub fn new(hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            c_fc: conv1d(hidden, 4 * hidden, vb.pp("c_fc"))?,
            c_proj: conv1d(4 * hidden, hidden, vb.pp("c_proj"))?,
        })
    }
}

impl Module for Mlp {
    /// # Shapes
    /// (B, T, C) → (B, T, C)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // candle's gelu is the tanh approximation, GPT-2's "gelu_new"; gelu_erf is the exact one.
        self.c_proj.forward(&self.c_fc.forward(xs)?.gelu()?)
    }
}

/// GPT-2's causal self-attention: one fused projection for queries, keys and values.
#[derive(Debug, Clone)]
pub struct Attention {
    c_attn: Dense,
    c_proj: Dense,
    num_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `c_attn` (C → 3C) and `c_proj` (C → C), `Conv1D`s under `vb`.
    pub fn new(hidden: usize, num_heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            c_attn: conv1d(hidden, 3 * hidden, vb.pp("c_attn"))?,
            c_proj: conv1d(hidden, hidden, vb.pp("c_proj"))?,
            num_heads,
            head_dim: hidden / num_heads,
        })
    }

    /// The attention of `xs`, the new positions, over the cached ones and themselves.
    ///
    /// # Shapes
    /// (B, T, C) → (B, T, C)
    pub fn forward_step(&self, xs: &Tensor, cache: &mut LayerCache) -> Result<Tensor> {
        let (b, t, c) = xs.dims3()?;
        let (n, h) = (self.num_heads, self.head_dim);
        let qkv = self.c_attn.forward(xs)?; // (B, T, 3C): queries, keys, values side by side
        // Part `i` (0 the queries, 1 the keys, 2 the values), split into heads: (B, n, T, h).
        let part = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * c, c)?
                .reshape((b, t, n, h))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let (k, v) = cache.append(&k, &v)?; // (B, n, S + T, h)
        let scores = q.matmul(&k.t()?.contiguous()?)?; // (B, n, T, S + T)
        let weights = kit::ops::causal_softmax(&scores, 1.0 / (h as f64).sqrt())?;
        let out = weights.matmul(&v)?; // (B, n, T, h)
        self.c_proj
            .forward(&out.transpose(1, 2)?.contiguous()?.reshape((b, t, c))?)
    }
}

/// A pre-norm block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

/// GPT-2, as OpenAI shipped it.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Dense,
    cfg: Gpt2Config,
}

impl Gpt2 {
    /// The model of the weights `vb` holds, named as a Hugging Face GPT-2 file names them:
    /// with or without the `transformer.` prefix, with `lm_head.weight` or without it (then the
    /// output layer is `wte`).
    pub fn new(cfg: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        // `save_pretrained` puts the body under `transformer.`; OpenAI's files do not.
        let body = if vb.contains_tensor("transformer.wte.weight") {
            vb.pp("transformer")
        } else {
            vb.clone()
        };
        let (c, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let vb = body.pp(format!("h.{i}"));
                Ok(Block {
                    ln_1: LayerNorm::with_eps(c, eps, vb.pp("ln_1"))?,
                    attn: Attention::new(c, cfg.n_head, vb.pp("attn"))?,
                    ln_2: LayerNorm::with_eps(c, eps, vb.pp("ln_2"))?,
                    mlp: Mlp::new(c, vb.pp("mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let wte = embedding(cfg.vocab_size, c, body.pp("wte"))?;
        // Tied: the output layer is the token table, (V, C), unless the file writes it out.
        let head = if vb.contains_tensor("lm_head.weight") {
            vb.get((cfg.vocab_size, c), "lm_head.weight")?
        } else {
            wte.embeddings().clone()
        };
        Ok(Self {
            wpe: embedding(cfg.n_positions, c, body.pp("wpe"))?,
            wte,
            blocks,
            ln_f: LayerNorm::with_eps(c, eps, body.pp("ln_f"))?,
            lm_head: Dense::new(head, None),
            cfg: cfg.clone(),
        })
    }

    /// The GPT-2 of the folder `dir`: its `config.json` and `model.safetensors`.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg = Gpt2Config::read(dir)?;
        Self::new(&cfg, kit::gpt2::weights(dir)?)
    }

    /// Its settings.
    pub fn config(&self) -> &Gpt2Config {
        &self.cfg
    }

    /// An empty cache, one layer per block.
    pub fn new_cache(&self) -> Cache {
        Cache::new(self.blocks.len())
    }

    /// The logits of `tokens`, the positions after those in `cache`, whose keys and values
    /// every layer adds to its cache.
    ///
    /// # Shapes
    /// (B, T) → (B, T, V), with T plus the cached positions at most n_positions
    pub fn forward_step(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (_b, t) = tokens.dims2()?;
        let start = cache.positions();
        if start + t > self.cfg.n_positions {
            candle_core::bail!(
                "GPT-2 got {t} positions on top of {start}: it has position embeddings for {} only",
                self.cfg.n_positions
            )
        }
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

impl Module for Gpt2 {
    /// The whole of `idx` at once: one step from an empty cache, positions 0..T.
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        self.forward_step(idx, &mut self.new_cache())
    }
}

impl Decoder for Gpt2 {
    type Cache = Cache;

    fn new_cache(&self) -> Cache {
        Gpt2::new_cache(self)
    }

    fn block_size(&self) -> usize {
        self.cfg.n_positions
    }

    fn has_room(&self, cache: &Cache) -> bool {
        cache.positions() < self.cfg.n_positions
    }

    fn forward_step(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        Gpt2::forward_step(self, tokens, cache)
    }
}

/// How the next token is drawn from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// The logits are divided by it; 0 always takes the most likely token.
    pub temperature: f64,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep only the most likely tokens whose probabilities first add up to p, in (0, 1].
    pub top_p: Option<f64>,
}

impl Sampling {
    /// The most likely token, always.
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: None,
        top_p: None,
    };

    /// The model's own probabilities: temperature 1, every token kept.
    pub const PLAIN: Sampling = Sampling {
        temperature: 1.0,
        top_k: None,
        top_p: None,
    };
}

/// The probability of each id that `sampling` draws from `logits`: the logits divided by the
/// temperature, the top-k kept, then the top-p, the probabilities of what is kept made to add up
/// to 1, zero elsewhere.
pub fn distribution(logits: &[f32], sampling: &Sampling) -> Vec<f64> {
    let mut probs = vec![0.0; logits.len()];
    if logits.is_empty() {
        return probs;
    }
    // The ranking: a larger logit first, the lower id first among equals.
    let rank = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..logits.len()).collect();
    if sampling.temperature <= 0.0 {
        let first = order
            .into_iter()
            .min_by(rank)
            .expect("logits are not empty");
        probs[first] = 1.0;
        return probs;
    }
    let k = sampling.top_k.map_or(order.len(), |k| k.max(1));
    if k < order.len() {
        // The k first of the ranking, found without sorting all V ids (GPT-2 has 50257): the
        // selection puts them before index k.
        order.select_nth_unstable_by(k, rank);
        order.truncate(k);
    }
    order.sort_by(rank);
    // softmax(logits / T) over what is kept, from the largest logit down.
    let max = f64::from(logits[order[0]]);
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(logits[i]) - max) / sampling.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut kept: Vec<f64> = weights.iter().map(|w| w / total).collect();
    if let Some(p) = sampling.top_p {
        // The fewest most likely tokens whose mass reaches p.
        let mut mass = 0.0;
        let reach = kept
            .iter()
            .position(|q| {
                mass += q;
                mass >= p
            })
            .map_or(kept.len(), |last| last + 1);
        kept.truncate(reach);
        let total: f64 = kept.iter().sum();
        kept.iter_mut().for_each(|q| *q /= total);
    }
    for (&i, q) in order.iter().zip(kept) {
        probs[i] = q;
    }
    probs
}

/// The id that `u`, a number in [0, 1), draws from `probs`: the first at which the
/// probabilities added up so far exceed `u`; the last with a probability above 0 if rounding
/// leaves their whole sum at or under `u`.
pub fn pick(probs: &[f64], u: f64) -> u32 {
    let mut mass = 0.0;
    for (i, p) in probs.iter().enumerate() {
        mass += p;
        // Id i owns [mass before it, mass with it): an interval as long as its probability.
        if u < mass {
            return i as u32;
        }
    }
    // Rounding left u above the last sum: the last id that can be drawn.
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

/// Draws token ids from logits with a seeded generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler with these settings, drawing from a ChaCha8 generator seeded with `seed`.
    pub fn new(sampling: Sampling, seed: u64) -> Self {
        Self {
            sampling,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Its settings.
    pub fn sampling(&self) -> &Sampling {
        &self.sampling
    }

    /// One id drawn from `distribution(logits, sampling)`: one uniform draw per token, whatever
    /// the settings, so that a seed always means the same tokens.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        pick(&distribution(logits, &self.sampling), self.rng.random())
    }
}

/// `prompt` followed by up to `max_new_tokens` tokens, each drawn by `sampler` from the logits
/// of the last position, stopping after `stop` if it is drawn. With `use_cache`, the prompt
/// runs once and each new token one position on top of the cache; without, the last
/// block_size tokens run whole for every new token.
pub fn generate<M: Decoder + Module + ?Sized>(
    model: &M,
    sampler: &mut Sampler,
    prompt: &[u32],
    max_new_tokens: usize,
    use_cache: bool,
    stop: Option<u32>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        candle_core::bail!("generate needs a prompt of at least one token")
    }
    let block_size = model.block_size();
    let device = candle_core::Device::Cpu;
    let ids = |tokens: &[u32]| Tensor::new(tokens, &device)?.unsqueeze(0); // (1, T)
    let window = |tokens: &[u32]| tokens[tokens.len().saturating_sub(block_size)..].to_vec();
    let mut tokens = prompt.to_vec();
    let mut cache = model.new_cache();
    // The logits of the last position of the first step: the prompt's window.
    let step = window(prompt);
    let mut logits = if use_cache {
        model.forward_step(&ids(&step)?, &mut cache)?
    } else {
        model.forward(&ids(&step)?)?
    }
    .i((0, step.len() - 1))?;
    for i in 0..max_new_tokens {
        let next = sampler.sample(&logits.to_vec1::<f32>()?);
        tokens.push(next);
        if i + 1 == max_new_tokens || stop == Some(next) {
            break;
        }
        let (logits_all, last) = if !use_cache {
            let step = window(&tokens);
            (model.forward(&ids(&step)?)?, step.len() - 1)
        } else if model.has_room(&cache) {
            (model.forward_step(&ids(&[next])?, &mut cache)?, 0) // one new position
        } else {
            // Every position would shift by one: the cached keys and values are stale.
            cache = model.new_cache();
            let step = window(&tokens);
            (
                model.forward_step(&ids(&step)?, &mut cache)?,
                step.len() - 1,
            )
        };
        logits = logits_all.i((0, last))?;
    }
    Ok(tokens)
}
