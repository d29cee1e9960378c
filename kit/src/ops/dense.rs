//! Dense layers, `x Wᵀ + b` and its ReLU, fused, and their composed twins.

use super::kernel::{Input, Kernel, Op, pass};
use super::matmul::{Matrix, matmul, matmul_overwrite};
use super::pool::{pool, threads};
use super::slices::{f32s, unpack};
use candle_core::{CpuStorage, D, Result, Shape, Tensor};
use rayon::prelude::*;

/// `y = x Wᵀ (+ b)` over the last dimension, as one node of the graph.
///
/// # Shapes
/// x: (..., in), weight: (out, in), bias: (out) → (..., out)
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    check_dense_input(x, weight)?;
    dense_op(x, weight, bias, LinearOp { relu: false })
}

/// `relu(x Wᵀ (+ b))`, as one node of the graph: the first half of a feed-forward layer.
///
/// # Shapes
/// x: (..., in), weight: (out, in), bias: (out) → (..., out)
pub fn linear_relu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    check_dense_input(x, weight)?;
    dense_op(x, weight, bias, LinearOp { relu: true })
}

fn check_dense_input(x: &Tensor, weight: &Tensor) -> Result<()> {
    let (_, in_dim) = weight.dims2()?;
    if x.dim(D::Minus1)? != in_dim {
        candle_core::bail!(
            "dense layer expects inputs whose last dimension is {in_dim}, got shape {:?}",
            x.dims()
        )
    }
    Ok(())
}

fn dense_op(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, op: LinearOp) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, Op(op)),
        None => x.apply_op2(&w, Op(op)),
    }
}

/// [`linear`] and [`linear_relu`] from candle's elementary ops.
pub mod composed {
    use super::check_dense_input;
    use candle_core::{Result, Tensor};

    pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        check_dense_input(x, weight)?;
        let (out_dim, in_dim) = weight.dims2()?;
        let mut lead = x.dims().to_vec();
        lead.pop();
        let rows: usize = lead.iter().product();
        let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
        let y = match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        lead.push(out_dim);
        y.reshape(lead)
    }

    pub fn linear_relu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        linear(x, weight, bias)?.relu()
    }
}

/// `x Wᵀ (+ b)`, then ReLU if `relu`.
struct LinearOp {
    relu: bool,
}

impl LinearOp {
    /// The output of `x`, `w` and, where there is one, `b`.
    fn product(&self, x: Input, w: Input, b: Option<Input>) -> Result<(CpuStorage, Shape)> {
        let xs = f32s(x.0, x.1, "dense input")?;
        let ws = f32s(w.0, w.1, "dense weight")?;
        let (out_dim, in_dim) = match w.1.dims() {
            [o, i] => (*o, *i),
            d => candle_core::bail!("dense weight must be (out, in), got {d:?}"),
        };
        let rows = xs.len() / in_dim.max(1);
        let (mut y, accumulate) = match b {
            Some((bs, bl)) => {
                let bias = f32s(bs, bl, "dense bias")?;
                if bias.len() != out_dim {
                    candle_core::bail!("dense bias has {} values for {out_dim} outputs", bias.len())
                }
                // Every row starts as the bias, and the product is added to it.
                let mut y = Vec::with_capacity(rows * out_dim);
                for _ in 0..rows {
                    y.extend_from_slice(bias);
                }
                (y, true)
            }
            None => (vec![0f32; rows * out_dim], false),
        };
        // y (rows × out) = x (rows × in) · Wᵀ (in × out), one block of rows per thread.
        let block = rows.div_ceil(threads()).max(1);
        pool().install(|| {
            y.par_chunks_mut(block * out_dim)
                .enumerate()
                .for_each(|(i, yb)| {
                    let r = yb.len() / out_dim;
                    let xb = &xs[i * block * in_dim..(i * block + r) * in_dim];
                    let shape = (r, out_dim, in_dim);
                    // W is (out, in), row-major: Wᵀ is its columns.
                    let (x, wt) = (Matrix::rows(xb, in_dim), Matrix::columns(ws, in_dim));
                    matmul(shape, yb, accumulate, x, wt);
                    if self.relu {
                        yb.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                })
        });
        let mut dims = x.1.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = out_dim;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    /// dx, dW and db (empty without a bias), computed by [`linear_backward`] in one tensor.
    fn gradients(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let grad = if self.relu {
            // ReLU passes the gradient where its output is positive, and nothing elsewhere.
            grad.contiguous()?
                .apply_op2_no_bwd(res, &pass("kit-relu-mask", relu_mask))?
        } else {
            grad.contiguous()?
        };
        let backward = pass("kit-linear-backward", |inputs| {
            linear_backward(inputs, with_bias)
        });
        let packed = x.apply_op3_no_bwd(w, &grad, &backward)?;
        let (out_dim, _) = w.dims2()?;
        let db = Shape::from(if with_bias { out_dim } else { 0 });
        let [dx, dw, db] = unpack(&packed, [x.shape(), w.shape(), &db])?;
        Ok((dx, dw, db))
    }
}

impl Kernel<2> for LinearOp {
    fn name(&self) -> &'static str {
        "kit-linear"
    }

    fn forward(&self, [x, w]: [Input; 2]) -> Result<(CpuStorage, Shape)> {
        self.product(x, w, None)
    }

    fn backward(
        &self,
        [x, w]: [&Tensor; 2],
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 2]> {
        let (dx, dw, _) = self.gradients(x, w, res, grad, false)?;
        Ok([Some(dx), Some(dw)])
    }
}

impl Kernel<3> for LinearOp {
    fn name(&self) -> &'static str {
        "kit-linear-bias"
    }

    fn forward(&self, [x, w, b]: [Input; 3]) -> Result<(CpuStorage, Shape)> {
        self.product(x, w, Some(b))
    }

    fn backward(
        &self,
        [x, w, _b]: [&Tensor; 3],
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        let (dx, dw, db) = self.gradients(x, w, res, grad, true)?;
        Ok([Some(dx), Some(dw), Some(db)])
    }
}

/// The gradient where the ReLU's output (the second input) is positive, zero elsewhere.
fn relu_mask([(s1, l1), (s2, l2)]: [Input; 2]) -> Result<(CpuStorage, Shape)> {
    let grad = f32s(s1, l1, "gradient")?;
    let out = f32s(s2, l2, "ReLU output")?;
    let masked = grad
        .iter()
        .zip(out)
        .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
        .collect();
    Ok((CpuStorage::F32(masked), l1.shape().clone()))
}

/// dx, dW and, `with_bias`, db, from x, W and dy, one after the other in one flat tensor.
fn linear_backward(
    [(s1, l1), (s2, l2), (s3, l3)]: [Input; 3],
    with_bias: bool,
) -> Result<(CpuStorage, Shape)> {
    let xs = f32s(s1, l1, "dense input")?;
    let ws = f32s(s2, l2, "dense weight")?;
    let dy = f32s(s3, l3, "dense gradient")?;
    let (out_dim, in_dim) = (l2.dims()[0], l2.dims()[1]);
    let rows = xs.len() / in_dim.max(1);
    let nb = if with_bias { out_dim } else { 0 };
    let (nx, nw) = (xs.len(), out_dim * in_dim);
    let mut out: Vec<f32> = Vec::with_capacity(nx + nw + nb);
    let (dx, dw) = out.spare_capacity_mut()[..nx + nw].split_at_mut(nx);
    // Two products of the same size, side by side, each overwriting its part:
    // dx (rows × in) = dy (rows × out) · W (out × in)
    // dW (out × in) = dyᵀ (out × rows) · x (rows × in)
    pool().join(
        || {
            // dx = dy · W
            let (dy, w) = (Matrix::rows(dy, out_dim), Matrix::rows(ws, in_dim));
            matmul_overwrite((rows, in_dim, out_dim), dx, dy, w)
        },
        || {
            // dW = dyᵀ · x
            let (dyt, x) = (Matrix::columns(dy, out_dim), Matrix::rows(xs, in_dim));
            matmul_overwrite((out_dim, in_dim, rows), dw, dyt, x)
        },
    );
    // SAFETY: the two products wrote every element of dx and dW, the first nx + nw.
    unsafe { out.set_len(nx + nw) };
    if with_bias {
        let mut db = vec![0f32; out_dim];
        for row in dy.chunks_exact(out_dim) {
            for (d, g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
        out.extend_from_slice(&db);
    }
    let n = out.len();
    Ok((CpuStorage::F32(out), Shape::from(n)))
}
