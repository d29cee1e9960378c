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
    // TODO: μ, σ² (over C, not C − 1) and r = 1/√(σ² + ε) of this row; then
    // y[i] = γ[i]·(x[i] − μ)·r + β[i] for every i.
    todo!("forward_row: y = gamma * (x - mean) / sqrt(var + eps) + beta, for one row")
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
    // TODO: recompute x̂ for the row; add dy[i]·x̂[i] into dgamma[i] and dy[i] into dbeta[i];
    // write ∂loss/∂x[j] into dx[j], the sum over i of dy[i]·∂y[i]/∂x[j], which you derive.
    todo!("backward_row: dx for the row, and its part of dgamma and dbeta added in")
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
