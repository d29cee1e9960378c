//! Task 7's parts and its MiniLlama in f64: RMSNorm, rotary position embeddings, SwiGLU, and
//! the whole forward pass with Llama's parameter names, with an optional sliding window.

use crate::{WeightsSink, dense_f64, param};
use kit::{GptConfig, SeededVarMap};

/// RMSNorm's epsilon.
pub const EPS: f64 = 1e-6;
/// RoPE's base.
pub const BASE: f64 = 10_000.0;

/// Rows of `c` values of `x`, each divided by √(mean(x²) + ε) and scaled by `g`.
pub fn rms_norm_f64(x: &[f64], c: usize, g: &[f64]) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let rms = (row.iter().map(|v| v * v).sum::<f64>() / c as f64 + EPS).sqrt();
        y.extend(row.iter().zip(g).map(|(v, g)| g * v / rms));
    }
    y
}

/// The vectors of `x`, rows of `h` values at positions `start, start + 1, …`, rotated: pair
/// (i, i + h/2) turned by p·base^(−2i/h) at position p.
pub fn rope_f64(x: &[f64], h: usize, start: usize) -> Vec<f64> {
    let half = h / 2;
    let mut y = vec![0.0; x.len()];
    for (p, (row, out)) in x.chunks(h).zip(y.chunks_mut(h)).enumerate() {
        for i in 0..half {
            let angle = (start + p) as f64 * BASE.powf(-2.0 * i as f64 / h as f64);
            let (cos, sin) = (angle.cos(), angle.sin());
            out[i] = row[i] * cos - row[i + half] * sin;
            out[i + half] = row[i] * sin + row[i + half] * cos;
        }
    }
    y
}

/// `down(silu(gate x) ⊙ up x)` for `rows` rows of `x`; the weights in candle's (out, in)
/// layout, `gate` and `up` (f, C), `down` (C, f).
pub fn swiglu_f64(
    x: &[f64],
    rows: usize,
    gate: &[f64],
    up: &[f64],
    down: &[f64],
    f: usize,
) -> Vec<f64> {
    let c = down.len() / f;
    let g = dense_f64(x, rows, gate, None, f);
    let u = dense_f64(x, rows, up, None, f);
    let mixed: Vec<f64> = g
        .iter()
        .zip(&u)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    dense_f64(&mixed, rows, down, None, c)
}

/// MiniLlama's logits in f64 for one sequence `ids` at positions 0.., from its named
/// parameters; every query attends to the keys at or before it, and with `window` to the last
/// `window` of them only. `on_weights(layer, head, 0, weights)` sees every head's (T, T) weights.
pub fn llama_f64(
    params: &SeededVarMap,
    cfg: &GptConfig,
    ids: &[u32],
    window: Option<usize>,
    on_weights: &mut WeightsSink,
) -> Vec<f64> {
    let positions: Vec<usize> = (0..ids.len()).collect();
    let first_key = |i: usize| window.map_or(0, |w| (i + 1).saturating_sub(w));
    llama_f64_at(params, cfg, ids, &positions, &first_key, on_weights)
}

/// MiniLlama's logits in f64 for one sequence `ids`, with the query and the key of token `i`
/// rotated at `positions[i]`, and its query attending to keys `first_key(i)..=i`: what a cached
/// MiniLlama computes when it numbers its positions, or keeps its keys, some other way.
pub fn llama_f64_at(
    params: &SeededVarMap,
    cfg: &GptConfig,
    ids: &[u32],
    positions: &[usize],
    first_key: &dyn Fn(usize) -> usize,
    on_weights: &mut WeightsSink,
) -> Vec<f64> {
    let (t, c) = (ids.len(), cfg.hidden);
    let (n, d) = (cfg.num_heads, cfg.head_dim());
    let p = |name: &str| param(params, name);
    let embed = p("embed_tokens.weight");
    let mut x: Vec<f64> = ids
        .iter()
        .flat_map(|&tok| embed[tok as usize * c..(tok as usize + 1) * c].to_vec())
        .collect();
    let f = (8 * c + 5) / 3;
    for l in 0..cfg.num_layers {
        let w = |name: &str| p(&format!("layers.{l}.{name}"));
        let h = rms_norm_f64(&x, c, &w("input_layernorm.weight"));
        let project =
            |name: &str| dense_f64(&h, t, &w(&format!("self_attn.{name}.weight")), None, n * d);
        let (q, k, v) = (project("q_proj"), project("k_proj"), project("v_proj"));
        let mut merged = vec![0.0; t * n * d];
        for head in 0..n {
            // This head's rows (T, d) of a (T, n·d) projection, rotated where asked.
            let of = |m: &[f64], rotate: bool| -> Vec<f64> {
                let rows: Vec<f64> = (0..t)
                    .flat_map(|i| m[i * n * d + head * d..i * n * d + (head + 1) * d].to_vec())
                    .collect();
                if rotate {
                    rows.chunks(d)
                        .zip(positions)
                        .flat_map(|(row, &p)| rope_f64(row, d, p))
                        .collect()
                } else {
                    rows
                }
            };
            let (qh, kh, vh) = (of(&q, true), of(&k, true), of(&v, false));
            let mut weights = vec![0.0; t * t];
            for i in 0..t {
                let first = first_key(i);
                let scores: Vec<f64> = (first..=i)
                    .map(|j| {
                        let dot: f64 = (0..d).map(|e| qh[i * d + e] * kh[j * d + e]).sum();
                        dot / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (j, s) in (first..=i).zip(&scores) {
                    weights[i * t + j] = (s - max).exp() / total;
                }
            }
            on_weights(l, head, 0, &weights);
            for i in 0..t {
                for e in 0..d {
                    merged[i * n * d + head * d + e] =
                        (0..t).map(|j| weights[i * t + j] * vh[j * d + e]).sum();
                }
            }
        }
        let attn = dense_f64(&merged, t, &w("self_attn.o_proj.weight"), None, c);
        x = x.iter().zip(&attn).map(|(a, b)| a + b).collect();
        let h = rms_norm_f64(&x, c, &w("post_attention_layernorm.weight"));
        let mlp = swiglu_f64(
            &h,
            t,
            &w("mlp.gate_proj.weight"),
            &w("mlp.up_proj.weight"),
            &w("mlp.down_proj.weight"),
            f,
        );
        x = x.iter().zip(&mlp).map(|(a, b)| a + b).collect();
    }
    let h = rms_norm_f64(&x, c, &p("norm.weight"));
    dense_f64(&h, t, &p("lm_head.weight"), None, cfg.vocab_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_the_norm_and_position_zero_is_the_identity() {
        let x = [0.3, -1.2, 2.0, 0.5, 0.7, 0.1];
        assert_eq!(rope_f64(&x, 6, 0), x.to_vec());
        let turned = rope_f64(&x, 6, 5);
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
        assert!((norm(&turned) - norm(&x)).abs() < 1e-12);
    }
}
