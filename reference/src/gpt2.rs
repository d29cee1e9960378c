//! GPT-2's forward pass in f64, from the weights of a Hugging Face file as the file stores them
//! (`Conv1D` weights (in, out), so `y = x W + b`), written from OpenAI's `model.py`: pre-norm
//! blocks, LayerNorm with ε 1e-5, one projection `c_attn` for the queries, keys and values,
//! GELU's tanh approximation, the output layer tied to the token embedding.
//!
//! [`Way`] changes one thing at a time, as a wrong loader or a wrong block would: the
//! diagnosis recomputes the logits each way and names the one the learner's match.

use crate::maths::add;
use candle_core::Tensor;
use kit::gpt2::Gpt2Config;
use std::collections::HashMap;

/// A GPT-2 file's weights as f64, row-major, named without the `transformer.` prefix.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: HashMap<String, Vec<f64>>,
}

impl Weights {
    /// The tensors of a file (`candle_core::safetensors::load`, or the checks' own random
    /// ones), with or without the prefix; the attention's mask buffers are left out.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> Self {
        let tensors = tensors
            .iter()
            .filter(|(name, _)| {
                !name.ends_with(".attn.bias") && !name.ends_with(".attn.masked_bias")
            })
            .map(|(name, t)| {
                let name = name.strip_prefix("transformer.").unwrap_or(name);
                (name.to_string(), crate::values(t))
            })
            .collect();
        Self { tensors }
    }

    /// The values of `name` (without the prefix).
    pub fn get(&self, name: &str) -> &[f64] {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("the weights have no {name}"))
    }

    /// Whether they hold `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// The activation of the feed-forward layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: GPT-2's ("gelu_new").
    Tanh,
    /// `x·Φ(x)`, with the error function.
    Exact,
    /// `max(x, 0)`: MiniGPT's.
    Relu,
}

/// How a `Conv1D` weight, stored (in, out), is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv1d {
    /// `x W`: right.
    AsStored,
    /// `x Wᵀ` for the square weight (`attn.c_proj`), the others right: what loading every
    /// weight as stored into a layer that computes `x Wᵀ` runs, the others failing on their
    /// shapes.
    SquareTransposed,
    /// The stored (in, out) values read as (out, in) in place, reshaped rather than
    /// transposed, then used as `x Wᵀ`.
    Reshaped,
}

/// Where the queries, keys and values are in `c_attn`'s 3C columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Thirds in this order of queries (0), keys (1) and values (2): `[0, 1, 2]` is right.
    Thirds([usize; 3]),
    /// Head by head: head i's query, key and value side by side in columns `3h·i..3h·(i+1)`.
    PerHead,
}

/// One way of computing GPT-2: [`Way::RIGHT`], or one thing changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Way {
    pub gelu: Gelu,
    /// LayerNorm's ε.
    pub eps: f64,
    pub conv1d: Conv1d,
    /// Whether the `Conv1D`s add their biases.
    pub biases: bool,
    /// The scores are multiplied by `1/√scale_dim`; `None` leaves them unscaled.
    pub scale: Option<Scale>,
    pub split: Split,
    /// Whether `ln_f` runs before the output layer.
    pub ln_f: bool,
    /// Whether the position embeddings are added.
    pub positions: bool,
    /// Whether the output layer is `wte`; else `lm_head.weight` of the file.
    pub tied: bool,
}

/// What the scores are divided by the root of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The head's width h: right.
    HeadDim,
    /// The model's width C.
    Width,
}

impl Way {
    pub const RIGHT: Way = Way {
        gelu: Gelu::Tanh,
        eps: 1e-5,
        conv1d: Conv1d::AsStored,
        biases: true,
        scale: Some(Scale::HeadDim),
        split: Split::Thirds([0, 1, 2]),
        ln_f: true,
        positions: true,
        tied: true,
    };
}

/// GPT-2's logits (T, V) for one sequence `ids` at positions 0.., every query seeing the keys up
/// to itself.
pub fn gpt2_f64(w: &Weights, cfg: &Gpt2Config, ids: &[u32], way: &Way) -> Vec<f64> {
    let positions: Vec<usize> = (0..ids.len()).collect();
    gpt2_f64_at(w, cfg, ids, way, &positions, &|_| 0)
}

/// GPT-2's logits (T, V) for `ids`, token `i` at position `positions[i]` and its query seeing
/// keys `first_key(i)..=i`: what a cached GPT-2 computes when it numbers its positions, or
/// keeps its keys, some other way.
pub fn gpt2_f64_at(
    w: &Weights,
    cfg: &Gpt2Config,
    ids: &[u32],
    way: &Way,
    positions: &[usize],
    first_key: &dyn Fn(usize) -> usize,
) -> Vec<f64> {
    let (t, c, n) = (ids.len(), cfg.n_embd, cfg.n_head);
    let wte = w.get("wte.weight");
    let wpe = w.get("wpe.weight");
    let mut x: Vec<f64> = Vec::with_capacity(t * c);
    for (&id, &p) in ids.iter().zip(positions) {
        for e in 0..c {
            let pos = if way.positions { wpe[p * c + e] } else { 0.0 };
            x.push(wte[id as usize * c + e] + pos);
        }
    }
    let norm = |x: &[f64], name: &str| {
        layer_norm(
            x,
            c,
            w.get(&format!("{name}.weight")),
            w.get(&format!("{name}.bias")),
            way.eps,
        )
    };
    let get = |name: &str| w.get(name);
    let bias = |name: &str| way.biases.then(|| w.get(name));
    for l in 0..cfg.n_layer {
        let at = |name: &str| format!("h.{l}.{name}");
        let attn = attention_f64(
            &norm(&x, &at("ln_1")),
            (n, c),
            (
                get(&at("attn.c_attn.weight")),
                bias(&at("attn.c_attn.bias")),
            ),
            (
                get(&at("attn.c_proj.weight")),
                bias(&at("attn.c_proj.bias")),
            ),
            way,
            first_key,
        );
        x = add(&x, &attn);
        let mlp = mlp_f64(
            &norm(&x, &at("ln_2")),
            c,
            (get(&at("mlp.c_fc.weight")), bias(&at("mlp.c_fc.bias"))),
            (get(&at("mlp.c_proj.weight")), bias(&at("mlp.c_proj.bias"))),
            way,
        );
        x = add(&x, &mlp);
    }
    let x = if way.ln_f { norm(&x, "ln_f") } else { x };
    let head = if way.tied {
        wte
    } else {
        w.get("lm_head.weight")
    };
    // The output layer: (V, C), as a dense layer's weight, x Wᵀ.
    let v = cfg.vocab_size;
    let mut logits = vec![0.0; t * v];
    for i in 0..t {
        for o in 0..v {
            logits[i * v + o] = (0..c).map(|e| x[i * c + e] * head[o * c + e]).sum();
        }
    }
    logits
}

/// A `Conv1D` weight (in, out) and its bias, if it is added.
pub type Conv1dWeights<'a> = (&'a [f64], Option<&'a [f64]>);

/// GPT-2's attention of the rows of `x` (already normalised, C wide), `(n, C)` its heads and
/// width: `c_attn`, split as `way` says into n heads of C/n, each query `i` seeing keys
/// `first_key(i)..=i`, then `c_proj`.
pub fn attention_f64(
    x: &[f64],
    (n, c): (usize, usize),
    c_attn: Conv1dWeights,
    c_proj: Conv1dWeights,
    way: &Way,
    first_key: &dyn Fn(usize) -> usize,
) -> Vec<f64> {
    let (t, h) = (x.len() / c, c / n);
    let qkv = conv1d_f64(x, c_attn.0, c_attn.1, c, 3 * c, way.conv1d); // (T, 3C)
    // Column of the query (0), key (1) or value (2) element e of head `head`.
    let column = |part: usize, head: usize, e: usize| match way.split {
        Split::Thirds(order) => order[part] * c + head * h + e,
        Split::PerHead => head * 3 * h + part * h + e,
    };
    let scale = match way.scale {
        Some(Scale::HeadDim) => 1.0 / (h as f64).sqrt(),
        Some(Scale::Width) => 1.0 / (c as f64).sqrt(),
        None => 1.0,
    };
    let mut merged = vec![0.0; t * c];
    for head in 0..n {
        for i in 0..t {
            let keys = first_key(i)..=i;
            let scores: Vec<f64> = keys
                .clone()
                .map(|j| {
                    (0..h)
                        .map(|e| {
                            qkv[i * 3 * c + column(0, head, e)]
                                * qkv[j * 3 * c + column(1, head, e)]
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            for e in 0..h {
                merged[i * c + head * h + e] = keys
                    .clone()
                    .zip(&scores)
                    .map(|(j, s)| (s - max).exp() / total * qkv[j * 3 * c + column(2, head, e)])
                    .sum();
            }
        }
    }
    conv1d_f64(&merged, c_proj.0, c_proj.1, c, c, way.conv1d)
}

/// GPT-2's feed-forward layer on rows of `x`, C wide: `c_fc`, the activation `way` says,
/// `c_proj`.
pub fn mlp_f64(
    x: &[f64],
    c: usize,
    c_fc: Conv1dWeights,
    c_proj: Conv1dWeights,
    way: &Way,
) -> Vec<f64> {
    let hidden: Vec<f64> = conv1d_f64(x, c_fc.0, c_fc.1, c, 4 * c, way.conv1d)
        .into_iter()
        .map(|z| activation(way.gelu, z))
        .collect();
    conv1d_f64(&hidden, c_proj.0, c_proj.1, 4 * c, c, way.conv1d)
}

/// `x W + b` for rows of `x` (n_in wide), `W` stored (in, out), used as `way` says.
pub fn conv1d_f64(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    n_in: usize,
    n_out: usize,
    way: Conv1d,
) -> Vec<f64> {
    // The weight of input i for output o.
    let weight = |i: usize, o: usize| match way {
        Conv1d::AsStored => w[i * n_out + o],
        Conv1d::SquareTransposed if n_in == n_out => w[o * n_in + i],
        Conv1d::SquareTransposed => w[i * n_out + o],
        Conv1d::Reshaped => w[o * n_in + i],
    };
    x.chunks(n_in)
        .flat_map(|row| {
            (0..n_out)
                .map(|o| {
                    b.map_or(0.0, |b| b[o]) + (0..n_in).map(|i| row[i] * weight(i, o)).sum::<f64>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The activation `gelu` of `z`.
pub fn activation(gelu: Gelu, z: f64) -> f64 {
    match gelu {
        Gelu::Tanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * z * (1.0 + (k * (z + 0.044715 * z * z * z)).tanh())
        }
        Gelu::Exact => 0.5 * z * (1.0 + erf(z / std::f64::consts::SQRT_2)),
        Gelu::Relu => z.max(0.0),
    }
}

/// The error function, to about 1e-15: its Taylor series near 0, its continued fraction far
/// from it.
fn erf(x: f64) -> f64 {
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 {
        // erf(x) = 2/√π Σ (−1)ⁿ x^(2n+1) / (n! (2n+1))
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(x) = e^(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …))))
        let mut f = x;
        for k in (1..60).rev() {
            f = x + f64::from(k) / 2.0 / f;
        }
        1.0 - (-x * x).exp() / std::f64::consts::PI.sqrt() / f
    }
}

/// The probability of each id that sampling draws from `logits`: softmax(logits / temperature)
/// over the ids ranked below `top_k`, then, of those, the ids whose more likely ones hold less
/// than `top_p` of the mass, made to add up to 1 again. An id's rank is how many ids have a
/// larger logit, or an equal one and a lower id. A temperature of 0 puts everything on rank 0.
pub fn distribution_f64(
    logits: &[f32],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
) -> Vec<f64> {
    let rank: Vec<usize> = (0..logits.len())
        .map(|i| {
            (0..logits.len())
                .filter(|&j| logits[j] > logits[i] || (logits[j] == logits[i] && j < i))
                .count()
        })
        .collect();
    if temperature == 0.0 {
        return rank.iter().map(|&r| f64::from(u8::from(r == 0))).collect();
    }
    let k = top_k.unwrap_or(logits.len()).max(1);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weight: Vec<f64> = (0..logits.len())
        .map(|i| {
            if rank[i] < k {
                ((logits[i] as f64 - max) / temperature).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = weight.iter().sum();
    let q: Vec<f64> = weight.iter().map(|w| w / total).collect();
    let p = top_p.unwrap_or(1.0);
    let kept: Vec<f64> = (0..logits.len())
        .map(|i| {
            let above: f64 = (0..logits.len())
                .filter(|&j| rank[j] < rank[i])
                .map(|j| q[j])
                .sum();
            if q[i] > 0.0 && (above < p || rank[i] == 0) {
                q[i]
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = kept.iter().sum();
    kept.iter().map(|w| w / total).collect()
}

/// LayerNorm of rows of `c` values with ε `eps`, scaled by `g` and shifted by `b`.
pub fn layer_norm(x: &[f64], c: usize, g: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    crate::norm::layer_norm_eps_way_f64(x, c, g, b, eps, crate::norm::Forward::Right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_the_two_gelus_at_known_points() {
        // erf(0.5) = 0.5204998778130465, erf(2) = 0.9953222650189527, erf(3.5) = 0.9999992569016276
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_6),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        }
        // torch.nn.functional.gelu(torch.tensor(1.0, dtype=float64)) = 0.8413447460685429,
        // approximate="tanh": 0.8411919906082768
        assert!((activation(Gelu::Exact, 1.0) - 0.841_344_746_068_542_9).abs() < 1e-14);
        assert!((activation(Gelu::Tanh, 1.0) - 0.841_191_990_608_276_8).abs() < 1e-14);
    }

    /// The checks' f64 GPT-2 against the logits `transformers` computed for the fixture's
    /// prompts (data/fixtures/task9_gpt2.json): the diagnosis recomputes its mistakes from it.
    #[test]
    fn the_f64_gpt2_computes_what_transformers_computes_on_the_fixture() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures");
        let cfg = Gpt2Config::read(&dir.join("task9-gpt2")).unwrap();
        let file = dir.join("task9-gpt2/model.safetensors");
        let tensors = candle_core::safetensors::load(file, &candle_core::Device::Cpu).unwrap();
        let w = Weights::from_tensors(&tensors);
        let text = std::fs::read_to_string(dir.join("task9_gpt2.json")).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (prompt, logits) in fixture["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(fixture["logits"].as_array().unwrap())
        {
            let ids: Vec<u32> = prompt["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let want: Vec<f64> = logits["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let got = gpt2_f64(&w, &cfg, &ids, &Way::RIGHT);
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(got.len() == want.len() && diff < 2e-5, "{diff:e}");
        }
    }

    #[test]
    fn a_conv1d_is_x_times_the_stored_weight() {
        // x = [1, 2], W (2, 3) = [[1, 0, 2], [0, 1, 3]], b = [0.5, 0, 0]: x W + b = [1.5, 2, 8]
        let y = conv1d_f64(
            &[1.0, 2.0],
            &[1.0, 0.0, 2.0, 0.0, 1.0, 3.0],
            Some(&[0.5, 0.0, 0.0]),
            2,
            3,
            Conv1d::AsStored,
        );
        assert_eq!(y, vec![1.5, 2.0, 8.0]);
    }
}
