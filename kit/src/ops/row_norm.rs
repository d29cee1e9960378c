//! A custom op over the rows of a tensor, given the forward and backward pass of one row: the
//! plumbing between candle and two row functions. kit's [`layer_norm`](super::layer_norm) is
//! built on it, and so is Task 5's LayerNorm, whose row functions the learner writes.
//!
//! candle hands a custom op each input as storage and a layout (see [`super::slices`]);
//! [`RowNorm`] hands its row functions plain slices, one row of the last dimension at a time,
//! with the scale γ and the shift β of one value per feature.
//!
//! Like every op of kit, the forward op is a kernel: a name, and a forward and a backward pass
//! over its inputs in an array, which kit/src/ops/kernel.rs makes into candle's `CustomOp3`
//! (its `cpu_fwd` calls the kernel's `forward`, its `bwd` the kernel's `backward`). The
//! backward op is a function of its inputs, `RowNormOp::gradients`.
//!
//! How a gradient gets through: [`RowNorm::apply`] applies the forward op with `apply_op3`, so
//! its output records a graph node, and `backward()` calls the op's `bwd` with ∂loss/∂y. Had
//! the op kept `CustomOp3`'s default `bwd`, `backward()` would fail with
//! `BackwardNotSupported`: "backward is not supported for" the op's name. Its `bwd` computes
//! ∂loss/∂x, ∂loss/∂γ and ∂loss/∂β with a second op, applied with `apply_op3_no_bwd`, which
//! records nothing: a gradient that had to pass through that op would stop there, without an
//! error. None has to, since nothing differentiates a gradient; candle-nn applies its fused
//! LayerNorm, `candle_nn::ops::layer_norm`, that second way, and there the gradient stops.
//!
//! Rows go to kit's thread pool in blocks of [`BLOCK_ROWS`]; an input of one block stays on the
//! calling thread. The blocks do not depend on the number of threads, so neither do the sums.

use super::kernel::{Input, Kernel, Op, pass};
use super::pool::pool;
use super::slices::{f32s, unpack};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The forward pass of one row: `forward(x, gamma, beta, eps, y)` writes the row's output into
/// `y`. Every slice has one value per feature.
pub type ForwardRow = fn(&[f32], &[f32], &[f32], f32, &mut [f32]);

/// The backward pass of one row: `backward(x, gamma, dy, eps, dx, dgamma, dbeta)`, with `dy`
/// the row's ∂loss/∂y, writes its ∂loss/∂x into `dx` and adds its part of ∂loss/∂γ and
/// ∂loss/∂β into `dgamma` and `dbeta`. Every slice has one value per feature.
pub type BackwardRow = fn(&[f32], &[f32], &[f32], f32, &mut [f32], &mut [f32], &mut [f32]);

/// Rows per block. A block adds its rows' parts of ∂loss/∂γ and ∂loss/∂β, in order, into a
/// pair of its own that starts at zero, and the blocks' pairs are then added up in order.
pub const BLOCK_ROWS: usize = 64;

/// An op over the last dimension, with a scale and a shift of one value per feature, made of
/// the forward and backward pass of one row.
#[derive(Debug, Clone, Copy)]
pub struct RowNorm {
    /// The op's name, in candle's errors and in this op's own.
    pub name: &'static str,
    /// One row forward.
    pub forward: ForwardRow,
    /// One row backward.
    pub backward: BackwardRow,
}

impl RowNorm {
    /// `forward` on every row of `x`, as one node of the graph whose backward pass runs
    /// `backward` on every row.
    ///
    /// # Shapes
    /// x: (..., C), gamma and beta: (C) → (..., C)
    pub fn apply(self, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        let op = RowNormOp { rows: self, eps };
        x.contiguous()?
            .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, Op(op))
    }

    /// The features per row, checked against the values per feature of each of `params` (the
    /// scale, and the shift where there is one).
    fn features(&self, x: &Layout, params: &[&[f32]]) -> Result<usize> {
        let c = x.dims().last().copied().unwrap_or(0);
        if c == 0 || params.iter().any(|p| p.len() != c) {
            let lengths: Vec<usize> = params.iter().map(|p| p.len()).collect();
            candle_core::bail!(
                "{}: the input has {c} features per row, the scale and shift {lengths:?} values",
                self.name
            )
        }
        Ok(c)
    }
}

/// The forward op: `y` from `x`, γ and β.
struct RowNormOp {
    rows: RowNorm,
    eps: f32,
}

impl Kernel<3> for RowNormOp {
    fn name(&self) -> &'static str {
        self.rows.name
    }

    fn forward(&self, [(s1, l1), (s2, l2), (s3, l3)]: [Input; 3]) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "the input")?;
        let gamma = f32s(s2, l2, "the scale")?;
        let beta = f32s(s3, l3, "the shift")?;
        let c = self.rows.features(l1, &[gamma, beta])?;
        let mut y = vec![0f32; x.len()];
        let forward = |(xb, yb): (&[f32], &mut [f32])| {
            for (xr, yr) in xb.chunks_exact(c).zip(yb.chunks_exact_mut(c)) {
                (self.rows.forward)(xr, gamma, beta, self.eps, yr);
            }
        };
        let block = BLOCK_ROWS * c;
        if x.len() <= block {
            forward((x, &mut y));
        } else {
            pool().install(|| {
                x.par_chunks(block)
                    .zip(y.par_chunks_mut(block))
                    .for_each(forward)
            });
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// candle calls this with `grad`, ∂loss/∂y; it returns ∂loss/∂x, ∂loss/∂γ and ∂loss/∂β,
    /// computed by [`RowNormOp::gradients`] as one flat tensor and cut apart by [`unpack`].
    fn backward(
        &self,
        [x, gamma, beta]: [&Tensor; 3],
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        let backward = pass("kit-row-norm-backward", |inputs| self.gradients(inputs));
        let packed = x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &backward)?;
        let [dx, dgamma, dbeta] = unpack(&packed, [x.shape(), gamma.shape(), beta.shape()])?;
        Ok([Some(dx), Some(dgamma), Some(dbeta)])
    }
}

impl RowNormOp {
    /// The backward op: `[dx, dγ, dβ]` from x, γ and dy, packed into one flat tensor, since a
    /// custom op returns one.
    fn gradients(&self, [(s1, l1), (s2, l2), (s3, l3)]: [Input; 3]) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "the input")?;
        let gamma = f32s(s2, l2, "the scale")?;
        let dy = f32s(s3, l3, "the gradient")?;
        let c = self.rows.features(l1, &[gamma])?;
        let n = x.len();
        let mut out = vec![0f32; n + 2 * c];
        let (dx, dparams) = out.split_at_mut(n);
        // One block's dx, and its rows' parts of dγ and dβ added into a pair of its own.
        let backward = |((xb, dyb), dxb): ((&[f32], &[f32]), &mut [f32])| {
            let mut part = vec![0f32; 2 * c];
            let (dgamma, dbeta) = part.split_at_mut(c);
            for ((xr, dyr), dxr) in xb
                .chunks_exact(c)
                .zip(dyb.chunks_exact(c))
                .zip(dxb.chunks_exact_mut(c))
            {
                (self.rows.backward)(xr, gamma, dyr, self.eps, dxr, dgamma, dbeta);
            }
            part
        };
        let block = BLOCK_ROWS * c;
        let parts: Vec<Vec<f32>> = if n <= block {
            vec![backward(((x, dy), dx))]
        } else {
            pool().install(|| {
                x.par_chunks(block)
                    .zip(dy.par_chunks(block))
                    .zip(dx.par_chunks_mut(block))
                    .map(backward)
                    .collect()
            })
        };
        for part in parts {
            for (d, p) in dparams.iter_mut().zip(&part) {
                *d += p;
            }
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
