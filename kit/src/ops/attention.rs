//! Causal scaled dot-product attention over q, k and v packed side by side, fused, and its
//! composed twin.

use super::kernel::{Input, Kernel, Op, pass};
use super::matmul::Matrix;
use super::matmul::small::{Triangle, small_matmul};
use super::pool::pool;
use super::slices::{dot, f32s};
use candle_core::{CpuStorage, D, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Causal scaled dot-product attention, `softmax(mask(q kᵀ · scale)) v`, as one node, with q,
/// k and v side by side in the last dimension, as one dense layer with 3·D outputs makes them:
/// `qkv[..., 0..D]` is q, then k, then v. Position `t` attends to positions `0..=t` only.
///
/// # Shapes
/// qkv: (..., T, 3·D) → (..., T, D)
pub fn attention_packed(qkv: &Tensor, scale: f64) -> Result<Tensor> {
    head_dim(qkv)?;
    qkv.contiguous()?.apply_op1(Op(PackedAttentionOp {
        scale: scale as f32,
    }))
}

/// D of a packed (..., T, 3·D) input.
fn head_dim(qkv: &Tensor) -> Result<usize> {
    let width = qkv.dim(D::Minus1)?;
    if qkv.rank() < 2 || width % 3 != 0 {
        candle_core::bail!(
            "attention_packed expects (..., T, 3·D), q, k and v side by side, got {:?}",
            qkv.dims()
        )
    }
    Ok(width / 3)
}

/// [`attention_packed`] from candle's elementary ops.
pub mod composed {
    use super::head_dim;
    use crate::ops::softmax::composed::causal_softmax;
    use candle_core::{D, Result, Tensor};

    pub fn attention_packed(qkv: &Tensor, scale: f64) -> Result<Tensor> {
        let d = head_dim(qkv)?;
        let part = |i: usize| qkv.narrow(D::Minus1, i * d, d)?.contiguous();
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        causal_softmax(&scores, scale)?.matmul(&v)
    }
}

/// Where the q, k and v rows of one (batch, head) group lie in their storage: row `i` of q
/// starts at `q[i * stride]`, and the same for k and v.
struct Group<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    stride: usize,
}

impl Group<'_> {
    /// Fills `p` (t × t) with the causal softmax of `q kᵀ · scale`, using `kt` (d × t) for kᵀ.
    fn probs(&self, (t, d): (usize, usize), scale: f32, p: &mut [f32], kt: &mut [f32]) {
        transpose(self.k, self.stride, (t, d), kt);
        // p = q · kᵀ, where a position may look (j ≤ i)
        let (q, kt) = (Matrix::rows(self.q, self.stride), Matrix::rows(kt, t));
        small_matmul((t, t, d), p, q, kt, Triangle::LowerC);
        for (i, row) in p.chunks_exact_mut(t).enumerate() {
            let max = row[..=i]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
            let mut sum = 0.0;
            for v in &mut row[..=i] {
                *v = (*v * scale - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in &mut row[..=i] {
                *v *= inv;
            }
            row[i + 1..].fill(0.0);
        }
    }

    /// `o (t × d) = p · v`, with `p` (t × t) from [`Group::probs`] and `scratch` (d × t).
    fn forward(
        &self,
        (t, d): (usize, usize),
        scale: f32,
        (p, scratch): (&mut [f32], &mut [f32]),
        o: &mut [f32],
    ) {
        self.probs((t, d), scale, p, scratch);
        let (p, v) = (Matrix::rows(p, t), Matrix::rows(self.v, self.stride));
        small_matmul((t, d, t), o, p, v, Triangle::LowerA);
    }

    /// `dq`, `dk`, `dv` (each t × d, contiguous) from `go`, the gradient of the output.
    /// `p` and `dp` are t × t scratch, `xt` d × t.
    fn backward(
        &self,
        (t, d): (usize, usize),
        scale: f32,
        go: &[f32],
        (p, dp, xt): (&mut [f32], &mut [f32], &mut [f32]),
        (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        let rs = self.stride;
        self.probs((t, d), scale, p, xt);
        // dv = pᵀ · do (pᵀ is upper triangular)
        let (pt, go_rows) = (Matrix::columns(p, t), Matrix::rows(go, d));
        small_matmul((t, d, t), dv, pt, go_rows, Triangle::UpperA);
        // dp = do · vᵀ, where p is not zero
        transpose(self.v, rs, (t, d), xt);
        small_matmul(
            (t, t, d),
            dp,
            go_rows,
            Matrix::rows(xt, t),
            Triangle::LowerC,
        );
        // ds = p ⊙ (dp − rowsum(dp ⊙ p)) · scale, zero where p is
        for (i, (prow, dprow)) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)).enumerate() {
            let dot = dot(&prow[..=i], &dprow[..=i]);
            for (x, &pv) in dprow[..=i].iter_mut().zip(prow) {
                *x = pv * (*x - dot) * scale;
            }
            dprow[i + 1..].fill(0.0);
        }
        // dq = ds · k (ds is lower triangular), dk = dsᵀ · q (upper)
        let (ds, dst) = (Matrix::rows(dp, t), Matrix::columns(dp, t));
        let (k, q) = (Matrix::rows(self.k, rs), Matrix::rows(self.q, rs));
        small_matmul((t, d, t), dq, ds, k, Triangle::LowerA);
        small_matmul((t, d, t), dk, dst, q, Triangle::UpperA);
    }
}

/// Writes row `i` of `x` (t × d, rows `stride` apart) into column `i` of `xt` (d × t).
fn transpose(x: &[f32], stride: usize, (t, d): (usize, usize), xt: &mut [f32]) {
    for i in 0..t {
        for (c, &v) in x[i * stride..i * stride + d].iter().enumerate() {
            xt[c * t + i] = v;
        }
    }
}

fn attention_dims(l: &Layout) -> (usize, usize, usize) {
    let dims = l.dims();
    let (t, d) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    (l.shape().elem_count() / (t * d).max(1), t, d)
}

struct PackedAttentionOp {
    scale: f32,
}

/// Batch groups, positions and head size of a packed (..., T, 3·D) layout.
fn packed_dims(l: &Layout) -> (usize, usize, usize) {
    let (groups, t, width) = attention_dims(l);
    (groups, t, width / 3)
}

/// The q, k and v of group `g` in a packed (..., T, 3·D) buffer.
fn packed_group(qkv: &[f32], g: usize, t: usize, d: usize) -> Group<'_> {
    let base = g * t * 3 * d;
    let end = base + t * 3 * d;
    Group {
        q: &qkv[base..end],
        k: &qkv[base + d..end],
        v: &qkv[base + 2 * d..end],
        stride: 3 * d,
    }
}

impl Kernel<1> for PackedAttentionOp {
    fn name(&self) -> &'static str {
        "kit-causal-attention-packed"
    }

    fn forward(&self, [(storage, layout)]: [Input; 1]) -> Result<(CpuStorage, Shape)> {
        let qkv = f32s(storage, layout, "packed q, k, v")?;
        let (groups, t, d) = packed_dims(layout);
        let mut out = vec![0f32; groups * t * d];
        pool().install(|| {
            out.par_chunks_mut(t * d).enumerate().for_each_init(
                || vec![0f32; t * t + d * t],
                |scratch, (g, o)| {
                    let scratch = scratch.split_at_mut(t * t);
                    packed_group(qkv, g, t, d).forward((t, d), self.scale, scratch, o)
                },
            )
        });
        let mut dims = layout.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 2") = d;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn backward(
        &self,
        [qkv]: [&Tensor; 1],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 1]> {
        let backward = pass("kit-causal-attention-packed-backward", |inputs| {
            attention_backward(inputs, self.scale)
        });
        let dqkv = qkv.apply_op2_no_bwd(&grad.contiguous()?, &backward)?;
        Ok([Some(dqkv)])
    }
}

/// The gradient of packed q, k and v, packed the same way, from them and `do`.
fn attention_backward([(s1, l1), (s2, l2)]: [Input; 2], scale: f32) -> Result<(CpuStorage, Shape)> {
    let qkv = f32s(s1, l1, "packed q, k, v")?;
    let dout = f32s(s2, l2, "attention gradient")?;
    let (_, t, d) = packed_dims(l1);
    let mut out = vec![0f32; qkv.len()];
    pool().install(|| {
        out.par_chunks_mut(t * 3 * d).enumerate().for_each_init(
            || vec![0f32; 2 * t * t + 4 * t * d],
            |scratch, (g, packed)| {
                let (p, rest) = scratch.split_at_mut(t * t);
                let (dp, rest) = rest.split_at_mut(t * t);
                let (xt, rest) = rest.split_at_mut(t * d);
                let (dq, rest) = rest.split_at_mut(t * d);
                let (dk, dv) = rest.split_at_mut(t * d);
                let go = &dout[g * t * d..(g + 1) * t * d];
                let group = packed_group(qkv, g, t, d);
                group.backward((t, d), scale, go, (p, dp, xt), (dq, dk, dv));
                // Rows of [dq | dk | dv], the layout of the input.
                for (i, row) in packed.chunks_exact_mut(3 * d).enumerate() {
                    let r = i * d..(i + 1) * d;
                    row[..d].copy_from_slice(&dq[r.clone()]);
                    row[d..2 * d].copy_from_slice(&dk[r.clone()]);
                    row[2 * d..].copy_from_slice(&dv[r]);
                }
            },
        )
    });
    Ok((CpuStorage::F32(out), l1.shape().clone()))
}
