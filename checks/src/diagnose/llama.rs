//! Task 7: what a wrong RMSNorm, RoPE, SwiGLU or MiniLlama computes instead.
//!
//! Each part is recomputed in f64 every way a catalogue of learners' mistakes allows, alone and
//! in combination, and the simplest way that reproduces the learner's output is named. RoPE's
//! catalogue holds the other convention: the workbook, as HF Llama and candle's `rope`, turns
//! the pairs (i, i + h/2), the two halves of a vector; RoFormer, Meta's Llama code and CS336
//! turn adjacent pairs (2i, 2i + 1). MiniLlama's own verdict is given once its parts are right:
//! how it numbers positions and which keys its queries see.

use crate::support::max_abs_diff;
use kit::{GptConfig, SeededVarMap};
use reference::llama::{BASE, EPS, llama_f64_at};

/// How close the learner's output must be to a recomputation to match it.
const MATCH: f64 = 1e-4;

/// A wrong way of normalising a row, where RMSNorm's is x / √(mean(x²) + ε) · γ.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Norm {
    /// (x − mean) / √(var + ε) · γ: LayerNorm without its shift.
    Standardised,
    /// (x − mean) / √(mean(x²) + ε) · γ: the mean subtracted, the root of the mean square kept.
    MeanSubtracted,
    /// x / (mean(x²) + ε) · γ.
    NoRoot,
    /// x / √(Σx² + ε) · γ.
    SumOfSquares,
    /// x / √(mean(x²) + ε), without γ.
    NoScale,
    /// x / √(mean over the whole input of x² + ε) · γ.
    WholeInput,
}

fn norm_f64(way: Norm, x: &[f64], c: usize, g: &[f64]) -> Vec<f64> {
    let mean_sq_all = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    x.chunks(c)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / c as f64;
            let ms = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
            row.iter()
                .zip(g)
                .map(|(&v, &g)| match way {
                    Norm::Standardised => g * (v - mean) / (var + EPS).sqrt(),
                    Norm::MeanSubtracted => g * (v - mean) / (ms + EPS).sqrt(),
                    Norm::NoRoot => g * v / (ms + EPS),
                    Norm::SumOfSquares => g * v / (ms * c as f64 + EPS).sqrt(),
                    Norm::NoScale => v / (ms + EPS).sqrt(),
                    Norm::WholeInput => g * v / (mean_sq_all + EPS).sqrt(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Why `got`, the learner's RMSNorm of rows of `c` values of `x` with the scale `g`, is not
/// right: what it matches, or what to compute.
pub fn rms_norm(got: &[f64], x: &[f64], c: usize, g: &[f64]) -> String {
    let ways = [
        (
            Norm::MeanSubtracted,
            "each row with its mean subtracted: RMSNorm subtracts no mean, it divides x itself by \
             √(mean(x²) + ε)",
        ),
        (
            Norm::Standardised,
            "LayerNorm (the mean subtracted, divided by the standard deviation): RMSNorm \
             subtracts no mean, it divides x by the root of its mean square, √(mean(x²) + ε)",
        ),
        (
            Norm::NoRoot,
            "x divided by the mean square, without its square root: divide by √(mean(x²) + ε)",
        ),
        (
            Norm::SumOfSquares,
            "x divided by the root of the sum of squares: take the mean of x² over the C values, \
             not the sum",
        ),
        (
            Norm::NoScale,
            "the normalised rows without the scale: multiply by γ, the layer's weight",
        ),
        (
            Norm::WholeInput,
            "one mean square over the whole input: take it over each row, the last dimension",
        ),
    ];
    match ways
        .iter()
        .find(|(way, _)| max_abs_diff(got, &norm_f64(*way, x, c, g)) < MATCH)
    {
        Some((_, says)) => format!("it matches {says}"),
        None => "divide each row by √(mean of its squares + ε), then multiply by the scale".into(),
    }
}

/// How a vector's dimensions are paired for the rotation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pairs {
    /// (i, i + h/2): the workbook's, HF Llama's and candle's.
    Halves,
    /// (2i, 2i + 1): RoFormer's, Meta's Llama code's and CS336's.
    Adjacent,
}

/// How fast pair i turns.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    /// base^(−2i/h): right.
    TwoIOverH,
    /// base^(−i/h).
    IOverH,
    /// base^(−2/h) for every pair.
    Same,
}

/// One way of rotating.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Turn {
    pairs: Pairs,
    rate: Rate,
    /// The sine with the other sign: a turn the other way.
    flipped: bool,
    /// Positions from 0 instead of `start`.
    from_zero: bool,
}

const RIGHT_TURN: Turn = Turn {
    pairs: Pairs::Halves,
    rate: Rate::TwoIOverH,
    flipped: false,
    from_zero: false,
};

/// Rows of `h` values of `x`, `t` positions a sequence from `start`, rotated `way`.
fn rope_way(way: Turn, x: &[f64], h: usize, t: usize, start: usize) -> Vec<f64> {
    let half = h / 2;
    let mut y = vec![0.0; x.len()];
    for (r, (row, out)) in x.chunks(h).zip(y.chunks_mut(h)).enumerate() {
        let p = r % t + if way.from_zero { 0 } else { start };
        for i in 0..half {
            let exponent = match way.rate {
                Rate::TwoIOverH => -2.0 * i as f64 / h as f64,
                Rate::IOverH => -(i as f64) / h as f64,
                Rate::Same => -2.0 / h as f64,
            };
            let angle = p as f64 * BASE.powf(exponent);
            let (cos, sin) = (angle.cos(), angle.sin());
            let sin = if way.flipped { -sin } else { sin };
            let (a, b) = match way.pairs {
                Pairs::Halves => (i, i + half),
                Pairs::Adjacent => (2 * i, 2 * i + 1),
            };
            out[a] = row[a] * cos - row[b] * sin;
            out[b] = row[a] * sin + row[b] * cos;
        }
    }
    y
}

/// Why `got`, the learner's rotation of `x` (rows of `h` values, `t` positions a sequence, from
/// position `start`), is not RoPE's: the way it matches, or what to compute.
pub fn rope(got: &[f64], x: &[f64], h: usize, t: usize, start: usize) -> String {
    let mut ways = Vec::new();
    for pairs in [Pairs::Halves, Pairs::Adjacent] {
        for rate in [Rate::TwoIOverH, Rate::IOverH, Rate::Same] {
            for flipped in [false, true] {
                for from_zero in [false, true] {
                    let way = Turn {
                        pairs,
                        rate,
                        flipped,
                        from_zero,
                    };
                    let count = usize::from(pairs != RIGHT_TURN.pairs)
                        + usize::from(rate != RIGHT_TURN.rate)
                        + usize::from(flipped)
                        + usize::from(from_zero);
                    ways.push((count, way));
                }
            }
        }
    }
    ways.sort_by_key(|(count, _)| *count);
    let found = ways.iter().skip(1).find(|(_, way)| {
        max_abs_diff(got, &rope_way(*way, x, h, t, start)) < MATCH && (!way.from_zero || start > 0)
    });
    match found {
        Some((_, way)) => format!("it matches {}", turn_says(*way, h).join("; and ")),
        None if max_abs_diff(got, x) < 1e-6 && start > 0 => {
            "the vectors come back unrotated: turn each pair (i, i + h/2) by p·10000^(−2i/h) at \
             position p"
                .into()
        }
        None => "pair (i, i + h/2) turns by p·θᵢ at position p, θᵢ = 10000^(−2i/h): out[i] = \
             x[i]·cos − x[i + h/2]·sin, out[i + h/2] = x[i]·sin + x[i + h/2]·cos"
            .into(),
    }
}

fn turn_says(way: Turn, h: usize) -> Vec<String> {
    let mut says = Vec::new();
    if way.pairs == Pairs::Adjacent {
        says.push(
            "the other convention of RoPE, adjacent pairs (2i, 2i + 1), as RoFormer, Meta's Llama \
             code and CS336 rotate them. This workbook, as HF Llama and candle's `rope`, pairs \
             dimension i with i + h/2, the two halves of the vector. Both have every property \
             RoPE needs, but weights trained with one are wrong for the other: turn x[i] with \
             x[i + h/2]"
                .to_string(),
        );
    }
    match way.rate {
        Rate::TwoIOverH => {}
        Rate::IOverH => says.push(format!(
            "θᵢ = 10000^(−i/h): i counts pairs, so the exponent is −2i/h (0, −2/{h}, −4/{h}, …)"
        )),
        Rate::Same => says.push(
            "every pair turning at the same rate: pair i turns by θᵢ = 10000^(−2i/h), fast for \
             the first pairs, slow for the last"
                .to_string(),
        ),
    }
    if way.flipped {
        says.push(
            "a turn the other way, the sine's sign flipped: RoPE turns by +p·θᵢ, out[i] = \
             x[i]·cos − x[i + h/2]·sin and out[i + h/2] = x[i]·sin + x[i + h/2]·cos"
                .to_string(),
        );
    }
    if way.from_zero {
        says.push(
            "rotations from position 0: the positions of the T rows are start..start + T"
                .to_string(),
        );
    }
    says
}

/// The activation on the gate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Silu,
    Relu,
    /// GELU, tanh's approximation (candle's `gelu`).
    GeluTanh,
    /// GELU, exact (candle's `gelu_erf`).
    GeluErf,
    Sigmoid,
    None,
}

fn act(a: Act, z: f64) -> f64 {
    let sigmoid = 1.0 / (1.0 + (-z).exp());
    match a {
        Act::Silu => z * sigmoid,
        Act::Relu => z.max(0.0),
        Act::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * z * (1.0 + (k * (z + 0.044715 * z * z * z)).tanh())
        }
        Act::GeluErf => 0.5 * z * (1.0 + erf(z / std::f64::consts::SQRT_2)),
        Act::Sigmoid => sigmoid,
        Act::None => z,
    }
}

/// erf to about 1e-7 (Abramowitz and Stegun 7.1.26): enough to tell exact GELU from tanh's.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

/// Why `got`, the learner's SwiGLU of `rows` rows of `x`, is not right: the activation and the
/// roles it matches, or what to compute. Weights in candle's layout: `gate` and `up` (f, C),
/// `down` (C, f).
pub fn swiglu(
    got: &[f64],
    x: &[f64],
    rows: usize,
    (gate, up, down): (&[f64], &[f64], &[f64]),
    f: usize,
) -> String {
    let c = down.len() / f;
    let g = reference::dense_f64(x, rows, gate, None, f);
    let u = reference::dense_f64(x, rows, up, None, f);
    let way = |a: Act, swapped: bool| -> Vec<f64> {
        let (gate, other) = if swapped { (&u, &g) } else { (&g, &u) };
        let mixed: Vec<f64> = gate
            .iter()
            .zip(other)
            .map(|(z, o)| act(a, *z) * o)
            .collect();
        reference::dense_f64(&mixed, rows, down, None, c)
    };
    let act_says = |a: Act| match a {
        Act::Silu => None,
        Act::Relu => Some("ReLU where SiLU belongs"),
        Act::GeluTanh => Some("GELU (tanh's approximation, candle's `gelu`) where SiLU belongs"),
        Act::GeluErf => Some("GELU (candle's `gelu_erf`) where SiLU belongs"),
        Act::Sigmoid => Some("sigmoid(gate) where SiLU belongs, gate · sigmoid(gate)"),
        Act::None => Some("no activation on the gate"),
    };
    let acts = [
        Act::Silu,
        Act::Relu,
        Act::GeluTanh,
        Act::GeluErf,
        Act::Sigmoid,
        Act::None,
    ];
    // One mistake first, then two.
    let mut ways: Vec<(Act, bool)> = Vec::new();
    ways.push((Act::Silu, true));
    ways.extend(acts[1..].iter().map(|&a| (a, false)));
    ways.extend(acts[1..].iter().map(|&a| (a, true)));
    let found = ways
        .iter()
        .find(|(a, swapped)| max_abs_diff(got, &way(*a, *swapped)) < MATCH);
    match found {
        Some(&(a, swapped)) => {
            let mut says: Vec<String> = act_says(a)
                .map(|s| format!("{s}: silu(z) = z · sigmoid(z)"))
                .into_iter()
                .collect();
            if swapped {
                says.push(
                    "gate and up swapped, silu(up_proj(x)) ⊙ gate_proj(x): the gate is \
                     gate_proj's output, and it is the one that goes through silu"
                        .into(),
                );
            }
            format!("it matches {}", says.join("; and "))
        }
        None => "down_proj(silu(gate_proj(x)) ⊙ up_proj(x)): the gate goes through silu, up does \
                 not"
        .into(),
    }
}

/// How a cached MiniLlama numbers positions and keeps keys.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Steps {
    /// Positions from the tokens seen, keys the window keeps: right.
    Right,
    /// Every step's positions from 0: the count of tokens seen never moves.
    FromZero,
    /// Every step's positions from the keys kept, `cache.positions()`, which stops at the
    /// window, instead of the tokens seen.
    FromKept,
}

/// For tokens run in steps of `steps`: the position of each, numbered `way`.
fn positions(way: Steps, steps: &[usize], window: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut seen = 0;
    for &len in steps {
        let start = match way {
            Steps::Right => seen,
            Steps::FromZero => 0,
            Steps::FromKept => seen.min(window),
        };
        out.extend(start..start + len);
        seen += len;
    }
    out
}

/// The first key each token's query sees when the cache keeps `window` positions, trimmed
/// after each step's keys are appended.
fn first_keys(steps: &[usize], window: Option<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut seen = 0;
    for &len in steps {
        let end = seen + len;
        let first = window.map_or(0, |w| end.saturating_sub(w));
        out.extend(std::iter::repeat_n(first, len));
        seen = end;
    }
    out
}

/// The checks' MiniLlama in f64 on `tokens` run in steps of `steps`, its cache keeping
/// `window` positions: what a right cached MiniLlama gives.
pub fn llama_in_steps(
    params: &SeededVarMap,
    cfg: &GptConfig,
    tokens: &[u32],
    steps: &[usize],
) -> Vec<f64> {
    llama_way(params, cfg, tokens, steps, Steps::Right)
}

fn llama_way(
    params: &SeededVarMap,
    cfg: &GptConfig,
    tokens: &[u32],
    steps: &[usize],
    way: Steps,
) -> Vec<f64> {
    let window = cfg.block_size;
    let at = positions(way, steps, window);
    let first = first_keys(steps, Some(window));
    llama_f64_at(
        params,
        cfg,
        tokens,
        &at,
        &|i| first[i],
        &mut |_, _, _, _| {},
    )
}

/// Why a cached MiniLlama whose steps of `steps` tokens gave `got` differs from the checks' own
/// in f64, once its parts are known to be right: how it numbers positions instead.
pub fn llama_steps(
    got: &[f64],
    params: &SeededVarMap,
    cfg: &GptConfig,
    tokens: &[u32],
    steps: &[usize],
) -> String {
    let right = llama_way(params, cfg, tokens, steps, Steps::Right);
    let v = cfg.vocab_size;
    if got.len() == right.len()
        && max_abs_diff(&got[..steps[0] * v], &right[..steps[0] * v]) >= MATCH
    {
        return "the logits of the first step, on an empty cache, differ already, though each \
                part is right on its own: look at how forward_step puts them together, \
                embed_tokens, then each block x + self_attn(input_layernorm(x)) and x + \
                mlp(post_attention_layernorm(x)), then norm and lm_head"
            .into();
    }
    let close = |way: Steps| {
        let want = llama_way(params, cfg, tokens, steps, way);
        got.len() == want.len() && max_abs_diff(got, &want) < MATCH
    };
    if close(Steps::FromZero) {
        "it matches every step rotated from position 0: the count of tokens seen never moves; \
         add each step's T to cache.seen after running it, and start the next step there"
            .into()
    } else if close(Steps::FromKept) {
        format!(
            "it matches positions counted from cache.positions(), the keys kept, which stops at \
             block_size {}: once the cache slides, new tokens are at cache.seen(), the count of \
             every token run",
            cfg.block_size
        )
    } else {
        "the first step matches and later ones do not, though the parts are right on their own: \
         each step's positions start at cache.seen(), each block's attention runs on its own \
         layer of the cache, and seen grows by T after the step"
            .into()
    }
}
