//! Layer normalisation over the last dimension, fused, and its composed twin.

use super::row_norm::RowNorm;
use super::slices::{dot, sum};
use candle_core::{Result, Tensor};

/// Layer normalisation over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
///
/// # Shapes
/// x: (..., C), weight and bias: (C) → (..., C)
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    LAYER_NORM.apply(x, weight, bias, eps as f32)
}

/// [`layer_norm`] from candle's elementary ops.
pub mod composed {
    use candle_core::{D, Result, Tensor};

    pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(weight)?.broadcast_add(bias)
    }
}

/// The fused op: one pass over the rows forward and one backward, each row's sums in eight
/// running sums ([`dot`], [`sum`]).
const LAYER_NORM: RowNorm = RowNorm {
    name: "kit-layer-norm",
    forward: forward_row,
    backward: backward_row,
};

/// Writes `x - mean(x)` into `centred` and returns the mean and 1/std of `x`.
fn centre(x: &[f32], centred: &mut [f32], eps: f32) -> (f32, f32) {
    let mean = sum(x) / x.len() as f32;
    for (c, v) in centred.iter_mut().zip(x) {
        *c = v - mean;
    }
    let var = dot(centred, centred) / x.len() as f32;
    (mean, 1.0 / (var + eps).sqrt())
}

fn forward_row(x: &[f32], g: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let (_, rstd) = centre(x, y, eps);
    for ((y, g), b) in y.iter_mut().zip(g).zip(b) {
        *y = *y * rstd * g + b;
    }
}

/// With x̂ = (x − μ)·r and ĝ = dy ⊙ γ, the gradient reaching x̂:
/// dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)), dγ += dy ⊙ x̂, dβ += dy. `dx` holds dy ⊙ x̂ until
/// the last loop overwrites it.
fn backward_row(
    x: &[f32],
    g: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
    dg: &mut [f32],
    db: &mut [f32],
) {
    let c = x.len() as f32;
    let (mean, rstd) = centre(x, dx, eps);
    for (((d, dy), dg), db) in dx.iter_mut().zip(dy).zip(dg).zip(db) {
        *d = *d * rstd * dy;
        *dg += *d;
        *db += dy;
    }
    let mean_g = dot(dy, g) / c;
    let mean_gx = dot(dx, g) / c;
    for (((d, x), dy), g) in dx.iter_mut().zip(x).zip(dy).zip(g) {
        let x_hat = (x - mean) * rstd;
        *d = rstd * (dy * g - mean_g - x_hat * mean_gx);
    }
}
