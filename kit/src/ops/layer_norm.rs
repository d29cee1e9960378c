//! Layer normalisation over the last dimension, fused, and its composed twin.

use super::pool::{pool, row_block};
use super::slices::{dot, f32s, sum};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Layer normalisation over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
///
/// # Shapes
/// x: (..., C), weight and bias: (C) → (..., C)
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps },
    )
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

struct LayerNormOp {
    eps: f64,
}

/// Writes `x - mean(x)` into `centred` and returns 1/std of `x`.
fn centre(x: &[f32], centred: &mut [f32], eps: f64) -> f32 {
    let mean = sum(x) / x.len() as f32;
    for (c, v) in centred.iter_mut().zip(x) {
        *c = v - mean;
    }
    let var = dot(centred, centred) / x.len() as f32;
    1.0 / (var + eps as f32).sqrt()
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "kit-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "layer_norm input")?;
        let g = f32s(s2, l2, "layer_norm weight")?;
        let b = f32s(s3, l3, "layer_norm bias")?;
        let c = *l1.dims().last().unwrap_or(&0);
        if c == 0 || g.len() != c || b.len() != c {
            candle_core::bail!(
                "layer_norm: input has {c} features, weight {} and bias {}",
                g.len(),
                b.len()
            )
        }
        let mut y = vec![0f32; x.len()];
        let block = row_block(x.len() / c) * c;
        pool().install(|| {
            y.par_chunks_mut(block)
                .zip(x.par_chunks(block))
                .for_each(|(yb, xb)| {
                    for (xr, yr) in xb.chunks_exact(c).zip(yb.chunks_exact_mut(c)) {
                        let rstd = centre(xr, yr, self.eps);
                        for ((y, g), b) in yr.iter_mut().zip(g).zip(b) {
                            *y = *y * rstd * g + b;
                        }
                    }
                })
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = weight.elem_count();
        let n = x.elem_count();
        let packed = x.apply_op3_no_bwd(
            &weight.contiguous()?,
            &grad.contiguous()?,
            &LayerNormBackward { eps: self.eps },
        )?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dweight = packed.narrow(0, n, c)?;
        let dbias = packed.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dweight), Some(dbias)))
    }
}

/// Computes `[dx, dweight, dbias]`, packed into one flat tensor.
struct LayerNormBackward {
    eps: f64,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "kit-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "layer_norm input")?;
        let g = f32s(s2, l2, "layer_norm weight")?;
        let dy = f32s(s3, l3, "layer_norm gradient")?;
        let c = g.len();
        let n = x.len();
        let mut out = vec![0f32; n + 2 * c];
        let (dx, dparams) = out.split_at_mut(n);
        let (dg, db) = dparams.split_at_mut(c);
        let block = row_block(n / c.max(1)) * c;
        // Rows in blocks, one per thread; each block returns its share of dweight and dbias.
        let partials: Vec<Vec<f32>> = pool().install(|| {
            dx.par_chunks_mut(block)
                .zip(x.par_chunks(block).zip(dy.par_chunks(block)))
                .map(|(dxb, (xb, dyb))| {
                    let mut part = vec![0f32; 2 * c];
                    let (pg, pb) = part.split_at_mut(c);
                    let (mut xhat, mut dxhat) = (vec![0f32; c], vec![0f32; c]);
                    for ((xr, dyr), dxr) in xb
                        .chunks_exact(c)
                        .zip(dyb.chunks_exact(c))
                        .zip(dxb.chunks_exact_mut(c))
                    {
                        let rstd = centre(xr, &mut xhat, self.eps);
                        xhat.iter_mut().for_each(|v| *v *= rstd);
                        for (d, (dy, g)) in dxhat.iter_mut().zip(dyr.iter().zip(g)) {
                            *d = dy * g;
                        }
                        for ((pg, pb), (dy, xh)) in
                            pg.iter_mut().zip(pb.iter_mut()).zip(dyr.iter().zip(&xhat))
                        {
                            *pg += dy * xh;
                            *pb += dy;
                        }
                        let mean_dxhat = sum(&dxhat) / c as f32;
                        let mean_dxhat_xhat = dot(&dxhat, &xhat) / c as f32;
                        for (dx, (dxh, xh)) in dxr.iter_mut().zip(dxhat.iter().zip(&xhat)) {
                            *dx = rstd * (dxh - mean_dxhat - xh * mean_dxhat_xhat);
                        }
                    }
                    part
                })
                .collect()
        });
        for part in partials {
            for i in 0..c {
                dg[i] += part[i];
                db[i] += part[c + i];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * c)))
    }
}
