//! The f64 building blocks: plain loops over row-major slices, weights in candle's layout,
//! (out, in): a dense layer, causal attention, LayerNorm, and reading a model's parameters.

use candle_core::{DType, Tensor};
use kit::SeededVarMap;

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
pub(crate) fn mix_values(w: &[f64], v: &[f64], t: usize, d: usize, out: &mut [f64]) {
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
    crate::norm::layer_norm_way_f64(x, c, g, b, crate::norm::Forward::Right)
}

/// `a + b`, element by element.
pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}
