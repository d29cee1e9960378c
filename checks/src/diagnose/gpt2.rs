//! Task 9: what a wrong `Conv1D`, feed-forward layer, attention, loader or step of GPT-2
//! computes instead.
//!
//! A loader that fails says so in candle's words: a tensor the file does not have, a shape the
//! file does not store. Those errors are read back here into what the loader did ("the output
//! layer not tied"). A loader that loads computes something, and the logits are recomputed in
//! f64 every way a catalogue of mistakes allows (`reference::gpt2::Way`), alone and in pairs,
//! to name the simplest one that reproduces the learner's: the `Conv1D` weight used as it is
//! stored, GELU without the tanh approximation, kit's ε of 1e-6, the scores not scaled, the
//! queries, keys and values taken from the wrong columns…

use crate::support::max_abs_diff;
use kit::gpt2::Gpt2Config;
use reference::gpt2::{
    Conv1d, Conv1dWeights, Gelu, Scale, Split, Way, Weights, attention_f64, conv1d_f64, gpt2_f64,
    gpt2_f64_at, mlp_f64,
};

/// How close the learner's output must be to a recomputation to match it: the fixture's f32
/// logits reach about 10, so f32 rounding stays far below this, and every mistake of the
/// catalogue moves some logit by more than 4e-3.
const MATCH: f64 = 1e-3;

/// A wrong way of computing GPT-2, with what the diagnosis says of it.
struct Mistake {
    way: fn(Way) -> Way,
    says: &'static str,
}

/// The catalogue: each a single change to [`Way::RIGHT`].
const MISTAKES: &[Mistake] = &[
    Mistake {
        way: |w| Way {
            conv1d: Conv1d::SquareTransposed,
            ..w
        },
        says: "attn.c_proj's weight used untransposed: a Conv1D stores its weight (in, out) and \
               computes x W + b, the transpose of Dense's (out, in); the square one loads either \
               way, and only the numbers tell. Transpose every Conv1D weight when you load it",
    },
    Mistake {
        way: |w| Way {
            conv1d: Conv1d::Reshaped,
            ..w
        },
        says: "every Conv1D weight reshaped from (in, out) to (out, in) rather than transposed: \
               a reshape keeps the order of the values, so the rows are not the columns; use \
               .t() (then .contiguous())",
    },
    Mistake {
        way: |w| Way {
            gelu: Gelu::Exact,
            ..w
        },
        says: "GELU without the tanh approximation: x·Φ(x) with the error function \
               (candle's gelu_erf), where GPT-2's weights were trained with \
               0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), candle's gelu",
    },
    Mistake {
        way: |w| Way {
            gelu: Gelu::Relu,
            ..w
        },
        says: "ReLU in the feed-forward layer, MiniGPT's: GPT-2's is GELU's tanh approximation, \
               candle's gelu",
    },
    Mistake {
        way: |w| Way { eps: 1e-6, ..w },
        says: "LayerNorm with ε = 1e-6, kit's LayerNorm::new: GPT-2's is 1e-5, the config's \
               layer_norm_epsilon (LayerNorm::with_eps)",
    },
    Mistake {
        way: |w| Way { eps: 1e-12, ..w },
        says: "LayerNorm with ε = 1e-12: GPT-2's is 1e-5, the config's layer_norm_epsilon",
    },
    Mistake {
        way: |w| Way { biases: false, ..w },
        says: "every Conv1D without its bias: each projection of GPT-2, c_attn, c_proj and c_fc, \
               adds one",
    },
    Mistake {
        way: |w| Way { scale: None, ..w },
        says: "the attention scores not scaled: divide them by √h, the head's width",
    },
    Mistake {
        way: |w| Way {
            scale: Some(Scale::Width),
            ..w
        },
        says: "the attention scores divided by √C, the model's width: divide them by √h, the \
               head's width, C / n_head",
    },
    Mistake {
        way: |w| Way {
            split: Split::Thirds([1, 0, 2]),
            ..w
        },
        says: "the queries taken from c_attn's second third and the keys from its first: the \
               order is queries, keys, values",
    },
    Mistake {
        way: |w| Way {
            split: Split::Thirds([0, 2, 1]),
            ..w
        },
        says: "the keys taken from c_attn's last third and the values from its second: the \
               order is queries, keys, values",
    },
    Mistake {
        way: |w| Way {
            split: Split::PerHead,
            ..w
        },
        says: "c_attn's columns split head by head, each head's query, key and value side by \
               side: GPT-2 splits them into three thirds first (queries, keys, values), then \
               each third into heads",
    },
    Mistake {
        way: |w| Way { ln_f: false, ..w },
        says: "no final LayerNorm: ln_f runs before the output layer",
    },
    Mistake {
        way: |w| Way {
            positions: false,
            ..w
        },
        says: "no position embeddings: wpe's rows of the positions are added to the tokens'",
    },
];

/// Why `got`, the learner's logits for `ids` from the weights `w`, are not GPT-2's: the
/// mistake of the catalogue, or the two, that reproduce them; else what to compare.
pub fn logits(got: &[f64], w: &Weights, cfg: &Gpt2Config, ids: &[u32]) -> String {
    let matches = |way: &Way| max_abs_diff(got, &gpt2_f64(w, cfg, ids, way)) < MATCH;
    if let Some(m) = MISTAKES.iter().find(|m| matches(&(m.way)(Way::RIGHT))) {
        return format!("it matches {}", m.says);
    }
    for (i, a) in MISTAKES.iter().enumerate() {
        for b in &MISTAKES[i + 1..] {
            if matches(&(b.way)((a.way)(Way::RIGHT))) {
                return format!(
                    "it matches two mistakes at once: {}; and {}",
                    a.says, b.says
                );
            }
        }
    }
    "no single mistake of the checks' list explains it: compare each part with the checks' own \
     (the Conv1D, the feed-forward layer, the attention pass alone first), then the blocks: \
     x + attn(ln_1(x)), then x + mlp(ln_2(x)), ln_f and the output layer, wte's table"
        .into()
}

/// What a loader did, read from the error `e` it failed with on a file of `layout` (said in
/// words: "transformers' layout, under transformer. without lm_head.weight").
pub fn load_error(e: &str, layout: &str, cfg: &Gpt2Config) -> String {
    let c = cfg.n_embd;
    let missing = e
        .split("cannot find tensor ")
        .nth(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or(""));
    match missing {
        Some("lm_head.weight") => format!(
            "the output layer not tied: the file ({layout}) has no lm_head.weight, and GPT-2 \
             needs none: its output layer is wte's table, (V, C), used as a Dense weight. Read \
             lm_head.weight only where the file has it (vb.contains_tensor)"
        ),
        Some(name) if name.ends_with("lm_head.weight") => format!(
            "lm_head.weight looked for as {name}: where a file has it, it is at the root, never \
             under transformer. ({layout})"
        ),
        Some(name) if name.starts_with("transformer.") => format!(
            "every name looked for under transformer. ({name}), in a file without the prefix \
             ({layout}): take the prefix only where the file has transformer.wte.weight"
        ),
        Some(name) => format!(
            "{name} looked for without the prefix in a file that has it ({layout}): its names \
             start with transformer., so build the body's parts from vb.pp(\"transformer\") \
             where the file has transformer.wte.weight"
        ),
        None if e.contains("shape mismatch") => format!(
            "a Conv1D weight asked for in Dense's shape, (out, in): the file stores it (in, out) \
             (c_attn's is ({c}, {}), not ({}, {c})): read it as stored, then transpose it \
             (candle's error: {})",
            3 * c,
            3 * c,
            first_line(e)
        ),
        None if e.contains("dense layer expects inputs") => format!(
            "a Conv1D weight used untransposed, (in, out) as the file stores it, in a Dense that \
             takes (out, in): c_attn's weight is ({c}, {}) in the file; transpose each Conv1D \
             weight when you load it (candle's error: {})",
            3 * c,
            first_line(e)
        ),
        None => format!("it failed: {}", first_line(e)),
    }
}

/// Why `got`, the learner's `conv1d(n_in, n_out)` of the rows `x` with the stored weight `w`
/// (in, out) and bias `b`, is not `x W + b`; `got` is `Err` with the error if it failed.
pub fn conv1d(
    got: &Result<Vec<f64>, String>,
    x: &[f64],
    (w, b): (&[f64], &[f64]),
    n_in: usize,
    n_out: usize,
) -> String {
    let got = match got {
        Err(e) if e.contains("shape mismatch") => {
            return format!(
                "the weight asked for as ({n_out}, {n_in}), Dense's (out, in): a Conv1D stores it \
                 (in, out) = ({n_in}, {n_out}); read it so, then transpose it (candle's error: \
                 {})",
                first_line(e)
            );
        }
        Err(e) if e.contains("dense layer expects inputs") => {
            return format!(
                "the weight used as stored, (in, out) = ({n_in}, {n_out}), in a Dense that \
                 takes (out, in): transpose it (candle's error: {})",
                first_line(e)
            );
        }
        Err(e) => return format!("it failed: {}", first_line(e)),
        Ok(got) => got,
    };
    let ways = [
        (
            Some(b),
            Conv1d::SquareTransposed,
            "x Wᵀ + b, the weight used as stored in a Dense, which transposes it: a Conv1D \
             stores (in, out) and computes x W + b; transpose the weight when you load it",
        ),
        (
            Some(b),
            Conv1d::Reshaped,
            "the weight reshaped from (in, out) to (out, in) rather than transposed: a reshape \
             keeps the order of the values; use .t()",
        ),
        (
            None,
            Conv1d::AsStored,
            "x W without the bias: a Conv1D adds its bias, (out)",
        ),
    ];
    ways.iter()
        .find(|(bias, way, _)| {
            max_abs_diff(got, &conv1d_f64(x, w, *bias, n_in, n_out, *way)) < MATCH
        })
        .map_or_else(
            || "compute x W + b with W the weight as stored, (in, out): a Dense of Wᵀ".into(),
            |(_, _, says)| format!("it matches {says}"),
        )
}

/// Why `got`, the learner's feed-forward layer of the rows `x` (C wide), is not GPT-2's.
pub fn mlp(got: &[f64], x: &[f64], c: usize, fc: Conv1dWeights, proj: Conv1dWeights) -> String {
    let ways = [
        (
            Gelu::Exact,
            "GELU without the tanh approximation, candle's gelu_erf: GPT-2's is the tanh one, \
             candle's gelu",
        ),
        (
            Gelu::Relu,
            "ReLU, MiniGPT's activation: GPT-2's is GELU's tanh approximation, candle's gelu",
        ),
    ];
    let right = mlp_f64(x, c, fc, proj, &Way::RIGHT);
    if let Some((_, says)) = ways.iter().find(|(gelu, _)| {
        let way = Way {
            gelu: *gelu,
            ..Way::RIGHT
        };
        max_abs_diff(got, &mlp_f64(x, c, fc, proj, &way)) < MATCH
    }) {
        return format!("it matches {says}");
    }
    let no_activation: Vec<f64> = {
        let hidden = conv1d_f64(x, fc.0, fc.1, c, 4 * c, Conv1d::AsStored);
        conv1d_f64(&hidden, proj.0, proj.1, 4 * c, c, Conv1d::AsStored)
    };
    if max_abs_diff(got, &no_activation) < MATCH {
        return "it matches c_proj(c_fc(x)) with no activation between them: GELU's tanh \
                approximation goes there"
            .into();
    }
    format!(
        "c_proj(gelu(c_fc(x))) differs from yours by {:.2e}: c_fc, candle's gelu, then c_proj",
        max_abs_diff(got, &right)
    )
}

/// Why `got`, the learner's attention of the rows `x` of one sequence (C wide, n heads), every
/// query seeing the keys up to itself, is not GPT-2's.
pub fn attention(
    got: &[f64],
    x: &[f64],
    (n, c): (usize, usize),
    c_attn: Conv1dWeights,
    c_proj: Conv1dWeights,
) -> String {
    let causal = |_: usize| 0;
    let matches = |way: &Way| {
        max_abs_diff(got, &attention_f64(x, (n, c), c_attn, c_proj, way, &causal)) < MATCH
    };
    let attention_mistakes = MISTAKES.iter().filter(|m| {
        let way = (m.way)(Way::RIGHT);
        way.scale != Way::RIGHT.scale || way.split != Way::RIGHT.split
    });
    for m in attention_mistakes {
        if matches(&(m.way)(Way::RIGHT)) {
            return format!("it matches {}", m.says);
        }
    }
    let t = x.len() / c;
    let right = attention_f64(x, (n, c), c_attn, c_proj, &Way::RIGHT, &causal);
    format!(
        "GPT-2's attention of {t} positions differs from yours by {:.2e}: c_attn's three thirds \
         (queries, keys, values), each cut into heads of C / n_head; each query against the keys \
         up to its own position, scaled by 1/√h, normalised; the heads merged; c_proj",
        max_abs_diff(got, &right)
    )
}

/// The first key each query sees.
type FirstKey<'a> = dyn Fn(usize) -> usize + 'a;

/// Why a GPT-2 whose steps of `steps` tokens gave `got` for `ids` differs from the whole
/// forward pass, once its parts are right: how it numbers positions or keeps keys instead.
pub fn steps(got: &[f64], w: &Weights, cfg: &Gpt2Config, ids: &[u32], steps: &[usize]) -> String {
    let starts: Vec<usize> = steps
        .iter()
        .scan(0, |at, &len| {
            let start = *at;
            *at += len;
            Some(std::iter::repeat_n(start, len))
        })
        .flatten()
        .collect();
    let from_zero: Vec<usize> = (0..ids.len()).map(|i| i - starts[i]).collect();
    let in_order: Vec<usize> = (0..ids.len()).collect();
    let ways: [(&[usize], &FirstKey, &str); 3] = [
        (
            &from_zero,
            &|_| 0,
            "each step's positions numbered from 0: the new tokens are at positions S..S + T, \
             S the positions already cached, and their position embeddings are those rows of \
             wpe",
        ),
        (
            &in_order,
            &|i| starts[i],
            "each step seeing only its own tokens: the keys and values of the earlier steps \
             not kept, or not used (the cache's append returns them all)",
        ),
        (
            &from_zero,
            &|i| starts[i],
            "each step run alone, as if nothing came before it: its positions from 0, and no \
             cached keys",
        ),
    ];
    for (positions, first_key, says) in ways {
        let want = gpt2_f64_at(w, cfg, ids, &Way::RIGHT, positions, first_key);
        if max_abs_diff(got, &want) < MATCH {
            return format!("it matches {says}");
        }
    }
    "the steps differ from the whole forward pass in a way the checks do not know: the new \
     tokens are at positions S..S + T, and their queries see every cached key and the new ones \
     up to themselves"
        .into()
}

/// softmax(logits · scale), in f64.
fn softmax(logits: &[f32], scale: f64) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| ((f64::from(l) - f64::from(max)) * scale).exp())
        .collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|x| x / total).collect()
}

/// Why `got`, the learner's distribution of `logits` at temperature `t` without top-k or top-p,
/// is not softmax(logits / t).
pub fn distribution(got: &[f64], logits: &[f32], t: f64) -> String {
    if got.len() != logits.len() {
        return format!(
            "it has {} probabilities for {} logits: one per id",
            got.len(),
            logits.len()
        );
    }
    let total: f64 = got.iter().sum();
    let ways = [
        (
            softmax(logits, t),
            "softmax(logits · T): the logits are divided by the temperature, so that a              temperature below 1 sharpens the distribution",
        ),
        (
            softmax(logits, 1.0),
            "softmax(logits): the temperature left out; divide the logits by it first",
        ),
    ];
    if let Some((_, says)) = ways.iter().find(|(w, _)| max_abs_diff(got, w) < 1e-9) {
        return format!("it matches {says}");
    }
    if (total - 1.0).abs() > 1e-6 {
        return format!(
            "its probabilities add up to {total:.6}, not 1: divide each exp((logit − max) / T) by              their sum"
        );
    }
    "compute exp((logit − max) / T) for each id and divide by their sum".into()
}

/// Why `got`, the learner's top-p distribution, is not `want`, the checks', with `full` the
/// distribution before top-p and `p` its threshold.
pub fn top_p(got: &[f64], want: &[f64], full: &[f64], p: f64) -> String {
    let kept = |d: &[f64]| d.iter().filter(|&&q| q > 0.0).count();
    let (mine, theirs) = (kept(got), kept(want));
    let mass: f64 = want
        .iter()
        .zip(full)
        .filter(|(w, _)| **w > 0.0)
        .map(|(_, f)| f)
        .sum();
    if mine == theirs + 1 {
        return format!(
            "it keeps {mine} tokens where the fewest most likely ones whose mass reaches p = {p:.3}              are {theirs} (their mass {mass:.3}): stop at the first whose running sum is at              least p"
        );
    }
    if mine + 1 == theirs {
        return format!(
            "it keeps {mine} tokens, one fewer than the {theirs} whose mass first reaches p =              {p:.3} ({mass:.3}): keep the token that takes the running sum to p or past it"
        );
    }
    if mine == theirs && max_abs_diff(got, &full_kept(full, want)) < 1e-9 {
        return "it keeps the right tokens with their probabilities before top-p: divide them by                 their sum, so that they add up to 1"
            .into();
    }
    format!(
        "it keeps {mine} tokens where the checks keep {theirs}: rank the tokens by probability          (the lower id first among equals) and keep the fewest first ones whose probabilities          add up to at least p"
    )
}

/// `full`'s probabilities where `want` keeps a token, 0 elsewhere.
fn full_kept(full: &[f64], want: &[f64]) -> Vec<f64> {
    full.iter()
        .zip(want)
        .map(|(&f, &w)| if w > 0.0 { f } else { 0.0 })
        .collect()
}

/// What distribution `counts`, a sampler's draws from `logits` at temperature `t`, follow
/// instead of softmax(logits / t), when they follow one of a few others.
pub fn draws(counts: &[usize], logits: &[f32], t: f64) -> String {
    let n: usize = counts.iter().sum();
    let chi2 = |p: &[f64]| -> f64 {
        counts
            .iter()
            .zip(p)
            .map(|(&c, &q)| {
                let e = n as f64 * q;
                if e == 0.0 {
                    if c == 0 { 0.0 } else { f64::INFINITY }
                } else {
                    (c as f64 - e).powi(2) / e
                }
            })
            .sum()
    };
    let uniform = vec![1.0 / counts.len() as f64; counts.len()];
    let ways = [
        (
            softmax(logits, t),
            "they follow softmax(logits · T): divide the logits by the temperature",
        ),
        (
            softmax(logits, 1.0),
            "they follow softmax(logits): the temperature left out",
        ),
        (
            uniform,
            "they are about as frequent as each other: draw by the probabilities, the first id              whose running sum exceeds u",
        ),
    ];
    ways.iter()
        .find(|(p, _)| chi2(p) < 20.52)
        .map_or_else(
            || {
                "look at how a draw turns u into an id: the first id, in id order, at which the                  probabilities added up so far exceed u"
                    .into()
            },
            |(_, says)| capitalised(says),
        )
}

/// `text` with a capital first letter and a full stop.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        format!("{}{}.", first.to_uppercase(), chars.as_str())
    })
}

/// The first line of an error's text.
fn first_line(e: &str) -> &str {
    e.lines().next().unwrap_or("")
}
