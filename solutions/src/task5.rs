//! # Task 5: a backward pass by hand
//!
//! candle differentiates the tensor ops you have used so far. A *custom op* computes its forward
//! pass however it likes, on plain slices of numbers, and has to say itself how to differentiate
//! it: candle calls its `bwd` with ∂loss/∂output and expects ∂loss/∂input back. How the op is
//! applied decides what a missing `bwd` does. `LayerNorm::new` below turns your two row
//! functions into one custom op with kit's `RowNorm`, which is given: read
//! kit/src/ops/row_norm.rs. `RowNorm::apply` there applies the op with `apply_op3`: had the op
//! kept `CustomOp3`'s default `bwd`, `backward()` would fail with `BackwardNotSupported`,
//! "backward is not supported for task5-layer-norm". Its `bwd` applies the backward op with
//! `apply_op3_no_bwd`, which records nothing: a gradient would stop there, without an error.
//! candle-nn applies its fused LayerNorm (`candle_nn::ops::layer_norm`) that second way. Here
//! you write LayerNorm's maths both ways, one row at a time; the op around it is given.
//!
//! **Forward**, for each row `x` of C values, with the scale γ and the shift β (C each):
//!
//! ```text
//! μ = (1/C) Σᵢ xᵢ             σ² = (1/C) Σᵢ (xᵢ − μ)²      r = 1 / √(σ² + ε)
//! x̂ᵢ = (xᵢ − μ) · r           yᵢ = γᵢ x̂ᵢ + βᵢ              ε = 1e-6
//! ```
//!
//! **Backward**: given `dy`, ∂loss/∂y for the row, the row's gradients
//!
//! - `dx`, ∂loss/∂x: every x̂ᵢ depends on every xⱼ of its row, through μ and r. Work it out on
//!   paper before you code it: write ∂yᵢ/∂xⱼ, then `dxⱼ = Σᵢ dyᵢ ∂yᵢ/∂xⱼ`;
//! - `dgamma`, ∂loss/∂γ, and `dbeta`, ∂loss/∂β: every row used the same γ and β, so each row
//!   *adds* its part into them.
//!
//! Two identities hold for every row of a right `dx`, and make good tests of your own:
//! Σⱼ dxⱼ = 0 exactly (shifting a row by a constant changes nothing after normalising), and
//! Σⱼ dxⱼ x̂ⱼ = 0 (neither does scaling it), exactly only at ε = 0 and closely when ε is
//! negligible against σ².
//!
//! A third test needs nothing but your `forward_row`: finite differences. For a row x and any
//! dy, the number L = Σᵢ dyᵢ yᵢ has ∂L/∂xⱼ = dxⱼ. Move one xⱼ by +h and by −h (h = 1e-2 suits
//! f32 and a row spread over about 1), run `forward_row` on both, and (L₊ − L₋) / 2h should
//! match your dxⱼ to about three digits; moving one γᵢ instead checks dγᵢ.
//!
//! Check your work with `cargo xtask check task5`: against finite differences, against
//! candle's autograd through the composed LayerNorm, against JAX's, and in MiniGPT.
//!
//! **Think about it.** Once it is green, this task's section of docs/guide.md ends with a
//! question to think about: the workbook keeps its questions there.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use kit::ops::row_norm::RowNorm;

/// LayerNorm's forward pass for one row: `y = γ ⊙ (x − μ)/√(σ² + ε) + β`.
pub fn forward_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let c = x.len() as f32;
    let mean = x.iter().sum::<f32>() / c;
    // The biased variance, over C: the mean of the squared deviations.
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / c;
    let r = 1.0 / (var + eps).sqrt();
    for (((y, x), g), b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
        *y = g * (x - mean) * r + b;
    }
}

/// LayerNorm's backward pass for one row: writes ∂loss/∂x into `dx`, and adds the row's part
/// of ∂loss/∂γ and ∂loss/∂β into `dgamma` and `dbeta`.
pub fn backward_row(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let c = x.len() as f32;
    let mean = x.iter().sum::<f32>() / c;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / c;
    let r = 1.0 / (var + eps).sqrt();
    let x_hat: Vec<f32> = x.iter().map(|v| (v - mean) * r).collect();
    // y = γ x̂ + β: the gradient reaching x̂ is dy ⊙ γ, and γ and β see dy ⊙ x̂ and dy.
    let g_hat: Vec<f32> = dy.iter().zip(gamma).map(|(d, g)| d * g).collect();
    for (i, d) in dy.iter().enumerate() {
        dgamma[i] += d * x_hat[i];
        dbeta[i] += d;
    }
    // x̂ = (x − μ)·r: moving one xⱼ moves μ (for every i) and r (through σ²), hence the two
    // means subtracted from ĝ.
    let mean_g = g_hat.iter().sum::<f32>() / c;
    let mean_gx = g_hat.iter().zip(&x_hat).map(|(g, h)| g * h).sum::<f32>() / c;
    for ((dx, g), h) in dx.iter_mut().zip(&g_hat).zip(&x_hat) {
        *dx = r * (g - mean_g - h * mean_gx);
    }
}

/// Layer normalisation over the last dimension, with your forward and backward passes: kit's
/// `LayerNorm`, its op made of your two row functions.
#[derive(Debug, Clone)]
pub struct LayerNorm(kit::nn::LayerNorm);

impl LayerNorm {
    /// Flax's default epsilon, as kit's LayerNorm.
    pub const EPS: f32 = kit::nn::LayerNorm::EPS as f32;

    /// Scale `weight` (ones) and shift `bias` (zeros) of size `dim`, named as kit's.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let op = RowNorm {
            name: "task5-layer-norm",
            forward: forward_row,
            backward: backward_row,
        };
        kit::nn::LayerNorm::with_rows(op, dim, vb).map(Self)
    }
}

impl Module for LayerNorm {
    /// # Shapes
    /// (..., C) → (..., C)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.0.forward(xs)
    }
}
