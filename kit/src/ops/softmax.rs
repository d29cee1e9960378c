//! The causal softmax of attention scores, fused, and its composed twin.

use super::kernel::{Input, Kernel, Op, pass};
use super::pool::{pool, row_block, threads};
use super::slices::{f32s, last_two};
use candle_core::{CpuStorage, Result, Shape, Tensor};
use rayon::prelude::*;

/// Softmax over the last dimension of `scores * scale`, where query row `i` of a (T, S) score
/// matrix sees key columns `0..=i + S - T` only; the others get probability exactly 0.
///
/// # Shapes
/// (..., T, S) → (..., T, S), with S ≥ T
pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    causal_dims(scores)?;
    scores.contiguous()?.apply_op1(Op(CausalSoftmaxOp {
        scale: scale as f32,
    }))
}

/// T and S of (..., T, S) scores, which need at least as many keys as queries.
fn causal_dims(scores: &Tensor) -> Result<(usize, usize)> {
    let (t, s) = last_two(scores)?;
    if s < t {
        candle_core::bail!(
            "causal_softmax needs at least as many keys as queries, got T={t}, S={s}"
        )
    }
    Ok((t, s))
}

/// [`causal_softmax`] from candle's elementary ops.
pub mod composed {
    use super::causal_dims;
    use candle_core::{D, Result, Tensor};

    pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
        let (t, s) = causal_dims(scores)?;
        let visible: Vec<u8> = (0..t)
            .flat_map(|i| (0..s).map(move |j| u8::from(j <= i + s - t)))
            .collect();
        let visible =
            Tensor::from_vec(visible, (t, s), scores.device())?.broadcast_as(scores.shape())?;
        let hidden = Tensor::full(f32::NEG_INFINITY, scores.shape(), scores.device())?;
        let masked = visible.where_cond(&(scores * scale)?, &hidden)?;
        candle_nn::ops::softmax(&masked, D::Minus1)
    }
}

struct CausalSoftmaxOp {
    scale: f32,
}

impl Kernel<1> for CausalSoftmaxOp {
    fn name(&self) -> &'static str {
        "kit-causal-softmax"
    }

    fn forward(&self, [(storage, layout)]: [Input; 1]) -> Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, "causal_softmax input")?;
        let dims = layout.dims();
        let (t, s) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let mut y = vec![0f32; x.len()];
        // Whole (T, S) matrices per task, spread over the threads.
        let per_task = (t * s) * (x.len() / (t * s)).div_ceil(threads()).max(1);
        pool().install(|| {
            y.par_chunks_mut(per_task)
                .zip(x.par_chunks(per_task))
                .for_each(|(yb, xb)| self.rows(xb, yb, t, s))
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn backward(
        &self,
        _scores: [&Tensor; 1],
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 1]> {
        let backward = pass("kit-causal-softmax-backward", |inputs| {
            softmax_backward(inputs, self.scale)
        });
        let dx = res.apply_op2_no_bwd(&grad.contiguous()?, &backward)?;
        Ok([Some(dx)])
    }
}

impl CausalSoftmaxOp {
    /// Softmax of whole (t, s) score matrices, row by row.
    fn rows(&self, x: &[f32], y: &mut [f32], t: usize, s: usize) {
        for (r, (xr, yr)) in x.chunks_exact(s).zip(y.chunks_exact_mut(s)).enumerate() {
            let visible = (r % t) + s - t + 1;
            let max = xr[..visible]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v * self.scale));
            let mut sum = 0f32;
            for j in 0..visible {
                let e = (xr[j] * self.scale - max).exp();
                yr[j] = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            for v in &mut yr[..visible] {
                *v *= inv;
            }
        }
    }
}

/// `dx = scale · y ⊙ (dy − Σⱼ dyⱼ yⱼ)` from y and dy, row by row; masked entries have y = 0 and
/// get dx = 0.
fn softmax_backward([(s1, l1), (s2, l2)]: [Input; 2], scale: f32) -> Result<(CpuStorage, Shape)> {
    let y = f32s(s1, l1, "softmax output")?;
    let dy = f32s(s2, l2, "softmax gradient")?;
    let s = *l1.dims().last().unwrap_or(&1);
    let mut dx = vec![0f32; y.len()];
    let per_task = s * row_block(y.len() / s.max(1));
    pool().install(|| {
        dx.par_chunks_mut(per_task)
            .zip(y.par_chunks(per_task).zip(dy.par_chunks(per_task)))
            .for_each(|(dxb, (yb, dyb))| {
                for ((yr, dyr), dxr) in yb
                    .chunks_exact(s)
                    .zip(dyb.chunks_exact(s))
                    .zip(dxb.chunks_exact_mut(s))
                {
                    let dot: f32 = yr.iter().zip(dyr).map(|(a, b)| a * b).sum();
                    for j in 0..s {
                        dxr[j] = scale * yr[j] * (dyr[j] - dot);
                    }
                }
            })
    });
    Ok((CpuStorage::F32(dx), l1.shape().clone()))
}
