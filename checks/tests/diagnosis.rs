//! The diagnosis of Tasks 2, 3, 6 and 7 on wrong answers a learner could write, each written
//! here with candle's ops: every one gets a headline that says what it does, never a list of
//! places to look. The headlines are snapshotted, so a person can read them all in one file.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use checks::diagnose::attention::{Subject, diagnose};
use checks::diagnose::kv_cache::{self, Append, AttentionSteps, AttnWeights, StepSubject};
use checks::diagnose::llama;
use checks::support::{SMALL, device, move_off_init, random_tensor, values};
use kit::nn::{Dense, FeedForward, LayerNorm, MultiHead, dense, dense_no_bias, embedding};
use kit::{GptConfig, SeededVarMap};
use reference::{FusedHeads, RefGpt};

/// Declares an enum of mistakes, each a unit variant, with `ALL`, every one in order.
macro_rules! mistakes {
    ($(#[$doc:meta])* enum $name:ident { $($mistake:ident,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        enum $name {
            $($mistake,)*
        }

        impl $name {
            const ALL: &[$name] = &[$($name::$mistake,)*];
        }
    };
}

mistakes! {
    /// A mistake in one head of attention, as a learner might make it in Task 2.
    enum Single {
        MaskFilledWithZero,
        MaskTransposed,
        MaskAfterSoftmax,
        ScaledBySqrtHidden,
        ScaledUp,
        NeitherScaledNorMasked,
        SoftmaxOverQueriesAndDividedByD,
        MaskHidesSelf,
        NoMask,
        KeysTimesQueries,
        KeysMixedAsValues,
        QueriesMixedAsValues,
        QueryAndValueWeightsSwapped,
        WeightsSquared,
        MaskSeesTwoAhead,
        DividedByOneMoreThanD,
    }
}

/// The query, key and value projections of attention, without a bias, named as Tasks 2 and 3
/// name them.
struct Projections {
    query: Dense,
    key: Dense,
    value: Dense,
}

impl Projections {
    fn new(hidden: usize, width: usize, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            query: dense_no_bias(hidden, width, vb.pp("query"))?,
            key: dense_no_bias(hidden, width, vb.pp("key"))?,
            value: dense_no_bias(hidden, width, vb.pp("value"))?,
        })
    }

    /// q, k and v of `xs`.
    fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        Ok((
            self.query.forward(xs)?,
            self.key.forward(xs)?,
            self.value.forward(xs)?,
        ))
    }
}

/// One head of attention with one mistake, its weights named as Task 2's.
struct WrongHead {
    qkv: Projections,
    head_dim: usize,
    hidden: usize,
    mistake: Single,
}

impl WrongHead {
    fn new(hidden: usize, head_dim: usize, mistake: Single, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: Projections::new(hidden, head_dim, &vb)?,
            head_dim,
            hidden,
            mistake,
        })
    }
}

impl Module for WrongHead {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        use Single::*;
        let (_b, t, _c) = xs.dims3()?;
        let (mut q, k, mut v) = self.qkv.forward(xs)?;
        if let QueryAndValueWeightsSwapped = self.mistake {
            (q, v) = (v, q);
        }
        let scores = match self.mistake {
            KeysTimesQueries => k.matmul(&q.t()?)?,
            _ => q.matmul(&k.t()?)?,
        };
        let d = self.head_dim as f64;
        let scores = match self.mistake {
            ScaledBySqrtHidden => (scores / (self.hidden as f64).sqrt())?,
            ScaledUp => (scores * d.sqrt())?,
            NeitherScaledNorMasked => scores,
            SoftmaxOverQueriesAndDividedByD => (scores / d)?,
            DividedByOneMoreThanD => (scores / (d + 1.0))?,
            _ => (scores / d.sqrt())?,
        };
        let lower = Tensor::tril2(t, DType::U8, xs.device())?;
        let visible = match self.mistake {
            MaskTransposed => lower.t()?.contiguous()?,
            MaskHidesSelf => (&lower - Tensor::eye(t, DType::U8, xs.device())?)?,
            // Ones on, below and two above the diagonal.
            MaskSeesTwoAhead => Tensor::from_vec(
                (0..t)
                    .flat_map(|i| (0..t).map(move |j| u8::from(j <= i + 2)))
                    .collect(),
                (t, t),
                xs.device(),
            )?,
            _ => lower.clone(),
        }
        .broadcast_as(scores.shape())?;
        let hidden = match self.mistake {
            MaskFilledWithZero => scores.zeros_like()?,
            _ => Tensor::full(f32::NEG_INFINITY, scores.shape(), xs.device())?,
        };
        let masked = match self.mistake {
            NoMask | NeitherScaledNorMasked | MaskAfterSoftmax => scores,
            _ => visible.where_cond(&scores, &hidden)?,
        };
        let axis = match self.mistake {
            SoftmaxOverQueriesAndDividedByD => D::Minus2,
            _ => D::Minus1,
        };
        let mut weights = candle_nn::ops::softmax(&masked, axis)?;
        if let MaskAfterSoftmax = self.mistake {
            weights = (weights * lower.to_dtype(DType::F32)?.broadcast_as(masked.shape())?)?;
        }
        if let WeightsSquared = self.mistake {
            weights = weights.sqr()?;
        }
        match self.mistake {
            KeysMixedAsValues => weights.matmul(&k),
            QueriesMixedAsValues => weights.matmul(&q),
            _ => weights.matmul(&v),
        }
    }
}

mistakes! {
    /// A mistake in multi-head attention, as a learner might make it in Task 3.
    enum Multi {
        NoOutputProjection,
        SplitAndMergedAsHN,
        MergedAsHN,
        ScaledTwice,
        ScaledBySqrtHidden,
        SoftmaxOverQueries,
        KeysMixedAsValues,
        MaskAfterSoftmax,
        NoMask,
    }
}

/// Multi-head attention with one mistake, its weights named as Task 3's.
struct WrongHeads {
    layers: MultiHead,
    hidden: usize,
    mistake: Multi,
}

impl WrongHeads {
    fn new(
        hidden: usize,
        heads: usize,
        head_dim: usize,
        mistake: Multi,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            layers: MultiHead::new(hidden, heads, head_dim, vb)?,
            hidden,
            mistake,
        })
    }
}

impl Module for WrongHeads {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        use Multi::*;
        let (b, t, _c) = xs.dims3()?;
        let layers = &self.layers;
        let (n, d) = (layers.num_heads, layers.head_dim);
        let split = |y: Tensor| -> Result<Tensor> {
            match self.mistake {
                // (b, t, (h n)) → (b, n, t, h)
                SplitAndMergedAsHN => y.reshape((b, t, d, n))?.permute((0, 3, 1, 2)),
                // (b, t, (n h)) → (b, n, t, h)
                _ => y.reshape((b, t, n, d))?.transpose(1, 2),
            }?
            .contiguous()
        };
        let q = split(layers.query.forward(xs)?)?;
        let k = split(layers.key.forward(xs)?)?;
        let v = split(layers.value.forward(xs)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let scale = match self.mistake {
            ScaledBySqrtHidden => 1.0 / (self.hidden as f64).sqrt(),
            _ => 1.0 / (d as f64).sqrt(),
        };
        let weights = match self.mistake {
            ScaledTwice => kit::ops::causal_softmax(&(scores * scale)?, scale)?,
            SoftmaxOverQueries | MaskAfterSoftmax | NoMask => {
                let lower =
                    Tensor::tril2(t, DType::U8, xs.device())?.broadcast_as(scores.shape())?;
                let scores = (scores * scale)?;
                match self.mistake {
                    SoftmaxOverQueries => {
                        let hidden = Tensor::full(f32::NEG_INFINITY, scores.shape(), xs.device())?;
                        candle_nn::ops::softmax(&lower.where_cond(&scores, &hidden)?, D::Minus2)?
                    }
                    MaskAfterSoftmax => {
                        (candle_nn::ops::softmax(&scores, D::Minus1)?
                            * lower.to_dtype(DType::F32)?)?
                    }
                    _ => candle_nn::ops::softmax(&scores, D::Minus1)?,
                }
            }
            _ => kit::ops::causal_softmax(&scores, scale)?,
        };
        let out = match self.mistake {
            KeysMixedAsValues => weights.matmul(&k)?,
            _ => weights.matmul(&v)?,
        };
        let merged = match self.mistake {
            // (b, n, t, h) → (b, t, (h n))
            SplitAndMergedAsHN | MergedAsHN => out.permute((0, 2, 3, 1))?,
            // (b, n, t, h) → (b, t, (n h))
            _ => out.transpose(1, 2)?,
        }
        .contiguous()?
        .reshape((b, t, n * d))?;
        match self.mistake {
            NoOutputProjection => Ok(merged),
            _ => layers.proj.forward(&merged),
        }
    }
}

fn single(mistake: Single) -> String {
    let (hidden, d) = (8, 4);
    let params = SeededVarMap::new(5);
    let m = WrongHead::new(hidden, d, mistake, params.var_builder(&device())).unwrap();
    diagnose(&Subject {
        forward: &|x| m.forward(x),
        params: &params,
        heads: 1,
        head_dim: d,
    })
}

fn multi(mistake: Multi) -> String {
    let (hidden, heads, d) = (8, 2, 4);
    let params = SeededVarMap::new(6);
    let m = WrongHeads::new(hidden, heads, d, mistake, params.var_builder(&device())).unwrap();
    move_off_init(&params, 60);
    diagnose(&Subject {
        forward: &|x| m.forward(x),
        params: &params,
        heads,
        head_dim: d,
    })
}

/// The words of the generic advice the diagnosis replaces: none may come back.
const GENERIC: [&str; 2] = ["check the mask", "check that head i"];

#[test]
fn every_wrong_answer_gets_a_headline_that_says_what_it_does() {
    let mut shown = String::new();
    for &mistake in Single::ALL {
        shown.push_str(&format!("task2 / {mistake:?}:\n{}\n\n", single(mistake)));
    }
    for &mistake in Multi::ALL {
        shown.push_str(&format!("task3 / {mistake:?}:\n{}\n\n", multi(mistake)));
    }
    for generic in GENERIC {
        assert!(!shown.contains(generic), "{generic}:\n{shown}");
    }
    insta::with_settings!({
        description => "The diagnosis of each wrong attention above: Task 2's single head \
            (hidden 8, head_dim 4) and Task 3's heads (hidden 8, 2 heads of 4), with seeded \
            weights. Each must say what the attention does, not where to look.",
        omit_expression => true,
    }, {
        insta::assert_snapshot!(shown);
    });
}

// ---- Tasks 6 and 7 ----------------------------------------------------------------------------

/// A mistake in an attention step on top of a cache, Task 6's or Task 7's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Right,
    /// The new queries see their own step's keys only (the cache is appended to, not read).
    IgnoresCache,
    /// A mask built by hand over (T, K): new query i sees the first i + 1 keys.
    MaskNotOffset,
    /// No mask: every kept key, the step's later ones too.
    NoMask,
    /// Task 7: the values rotated like the keys.
    ValuesRotated,
    /// Task 7: queries and keys rotated from position 0 at every step.
    FromZero,
    /// Task 7: the keys not rotated.
    KeysNotRotated,
}

/// Rotary position embeddings, as Task 7 asks: pairs (i, i + h/2) turned by p·10000^(−2i/h).
fn rotate(x: &Tensor, start: usize) -> Result<Tensor> {
    let (_b, _n, t, h) = x.dims4()?;
    let half = h / 2;
    let angles: Vec<f32> = (start..start + t)
        .flat_map(|p| {
            (0..half).map(move |i| (p as f64 * 10_000f64.powf(-2.0 * i as f64 / h as f64)) as f32)
        })
        .collect();
    let angles = Tensor::from_vec(angles, (t, half), x.device())?;
    let (cos, sin) = (angles.cos()?, angles.sin()?);
    let (x1, x2) = (
        x.narrow(D::Minus1, 0, half)?,
        x.narrow(D::Minus1, half, half)?,
    );
    let first = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let second = (x1.broadcast_mul(&sin)? + x2.broadcast_mul(&cos)?)?;
    Tensor::cat(&[first, second], D::Minus1)
}

/// A layer's cache in the tests' wrong models: keys and values, each (B, n, S, h).
type KvPair = (Option<Tensor>, Option<Tensor>);

/// Attention on top of a cache with one mistake: Task 6's (Task 3's names, no rotation) or
/// Task 7's (Llama's names, rotated queries and keys, a cache that keeps `window` positions).
struct StepAttention {
    qkvo: [Dense; 4],
    heads: usize,
    head_dim: usize,
    rope: bool,
    window: Option<usize>,
    mistake: Step,
}

impl StepAttention {
    fn new(
        hidden: usize,
        (heads, head_dim): (usize, usize),
        rope: bool,
        window: Option<usize>,
        mistake: Step,
        vb: VarBuilder,
    ) -> Result<Self> {
        let width = heads * head_dim;
        let qkvo = if rope {
            [
                dense_no_bias(hidden, width, vb.pp("q_proj"))?,
                dense_no_bias(hidden, width, vb.pp("k_proj"))?,
                dense_no_bias(hidden, width, vb.pp("v_proj"))?,
                dense_no_bias(width, hidden, vb.pp("o_proj"))?,
            ]
        } else {
            let MultiHead {
                query,
                key,
                value,
                proj,
                ..
            } = MultiHead::new(hidden, heads, head_dim, vb)?;
            [query, key, value, proj]
        };
        Ok(Self {
            qkvo,
            heads,
            head_dim,
            rope,
            window,
            mistake,
        })
    }

    fn step(&self, xs: &Tensor, cache: &mut KvPair, start: usize) -> Result<Tensor> {
        let (b, t, _c) = xs.dims3()?;
        let (n, h) = (self.heads, self.head_dim);
        let split = |y: Tensor| y.reshape((b, t, n, h))?.transpose(1, 2)?.contiguous();
        let [q, k, v] = [0, 1, 2].map(|i| self.qkvo[i].forward(xs).and_then(split));
        let (mut q, mut k, mut v) = (q?, k?, v?);
        if self.rope {
            let at = if self.mistake == Step::FromZero {
                0
            } else {
                start
            };
            q = rotate(&q, at)?;
            if self.mistake != Step::KeysNotRotated {
                k = rotate(&k, at)?;
            }
            if self.mistake == Step::ValuesRotated {
                v = rotate(&v, at)?;
            }
        }
        let (mut all_k, mut all_v) = match cache {
            (Some(old_k), Some(old_v)) => (
                Tensor::cat(&[&*old_k, &k], 2)?,
                Tensor::cat(&[&*old_v, &v], 2)?,
            ),
            _ => (k.clone(), v.clone()),
        };
        if let Some(w) = self.window {
            let len = all_k.dims()[2];
            let drop = len.saturating_sub(w);
            (all_k, all_v) = (
                all_k.narrow(2, drop, len - drop)?,
                all_v.narrow(2, drop, len - drop)?,
            );
        }
        *cache = (Some(all_k.clone()), Some(all_v.clone()));
        let (k, v) = match self.mistake {
            Step::IgnoresCache => (k, v),
            _ => (all_k, all_v),
        };
        let scale = 1.0 / (h as f64).sqrt();
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let weights = match self.mistake {
            Step::MaskNotOffset => {
                let s = k.dims()[2];
                let visible: Vec<u8> = (0..t)
                    .flat_map(|i| (0..s).map(move |j| u8::from(j <= i)))
                    .collect();
                let visible =
                    Tensor::from_vec(visible, (t, s), xs.device())?.broadcast_as(scores.shape())?;
                let hidden = Tensor::full(f32::NEG_INFINITY, scores.shape(), xs.device())?;
                candle_nn::ops::softmax_last_dim(&visible.where_cond(&(scores * scale)?, &hidden)?)?
            }
            Step::NoMask => candle_nn::ops::softmax_last_dim(&(scores * scale)?)?,
            _ => kit::ops::causal_softmax(&scores, scale)?,
        };
        let out = weights.matmul(&v)?;
        self.qkvo[3].forward(&out.transpose(1, 2)?.contiguous()?.reshape((b, t, n * h))?)
    }
}

/// What the diagnosis says of a cached attention with `mistake`: Task 6's, or Task 7's with a
/// window of 4.
fn step_diagnosis(mistake: Step, rope: bool) -> String {
    let (c, n, h) = (8, 2, 4);
    let window = rope.then_some(4);
    let params = SeededVarMap::new(31);
    let vb = params.var_builder(&device());
    let attn = StepAttention::new(c, (n, h), rope, window, mistake, vb).unwrap();
    move_off_init(&params, 32);
    let attn = &attn;
    let fresh = || -> Box<AttentionSteps<'_>> {
        let mut cache: KvPair = (None, None);
        Box::new(move |x, start| attn.step(x, &mut cache, start))
    };
    let weights = if rope {
        AttnWeights::task7(&params, "", n, h)
    } else {
        AttnWeights::task6(&params, "", n, h)
    };
    let subject = StepSubject {
        what: "forward_step",
        fresh: &fresh,
        weights,
        window,
    };
    let steps = [3, 2, 1, 1];
    let x = random_tensor(33, &[2, 7, c]);
    match kv_cache::run_in_steps(&subject, &x, &steps) {
        Err(failed) => failed,
        Ok(got) => kv_cache::attention_in_steps(&subject, &x, &steps, &got)
            .unwrap_or_else(|| "right".into()),
    }
}

/// A mistake in a layer's cache.
#[derive(Clone, Copy, Debug)]
enum Keep {
    /// Returns only the new positions (and keeps them all).
    NewOnly,
    /// The new positions before the cached ones.
    NewFirst,
    /// Joined along the heads.
    AlongTheHeads,
    /// Task 7: never drops a position.
    NeverTrimmed,
    /// Task 7: keeps one position fewer than the window.
    OneTooFew,
    /// Task 7: keeps the oldest positions.
    Oldest,
}

fn keep_diagnosis(mistake: Keep, window: Option<usize>) -> String {
    let fresh = move || -> Box<Append<'static>> {
        let mut cache: KvPair = (None, None);
        Box::new(move |k: &Tensor, v: &Tensor| {
            let join = |old: &Option<Tensor>, new: &Tensor| -> Result<Tensor> {
                match old {
                    None => Ok(new.clone()),
                    Some(old) => match mistake {
                        Keep::NewFirst => Tensor::cat(&[new, old], 2),
                        Keep::AlongTheHeads => Tensor::cat(&[old, new], 1),
                        _ => Tensor::cat(&[old, new], 2),
                    },
                }
            };
            let (mut all_k, mut all_v) = (join(&cache.0, k)?, join(&cache.1, v)?);
            if let Some(w) = window {
                let len = all_k.dims()[2];
                let (from, keep) = match mistake {
                    Keep::NeverTrimmed => (0, len),
                    Keep::OneTooFew => (len.saturating_sub(w - 1), len.min(w - 1)),
                    Keep::Oldest => (0, len.min(w)),
                    _ => (len.saturating_sub(w), len.min(w)),
                };
                (all_k, all_v) = (all_k.narrow(2, from, keep)?, all_v.narrow(2, from, keep)?);
            }
            cache = (Some(all_k.clone()), Some(all_v.clone()));
            match mistake {
                Keep::NewOnly => Ok((k.clone(), v.clone())),
                _ => Ok((all_k, all_v)),
            }
        })
    };
    let steps = if window.is_some() {
        &[3, 2, 3][..]
    } else {
        &[3, 2, 1][..]
    };
    kv_cache::append_probe("LayerCache::append", &fresh, steps, window)
        .unwrap_or_else(|| "right".into())
}

/// A mistake in a cached model's step, Task 6's or Task 7's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Positions {
    /// Task 6: each step embedded at positions 0..T.
    FromZero,
    /// Task 6: each block runs on a copy of its layer of the cache.
    CacheCopied,
    /// Task 7: the count of tokens seen never moves.
    SeenNeverMoves,
    /// Task 7: positions from the keys kept, which stop at the window.
    FromKept,
}

/// Task 6's MiniGPT with a cache, one mistake in its step.
struct CachedMiniGpt {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<(LayerNorm, StepAttention, LayerNorm, FeedForward)>,
    ln_f: LayerNorm,
    lm_head: Dense,
    mistake: Positions,
}

impl CachedMiniGpt {
    fn new(cfg: GptConfig, mistake: Positions, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden;
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let vb = vb.pp(format!("h.{i}"));
                let heads = (cfg.num_heads, cfg.head_dim());
                Ok((
                    LayerNorm::new(c, vb.pp("ln_1"))?,
                    StepAttention::new(c, heads, false, None, Step::Right, vb.pp("attn"))?,
                    LayerNorm::new(c, vb.pp("ln_2"))?,
                    FeedForward::new(c, vb.pp("mlp"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wte: embedding(cfg.vocab_size, c, vb.pp("wte"))?,
            wpe: embedding(cfg.block_size, c, vb.pp("wpe"))?,
            blocks,
            ln_f: LayerNorm::new(c, vb.pp("ln_f"))?,
            lm_head: dense(c, cfg.vocab_size, vb.pp("lm_head"))?,
            mistake,
        })
    }

    fn run(&self, tokens: &[u32], steps: &[usize]) -> Result<Vec<f64>> {
        let mut caches: Vec<KvPair> = vec![(None, None); self.blocks.len()];
        let mut out = Vec::new();
        let mut seen = 0;
        for &len in steps {
            let cached = caches[0].0.as_ref().map_or(0, |k| k.dims()[2]);
            let start = if self.mistake == Positions::FromZero {
                0
            } else {
                cached
            };
            let ids = Tensor::new(&tokens[seen..seen + len], &device())?.unsqueeze(0)?;
            let pos = Tensor::arange(start as u32, (start + len) as u32, &device())?;
            let mut x = self
                .wte
                .forward(&ids)?
                .broadcast_add(&self.wpe.forward(&pos)?)?;
            for ((ln_1, attn, ln_2, mlp), cache) in self.blocks.iter().zip(&mut caches) {
                let mut copy = cache.clone();
                let layer = if self.mistake == Positions::CacheCopied {
                    &mut copy
                } else {
                    cache
                };
                x = (&x + attn.step(&ln_1.forward(&x)?, layer, start)?)?;
                x = (&x + mlp.forward(&ln_2.forward(&x)?)?)?;
            }
            out.extend(values(&self.lm_head.forward(&self.ln_f.forward(&x)?)?));
            seen += len;
        }
        Ok(out)
    }
}

fn minigpt_diagnosis(mistake: Positions) -> String {
    let params = SeededVarMap::new(41);
    let vb = params.var_builder(&device());
    let model = CachedMiniGpt::new(SMALL, mistake, vb.clone()).unwrap();
    let reference = RefGpt::with_norm(SMALL, vb, FusedHeads::new, LayerNorm::new).unwrap();
    move_off_init(&params, 42);
    let tokens: Vec<u32> = (0..8).map(|i| (i * 11 + 3) % 65).collect();
    let steps = [3, 1, 1, 1, 1, 1];
    let got = model.run(&tokens, &steps).unwrap();
    kv_cache::minigpt_steps(&got, &reference, &tokens, &steps)
}

/// RMSNorm, right.
fn rms(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + 1e-6)?.sqrt()?;
    x.broadcast_div(&r)?.broadcast_mul(weight)
}

/// Task 7's MiniLlama with a cache, one mistake in how its step numbers positions.
struct CachedLlama {
    embed: Embedding,
    layers: Vec<(Tensor, StepAttention, Tensor, [Dense; 3])>,
    norm: Tensor,
    lm_head: Dense,
    window: usize,
    mistake: Positions,
}

impl CachedLlama {
    fn new(cfg: GptConfig, mistake: Positions, vb: VarBuilder) -> Result<Self> {
        let (c, f) = (cfg.hidden, (8 * cfg.hidden + 5) / 3);
        let scale = |vb: VarBuilder| vb.get_with_hints(c, "weight", candle_nn::init::ONE);
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                let heads = (cfg.num_heads, cfg.head_dim());
                let window = Some(cfg.block_size);
                let mlp = vb.pp("mlp");
                Ok((
                    scale(vb.pp("input_layernorm"))?,
                    StepAttention::new(c, heads, true, window, Step::Right, vb.pp("self_attn"))?,
                    scale(vb.pp("post_attention_layernorm"))?,
                    [
                        dense_no_bias(c, f, mlp.pp("gate_proj"))?,
                        dense_no_bias(c, f, mlp.pp("up_proj"))?,
                        dense_no_bias(f, c, mlp.pp("down_proj"))?,
                    ],
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: embedding(cfg.vocab_size, c, vb.pp("embed_tokens"))?,
            layers,
            norm: scale(vb.pp("norm"))?,
            lm_head: dense_no_bias(c, cfg.vocab_size, vb.pp("lm_head"))?,
            window: cfg.block_size,
            mistake,
        })
    }

    fn run(&self, tokens: &[u32], steps: &[usize]) -> Result<Vec<f64>> {
        let mut caches: Vec<KvPair> = vec![(None, None); self.layers.len()];
        let mut out = Vec::new();
        let mut seen = 0;
        for &len in steps {
            let start = match self.mistake {
                Positions::SeenNeverMoves => 0,
                Positions::FromKept => seen.min(self.window),
                _ => seen,
            };
            let ids = Tensor::new(&tokens[seen..seen + len], &device())?.unsqueeze(0)?;
            let mut x = self.embed.forward(&ids)?;
            for ((g1, attn, g2, [gate, up, down]), cache) in self.layers.iter().zip(&mut caches) {
                x = (&x + attn.step(&rms(&x, g1)?, cache, start)?)?;
                let h = rms(&x, g2)?;
                let mixed = (candle_nn::ops::silu(&gate.forward(&h)?)? * up.forward(&h)?)?;
                x = (&x + down.forward(&mixed)?)?;
            }
            out.extend(values(&self.lm_head.forward(&rms(&x, &self.norm)?)?));
            seen += len;
        }
        Ok(out)
    }
}

fn llama_diagnosis(mistake: Positions) -> String {
    let params = SeededVarMap::new(51);
    let model = CachedLlama::new(SMALL, mistake, params.var_builder(&device())).unwrap();
    move_off_init(&params, 52);
    let tokens: Vec<u32> = (0..14).map(|i| (i * 13 + 2) % 65).collect();
    let steps = [8, 1, 1, 1, 1, 1, 1];
    let got = model.run(&tokens, &steps).unwrap();
    llama::llama_steps(&got, &params, &SMALL, &tokens, &steps)
}

#[test]
fn every_wrong_cache_step_and_loop_of_task_6_gets_a_headline_that_says_what_it_does() {
    let mut shown = String::new();
    for mistake in [Keep::NewOnly, Keep::NewFirst, Keep::AlongTheHeads] {
        shown.push_str(&format!(
            "cache / {mistake:?}:\n{}\n\n",
            keep_diagnosis(mistake, None)
        ));
    }
    for mistake in [Step::IgnoresCache, Step::MaskNotOffset, Step::NoMask] {
        shown.push_str(&format!(
            "attention / {mistake:?}:\n{}\n\n",
            step_diagnosis(mistake, false)
        ));
    }
    for mistake in [Positions::FromZero, Positions::CacheCopied] {
        shown.push_str(&format!(
            "step / {mistake:?}:\n{}\n\n",
            minigpt_diagnosis(mistake)
        ));
    }
    let block = SMALL.block_size;
    // The calls of a generation loop: (what it does, prompt, new tokens, the calls it made).
    for (mistake, p, n, calls) in [
        ("WholeTextAgain", 3, 4, vec![3, 4, 5, 6]),
        ("LastTokenRun", 3, 4, vec![3, 1, 1, 1, 1]),
        ("RebuiltByOne", 6, 6, vec![6, 1, 1, 7, 1, 7]),
        ("NotRebuilt", 6, 6, vec![6, 1, 1, 1]),
        ("WholeLongPrompt", 12, 4, vec![12]),
    ] {
        let want = kv_cache::expected_calls(p, n, block);
        shown.push_str(&format!(
            "loop / {mistake}:\n{}\n\n",
            kv_cache::calls_say(&calls, &want, p, n, block)
        ));
    }
    let lookup = candle_core::Error::InvalidIndex {
        op: "index-select",
        index: 8,
        size: 8,
    };
    shown.push_str(&format!(
        "refusal / LookupFailsInstead:\n{}\n",
        kv_cache::incidental(&lookup).unwrap_or("a refusal")
    ));
    insta::with_settings!({
        description => "The diagnosis of each wrong Task 6 piece above, written with candle's \
            ops: a cache (3, 2 and 1 positions appended), attention in steps of 3, 2, 1 and 1 \
            (hidden 8, 2 heads of 4), a cached MiniGPT (vocab 65, hidden 32, block 8, 2 layers) \
            run as a prompt of 3 and then token by token, a generation loop's calls with \
            block_size 8, and an error that an op raises where a refusal belongs. Each must say \
            what the piece does.",
        omit_expression => true,
    }, {
        insta::assert_snapshot!(shown);
    });
}

#[test]
fn every_wrong_part_and_step_of_task_7_gets_a_headline_that_says_what_it_does() {
    let mut shown = String::new();
    // RMSNorm on rows away from zero mean.
    let x = random_tensor(61, &[2, 3, 8]).affine(2.0, 0.7).unwrap();
    let g = random_tensor(62, &[8]).affine(0.2, 1.0).unwrap();
    let mean = x.mean_keepdim(D::Minus1).unwrap();
    let ms = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6).unwrap();
    let centred = x.broadcast_sub(&mean).unwrap();
    let var = (centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6).unwrap();
    for (mistake, y) in [
        ("MeanSubtracted", centred.broadcast_div(&ms.sqrt().unwrap())),
        ("LayerNorm", centred.broadcast_div(&var.sqrt().unwrap())),
        ("NoRoot", x.broadcast_div(&ms)),
    ] {
        let got = values(&y.unwrap().broadcast_mul(&g).unwrap());
        let says = llama::rms_norm(&got, &values(&x), 8, &values(&g));
        shown.push_str(&format!("rms_norm / {mistake}:\n{says}\n\n"));
    }
    // RoPE from position 3, (1, 2, 5, 8).
    let x = random_tensor(63, &[1, 2, 5, 8]);
    let (b, n, t, h) = x.dims4().unwrap();
    let half = h / 2;
    let turn = |rate: f64, flip: f32, adjacent: bool| -> Tensor {
        let angles: Vec<f32> = (3..3 + t)
            .flat_map(|p| {
                (0..half)
                    .map(move |i| (p as f64 * 10_000f64.powf(-rate * i as f64 / h as f64)) as f32)
            })
            .collect();
        let angles = Tensor::from_vec(angles, (t, half), &device()).unwrap();
        let (cos, sin) = (
            angles.cos().unwrap(),
            (angles.sin().unwrap() * flip as f64).unwrap(),
        );
        let (x1, x2) = if adjacent {
            let pairs = x.reshape((b, n, t, half, 2)).unwrap();
            (
                pairs.narrow(4, 0, 1).unwrap().squeeze(4).unwrap(),
                pairs.narrow(4, 1, 1).unwrap().squeeze(4).unwrap(),
            )
        } else {
            (
                x.narrow(3, 0, half).unwrap(),
                x.narrow(3, half, half).unwrap(),
            )
        };
        let first = (x1.broadcast_mul(&cos).unwrap() - x2.broadcast_mul(&sin).unwrap()).unwrap();
        let second = (x1.broadcast_mul(&sin).unwrap() + x2.broadcast_mul(&cos).unwrap()).unwrap();
        if adjacent {
            Tensor::stack(&[first, second], 4)
                .unwrap()
                .reshape((b, n, t, h))
                .unwrap()
        } else {
            Tensor::cat(&[first, second], 3).unwrap()
        }
    };
    for (mistake, y) in [
        ("AdjacentPairs", turn(2.0, 1.0, true)),
        ("ExponentIOverH", turn(1.0, 1.0, false)),
        ("SineFlipped", turn(2.0, -1.0, false)),
    ] {
        let says = llama::rope(&values(&y), &values(&x), h, t, 3);
        shown.push_str(&format!("rope / {mistake}:\n{says}\n\n"));
    }
    // SwiGLU, C = 8, F = 23.
    let params = SeededVarMap::new(64);
    let vb = params.var_builder(&device());
    let f = 23;
    let [gate, up, down] = [("gate_proj", 8, f), ("up_proj", 8, f), ("down_proj", f, 8)]
        .map(|(name, i, o)| dense_no_bias(i, o, vb.pp(name)).unwrap());
    let w = |name: &str| reference::param(&params, &format!("{name}.weight"));
    let x = random_tensor(65, &[2, 3, 8]);
    let (gx, ux) = (gate.forward(&x).unwrap(), up.forward(&x).unwrap());
    for (mistake, mixed) in [
        ("Gelu", (gx.gelu().unwrap() * &ux).unwrap()),
        ("GeluErf", (gx.gelu_erf().unwrap() * &ux).unwrap()),
        ("Relu", (gx.relu().unwrap() * &ux).unwrap()),
        (
            "GateAndUpSwapped",
            (candle_nn::ops::silu(&ux).unwrap() * &gx).unwrap(),
        ),
    ] {
        let got = values(&down.forward(&mixed).unwrap());
        let says = llama::swiglu(
            &got,
            &values(&x),
            6,
            (&w("gate_proj"), &w("up_proj"), &w("down_proj")),
            f,
        );
        shown.push_str(&format!("swiglu / {mistake}:\n{says}\n\n"));
    }
    for mistake in [Keep::NeverTrimmed, Keep::OneTooFew, Keep::Oldest] {
        shown.push_str(&format!(
            "cache / {mistake:?}:\n{}\n\n",
            keep_diagnosis(mistake, Some(4))
        ));
    }
    for mistake in [
        Step::IgnoresCache,
        Step::ValuesRotated,
        Step::FromZero,
        Step::KeysNotRotated,
    ] {
        shown.push_str(&format!(
            "attention / {mistake:?}:\n{}\n\n",
            step_diagnosis(mistake, true)
        ));
    }
    for mistake in [Positions::SeenNeverMoves, Positions::FromKept] {
        shown.push_str(&format!(
            "step / {mistake:?}:\n{}\n\n",
            llama_diagnosis(mistake)
        ));
    }
    insta::with_settings!({
        description => "The diagnosis of each wrong Task 7 piece above, written with candle's \
            ops: RMSNorm (rows of 8), RoPE ((1, 2, 5, 8) from position 3), SwiGLU (C 8, F 23), a \
            cache that keeps 4 (3, 2 and 3 positions appended), attention in steps of 3, 2, 1 \
            and 1 on it (hidden 8, 2 heads of 4), and a cached MiniLlama (vocab 65, hidden 32, \
            block 8, 2 layers) run as a prompt of 8 and then token by token past block_size. \
            Each must say what the piece does.",
        omit_expression => true,
    }, {
        insta::assert_snapshot!(shown);
    });
}

// ---- Task 8 --------------------------------------------------------------------------------

mod bpe_mistakes {
    //! Task 8's parts written wrong by hand, the way a learner might, each with the verdict the
    //! diagnosis gives.

    use checks::diagnose::bpe;
    use kit::bpe::{END_OF_TEXT, Pair, chunks};
    use std::collections::BTreeMap;

    /// The largest pair among equal counts.
    fn best_pair_largest(counts: &BTreeMap<Pair, usize>) -> Option<Pair> {
        let top = counts.values().copied().max()?;
        counts
            .iter()
            .filter(|&(_, &n)| n == top)
            .map(|(&p, _)| p)
            .next_back()
    }

    /// The rarest pair.
    fn best_pair_rarest(counts: &BTreeMap<Pair, usize>) -> Option<Pair> {
        counts
            .iter()
            .filter(|&(_, &n)| n > 0)
            .min_by_key(|&(_, &n)| n)
            .map(|(&p, _)| p)
    }

    /// Steps one token on after a merge: occurrences overlap.
    fn merge_overlapping(tokens: &[u32], pair: Pair, id: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            if i + 1 < tokens.len() && (tokens[i], tokens[i + 1]) == pair {
                out.push(id);
            } else {
                out.push(tokens[i]);
            }
            i += 1;
        }
        out
    }

    /// Scans from the right.
    fn merge_from_the_right(tokens: &[u32], pair: Pair, id: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = tokens.len();
        while i > 0 {
            if i >= 2 && (tokens[i - 2], tokens[i - 1]) == pair {
                out.push(id);
                i -= 2;
            } else {
                out.push(tokens[i - 1]);
                i -= 1;
            }
        }
        out.reverse();
        out
    }

    fn words_of(text: &str, drop_special: bool) -> BTreeMap<Vec<u32>, usize> {
        let mut words = BTreeMap::new();
        let pieces: Vec<&str> = if drop_special {
            text.split(END_OF_TEXT).collect()
        } else {
            vec![text]
        };
        for piece in pieces {
            for chunk in chunks(piece) {
                *words
                    .entry(chunk.bytes().map(u32::from).collect())
                    .or_insert(0) += 1;
            }
        }
        words
    }

    fn pairs_of(words: &[(Vec<u32>, usize)], weighted: bool) -> BTreeMap<Pair, usize> {
        let mut counts = BTreeMap::new();
        for (tokens, n) in words {
            for w in tokens.windows(2) {
                *counts.entry((w[0], w[1])).or_insert(0) += if weighted { *n } else { 1 };
            }
        }
        counts
    }

    /// A trainer that counts the pairs once and never again: each merge takes the next best
    /// pair of the first count.
    fn train_counting_once(text: &str, vocab_size: usize) -> Vec<Pair> {
        let words: Vec<(Vec<u32>, usize)> = words_of(text, true).into_iter().collect();
        let mut counts = pairs_of(&words, true);
        let mut merges = Vec::new();
        while 256 + merges.len() < vocab_size {
            let Some(pair) = reference::bpe::best_pair(&counts) else {
                break;
            };
            counts.remove(&pair);
            merges.push(pair);
        }
        merges
    }

    /// The latest merge first: the adjacent pair that makes the highest id.
    fn encode_chunk_latest_first(chunk: &[u8], merges: &[Pair]) -> Vec<u32> {
        let mut tokens: Vec<u32> = chunk.iter().map(|&b| u32::from(b)).collect();
        loop {
            let found = tokens
                .windows(2)
                .filter_map(|w| merges.iter().position(|&m| m == (w[0], w[1])))
                .max();
            let Some(k) = found else { break };
            tokens = reference::bpe::merge(&tokens, merges[k], 256 + k as u32);
        }
        tokens
    }

    fn encode_whole(text: &str, merges: &[Pair], specials: bool, chunked: bool) -> Vec<u32> {
        let encoder = reference::bpe::Encoder::new(merges);
        let eot = 256 + merges.len() as u32;
        let pieces: Vec<&str> = if specials {
            text.split(END_OF_TEXT).collect()
        } else {
            vec![text]
        };
        let mut ids = Vec::new();
        for (i, piece) in pieces.into_iter().enumerate() {
            if i > 0 {
                ids.push(eot);
            }
            if chunked {
                for chunk in chunks(piece) {
                    ids.extend(encoder.encode_chunk(chunk.as_bytes()));
                }
            } else {
                ids.extend(encoder.encode_chunk(piece.as_bytes()));
            }
        }
        ids
    }

    #[test]
    fn every_task8_mistake_is_named() {
        let mut shown = String::new();
        let mut say =
            |what: &str, verdict: String| shown.push_str(&format!("{what}:\n{verdict}\n\n"));
        let counts: BTreeMap<Pair, usize> = [
            ((104, 101), 7),
            ((32, 116), 7),
            ((116, 104), 7),
            ((101, 32), 2),
        ]
        .into_iter()
        .collect();
        say(
            "best_pair / largest among equals",
            bpe::best_pair(best_pair_largest(&counts), &counts),
        );
        say(
            "best_pair / rarest",
            bpe::best_pair(best_pair_rarest(&counts), &counts),
        );
        let tokens = [97, 97, 97, 98, 97, 97];
        say(
            "merge / overlapping",
            bpe::merge(
                &merge_overlapping(&tokens, (97, 97), 256),
                &tokens,
                (97, 97),
                256,
            ),
        );
        say(
            "merge / from the right",
            bpe::merge(
                &merge_from_the_right(&tokens, (97, 97), 256),
                &tokens,
                (97, 97),
                256,
            ),
        );
        let text = "the cat<|endoftext|>the hat, the end";
        let kept = words_of(text, false);
        say("words / special kept", bpe::words(&kept, true, text));
        let words: Vec<(Vec<u32>, usize)> = words_of(text, true).into_iter().collect();
        let expected = pairs_of(&words, true);
        say(
            "pair_counts / unweighted",
            bpe::pair_counts(&pairs_of(&words, false), &expected, &words),
        );
        let corpus = "the thin thief then thanked the other thirty thinkers, then they thought";
        let plain = reference::bpe::train(corpus, 270);
        say(
            "train / counts once",
            bpe::train(&train_counting_once(corpus, 270), &plain, corpus, 270),
        );
        say(
            "train / stops early",
            bpe::train(&plain[..5], &plain, corpus, 270),
        );
        // (b, c) learnt before (a, b): abc is a + bc.
        let order = [(98, 99), (97, 98)];
        say(
            "encode_chunk / latest first",
            bpe::encode_chunk(&encode_chunk_latest_first(b"abc", &order), b"abc", &order),
        );
        let merges = reference::bpe::train("the   then   thief   they", 262);
        let sentence = "then  the thief   they,  <|endoftext|>the end";
        say(
            "encode / no chunks",
            bpe::encode(
                &encode_whole(sentence, &merges, true, false),
                sentence,
                &merges,
            ),
        );
        say(
            "encode / special as text",
            bpe::encode(
                &encode_whole(sentence, &merges, false, true),
                sentence,
                &merges,
            ),
        );
        let fixture: serde_json::Value = serde_json::json!({"a": 0, "Ġ": 1, "<|endoftext|>": 2});
        let raw: serde_json::Value = serde_json::json!({"a": 0, " ": 1, "<|endoftext|>": 2});
        say("vocab.json / raw bytes", bpe::vocab_json(&raw, &fixture));
        let missing: serde_json::Value = serde_json::json!({"a": 0, "Ġ": 1});
        say(
            "vocab.json / no special",
            bpe::vocab_json(&missing, &fixture),
        );
        insta::with_settings!({
            description => "The diagnosis of each wrong Task 8 part above, written by hand: \
                best_pair on counts with a three-way tie, merge of (a, a) in a a a b a a, words \
                and pair counts of a short text with <|endoftext|>, training on a sentence of th- \
                words, encoding with its merges, vocab.json. Each must say what the part does.",
            omit_expression => true,
        }, {
            insta::assert_snapshot!(shown);
        });
    }
}

// ---- Task 9 --------------------------------------------------------------------------------

mod gpt2_mistakes {
    //! Task 9's loader and GPT-2 written wrong by hand with candle's ops, the way a learner
    //! might, on the fixture's weights, each with the verdict the diagnosis gives.

    use candle_core::{D, DType, Device, Module, Result, Tensor};
    use candle_nn::VarBuilder;
    use checks::diagnose::gpt2;
    use checks::support::values;
    use kit::gpt2::Gpt2Config;
    use kit::nn::Dense;
    use reference::gpt2::Weights;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn folder() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/task9-gpt2")
    }

    /// The fixture's tensors, named without the prefix.
    fn tensors() -> HashMap<String, Tensor> {
        candle_core::safetensors::load(folder().join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(name, t)| (name.trim_start_matches("transformer.").to_string(), t))
            .collect()
    }

    /// The fixture's first prompt: "The keeper's lamp wasn't lit".
    const PROMPT: [u32; 15] = [
        298, 332, 101, 336, 277, 264, 97, 109, 112, 263, 301, 110, 355, 264, 269,
    ];

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Wrong {
        ExactGelu,
        KitEpsilon,
        SquareUntransposed,
        Reshaped,
        NoBias,
        NotScaled,
        KeysFirst,
        HeadByHead,
        NoFinalNorm,
        NoPositions,
        ExactGeluAndKitEpsilon,
        PositionsFromZero,
        NoCache,
    }

    /// GPT-2 on the fixture's weights with one mistake, run in steps on a cache of its own.
    struct WrongGpt2 {
        t: HashMap<String, Tensor>,
        cfg: Gpt2Config,
        wrong: Wrong,
    }

    impl WrongGpt2 {
        fn new(wrong: Wrong) -> Self {
            Self {
                t: tensors(),
                cfg: Gpt2Config::read(&folder()).unwrap(),
                wrong,
            }
        }

        fn get(&self, name: &str) -> &Tensor {
            &self.t[name]
        }

        /// `x W + b` of the Conv1D `name`, its weight stored (n_in, n_out), used wrong where
        /// the mistake says.
        fn conv(&self, x: &Tensor, name: &str, n_in: usize, n_out: usize) -> Result<Tensor> {
            let w = self.get(&format!("{name}.weight"));
            let w = match self.wrong {
                Wrong::SquareUntransposed if n_in == n_out => w.t()?,
                Wrong::Reshaped => w.reshape((n_out, n_in))?.t()?,
                _ => w.clone(),
            };
            let y = x.matmul(&w)?;
            if self.wrong == Wrong::NoBias {
                Ok(y)
            } else {
                y.broadcast_add(self.get(&format!("{name}.bias")))
            }
        }

        fn norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
            let eps = match self.wrong {
                Wrong::KitEpsilon | Wrong::ExactGeluAndKitEpsilon => 1e-6,
                _ => 1e-5,
            };
            let (g, b) = (
                self.get(&format!("{name}.weight")),
                self.get(&format!("{name}.bias")),
            );
            kit::ops::layer_norm(x, g, b, eps)
        }

        /// The logits of `ids` run in steps of `steps` tokens, joined.
        fn run(&self, ids: &[u32], steps: &[usize]) -> Result<Vec<f64>> {
            let (c, n) = (self.cfg.n_embd, self.cfg.n_head);
            let h = c / n;
            let mut cache: Vec<Option<(Tensor, Tensor)>> = vec![None; self.cfg.n_layer];
            let mut out = Vec::new();
            let mut start = 0;
            for &len in steps {
                if self.wrong == Wrong::NoCache {
                    cache = vec![None; self.cfg.n_layer];
                }
                let first = if self.wrong == Wrong::PositionsFromZero {
                    0
                } else {
                    start
                };
                let tokens = Tensor::new(&ids[start..start + len], &Device::Cpu)?;
                let mut x = self.get("wte.weight").index_select(&tokens, 0)?; // (T, C)
                if self.wrong != Wrong::NoPositions {
                    x = (x + self.get("wpe.weight").narrow(0, first, len)?)?;
                }
                for (l, kv) in cache.iter_mut().enumerate() {
                    let at = |name: &str| format!("h.{l}.{name}");
                    let qkv =
                        self.conv(&self.norm(&x, &at("ln_1"))?, &at("attn.c_attn"), c, 3 * c)?;
                    let heads = |t: Tensor| t.reshape((len, n, h))?.transpose(0, 1)?.contiguous();
                    let part = |i: usize| -> Result<Tensor> {
                        match self.wrong {
                            Wrong::HeadByHead => qkv
                                .reshape((len, n, 3 * h))?
                                .narrow(D::Minus1, i * h, h)?
                                .transpose(0, 1)?
                                .contiguous(),
                            Wrong::KeysFirst => heads(qkv.narrow(1, [1, 0, 2][i] * c, c)?),
                            _ => heads(qkv.narrow(1, i * c, c)?),
                        }
                    };
                    let (q, mut k, mut v) = (part(0)?, part(1)?, part(2)?);
                    if let Some((old_k, old_v)) = kv.take() {
                        k = Tensor::cat(&[&old_k, &k], 1)?;
                        v = Tensor::cat(&[&old_v, &v], 1)?;
                    }
                    *kv = Some((k.clone(), v.clone()));
                    let scale = if self.wrong == Wrong::NotScaled {
                        1.0
                    } else {
                        1.0 / (h as f64).sqrt()
                    };
                    let scores = q.matmul(&k.t()?.contiguous()?)?; // (n, T, S + T)
                    let weights = kit::ops::causal_softmax(&scores, scale)?;
                    let merged = weights.matmul(&v)?.transpose(0, 1)?.contiguous()?;
                    let attn = self.conv(&merged.reshape((len, c))?, &at("attn.c_proj"), c, c)?;
                    x = (x + attn)?;
                    let hidden =
                        self.conv(&self.norm(&x, &at("ln_2"))?, &at("mlp.c_fc"), c, 4 * c)?;
                    let hidden = match self.wrong {
                        Wrong::ExactGelu | Wrong::ExactGeluAndKitEpsilon => hidden.gelu_erf()?,
                        _ => hidden.gelu()?,
                    };
                    x = (x + self.conv(&hidden, &at("mlp.c_proj"), 4 * c, c)?)?;
                }
                let x = if self.wrong == Wrong::NoFinalNorm {
                    x
                } else {
                    self.norm(&x, "ln_f")?
                };
                out.extend(values(&x.matmul(&self.get("wte.weight").t()?)?));
                start += len;
            }
            Ok(out)
        }
    }

    /// A Conv1D's weight asked for as the mistake `how` asks for it: "out-in" in Dense's
    /// shape, "stored" as stored and used as Dense's, "reshaped", "no-bias".
    fn wrong_conv1d(how: &str, n_in: usize, n_out: usize, vb: &VarBuilder) -> Result<Dense> {
        let bias = vb.get(n_out, "bias")?;
        Ok(match how {
            "out-in" => Dense::new(vb.get((n_out, n_in), "weight")?, Some(bias)),
            "stored" => Dense::new(vb.get((n_in, n_out), "weight")?, Some(bias)),
            "reshaped" => Dense::new(
                vb.get((n_in, n_out), "weight")?.reshape((n_out, n_in))?,
                Some(bias),
            ),
            _ => Dense::new(vb.get((n_in, n_out), "weight")?.t()?.contiguous()?, None),
        })
    }

    #[test]
    fn every_task9_mistake_is_named() {
        let mut shown = String::new();
        let mut say =
            |what: &str, verdict: String| shown.push_str(&format!("{what}:\n{verdict}\n\n"));
        let t = tensors();
        let cfg = Gpt2Config::read(&folder()).unwrap();

        // The Conv1D alone: c_attn (32 → 96), then attn.c_proj (32 → 32), layer 0.
        for (name, n_out) in [("h.0.attn.c_attn", 96), ("h.0.attn.c_proj", 32)] {
            let layer = HashMap::from([
                ("weight".to_string(), t[&format!("{name}.weight")].clone()),
                ("bias".to_string(), t[&format!("{name}.bias")].clone()),
            ]);
            let vb = VarBuilder::from_tensors(layer, DType::F32, &Device::Cpu);
            let x = checks::support::random_tensor(91, &[3, 32]);
            let (w, b) = (
                values(&t[&format!("{name}.weight")]),
                values(&t[&format!("{name}.bias")]),
            );
            for how in ["out-in", "stored", "reshaped", "no-bias"] {
                let got = wrong_conv1d(how, 32, n_out, &vb)
                    .and_then(|d| d.forward(&x))
                    .map(|y| values(&y))
                    .map_err(|e| e.to_string());
                let verdict = gpt2::conv1d(&got, &values(&x), (&w, &b), 32, n_out);
                say(&format!("conv1d {name} / {how}"), verdict);
            }
        }

        // The feed-forward layer of block 0 on random rows.
        let x = checks::support::random_tensor(92, &[4, 32])
            .affine(2.0, 0.0)
            .unwrap();
        let v = |name: &str| values(&t[name]);
        let (fc_w, fc_b) = (v("h.0.mlp.c_fc.weight"), v("h.0.mlp.c_fc.bias"));
        let (pr_w, pr_b) = (v("h.0.mlp.c_proj.weight"), v("h.0.mlp.c_proj.bias"));
        let mlp = |act: &dyn Fn(&Tensor) -> Result<Tensor>| -> Vec<f64> {
            let fc = x.matmul(&t["h.0.mlp.c_fc.weight"]).unwrap();
            let fc = fc.broadcast_add(&t["h.0.mlp.c_fc.bias"]).unwrap();
            let y = act(&fc)
                .unwrap()
                .matmul(&t["h.0.mlp.c_proj.weight"])
                .unwrap();
            values(&y.broadcast_add(&t["h.0.mlp.c_proj.bias"]).unwrap())
        };
        let fc = (&fc_w[..], Some(&fc_b[..]));
        let proj = (&pr_w[..], Some(&pr_b[..]));
        for what in ["gelu_erf", "relu", "no activation"] {
            let act = |z: &Tensor| match what {
                "gelu_erf" => z.gelu_erf(),
                "relu" => z.relu(),
                _ => Ok(z.clone()),
            };
            say(
                &format!("mlp / {what}"),
                gpt2::mlp(&mlp(&act), &values(&x), 32, fc, proj),
            );
        }

        // Loaders that fail, as candle says it, read back.
        let weights = kit::gpt2::weights(&folder()).unwrap();
        let layout = "transformers' layout: every name under transformer., no lm_head.weight";
        for (what, name) in [
            ("untied: lm_head.weight asked for", "lm_head.weight"),
            ("no prefix taken", "h.0.ln_1.weight"),
            ("lm_head under the prefix", "transformer.lm_head.weight"),
        ] {
            let e = weights.get((357, 32), name).map(|_| ()).unwrap_err();
            say(
                &format!("load / {what}"),
                gpt2::load_error(&e.to_string(), layout, &cfg),
            );
        }
        let bare = "OpenAI's layout: no prefix, no lm_head.weight";
        let e = VarBuilder::from_tensors(t.clone(), DType::F32, &Device::Cpu)
            .get(32, "transformer.h.0.ln_1.weight")
            .unwrap_err();
        say(
            "load / the prefix always taken",
            gpt2::load_error(&e.to_string(), bare, &cfg),
        );

        // Whole models, each with one mistake, on the first prompt at once.
        let w = Weights::from_tensors(&t);
        for wrong in [
            Wrong::ExactGelu,
            Wrong::KitEpsilon,
            Wrong::SquareUntransposed,
            Wrong::Reshaped,
            Wrong::NoBias,
            Wrong::NotScaled,
            Wrong::KeysFirst,
            Wrong::HeadByHead,
            Wrong::NoFinalNorm,
            Wrong::NoPositions,
            Wrong::ExactGeluAndKitEpsilon,
        ] {
            let got = WrongGpt2::new(wrong).run(&PROMPT, &[15]).unwrap();
            say(
                &format!("model / {wrong:?}"),
                gpt2::logits(&got, &w, &cfg, &PROMPT),
            );
        }
        // Cached steps of 6, 3, 1 and 5 tokens.
        let steps = [6, 3, 1, 5];
        for wrong in [Wrong::PositionsFromZero, Wrong::NoCache] {
            let got = WrongGpt2::new(wrong).run(&PROMPT, &steps).unwrap();
            say(
                &format!("steps / {wrong:?}"),
                gpt2::steps(&got, &w, &cfg, &PROMPT, &steps),
            );
        }
        insta::with_settings!({
            description => "The diagnosis of each wrong Task 9 piece above, written by hand with \
                candle's ops on the fixture's tiny GPT-2 (width 32, 4 heads, 2 blocks, 357 \
                tokens): a Conv1D (c_attn 32 → 96, attn.c_proj 32 → 32), the feed-forward \
                layer, loaders that fail, the whole model on the prompt \"The keeper's lamp \
                wasn't lit\", and its cached steps of 6, 3, 1 and 5 tokens. Each must say what \
                the piece does.",
            omit_expression => true,
        }, {
            insta::assert_snapshot!(shown);
        });
    }
}
