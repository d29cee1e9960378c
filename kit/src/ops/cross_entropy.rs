//! Mean softmax cross-entropy against integer targets, fused, and its composed twin.

use super::kernel::{Input, Kernel, Op, pass};
use super::slices::{f32s, u32s};
use candle_core::{CpuStorage, D, Result, Shape, Tensor};

/// Mean softmax cross-entropy between `logits` and integer `targets`.
///
/// # Shapes
/// logits: (..., V), targets: (...) of u32 → scalar
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (logits, targets) = rows(logits, targets)?;
    logits.contiguous()?.apply_op2(
        &targets.to_dtype(candle_core::DType::U32)?.contiguous()?,
        Op(CrossEntropyOp),
    )
}

/// (..., V) logits as (N, V) rows, and (...) targets as N.
fn rows(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let v = logits.dim(D::Minus1)?;
    Ok((logits.reshape(((), v))?, targets.flatten_all()?))
}

/// [`cross_entropy`] from candle-nn's loss.
pub mod composed {
    use super::rows;
    use candle_core::{Result, Tensor};

    pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (logits, targets) = rows(logits, targets)?;
        candle_nn::loss::cross_entropy(&logits, &targets)
    }
}

struct CrossEntropyOp;

/// The op's inputs: V, the logits as rows of V values, and the targets, one per row.
fn logits_and_targets<'a>(
    (s1, l1): Input<'a>,
    (s2, l2): Input<'a>,
) -> Result<(usize, &'a [f32], &'a [u32])> {
    let (n, v) = match l1.dims() {
        [n, v] => (*n, *v),
        d => candle_core::bail!("cross_entropy expects logits of shape (N, V), got {d:?}"),
    };
    if l2.dims() != [n] {
        candle_core::bail!(
            "cross_entropy: {n} rows of logits but targets of shape {:?}",
            l2.dims()
        )
    }
    let logits = f32s(s1, l1, "cross_entropy logits")?;
    Ok((v, logits, u32s(s2, l2, "cross_entropy targets")?))
}

fn target_index(t: u32, v: usize) -> Result<usize> {
    let t = t as usize;
    if t >= v {
        candle_core::bail!("cross_entropy: target {t} is outside the vocabulary of {v} tokens")
    }
    Ok(t)
}

impl Kernel<2> for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "kit-cross-entropy"
    }

    fn forward(&self, [logits, targets]: [Input; 2]) -> Result<(CpuStorage, Shape)> {
        let (v, x, t) = logits_and_targets(logits, targets)?;
        let mut total = 0f64;
        for (row, &target) in x.chunks_exact(v).zip(t) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
            let lse = max + row.iter().map(|a| (a - max).exp()).sum::<f32>().ln();
            total += (lse - row[target_index(target, v)?]) as f64;
        }
        Ok((
            CpuStorage::F32(vec![(total / t.len() as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn backward(
        &self,
        [logits, targets]: [&Tensor; 2],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 2]> {
        let backward = pass("kit-cross-entropy-backward", cross_entropy_backward);
        let dlogits = logits.apply_op2_no_bwd(targets, &backward)?;
        Ok([Some(dlogits.broadcast_mul(grad)?), None])
    }
}

/// `(softmax(x) − onehot(target)) / N`.
fn cross_entropy_backward([logits, targets]: [Input; 2]) -> Result<(CpuStorage, Shape)> {
    let (v, x, t) = logits_and_targets(logits, targets)?;
    let mut dx = vec![0f32; x.len()];
    let inv_n = 1.0 / t.len() as f32;
    for ((row, drow), &target) in x.chunks_exact(v).zip(dx.chunks_exact_mut(v)).zip(t) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
        let mut sum = 0f32;
        for (d, &a) in drow.iter_mut().zip(row) {
            *d = (a - max).exp();
            sum += *d;
        }
        let scale = inv_n / sum;
        for d in drow.iter_mut() {
            *d *= scale;
        }
        drow[target_index(target, v)?] -= inv_n;
    }
    Ok((CpuStorage::F32(dx), logits.1.shape().clone()))
}
