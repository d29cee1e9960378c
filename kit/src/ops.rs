//! Fused LayerNorm, causal softmax and cross-entropy, each a candle custom op with an analytic
//! backward pass.
//!
//! Built from candle's elementary ops, each of these is a chain of ten or more small tensors
//! forward and as many backward; fused, it is one pass over the data each way. [`composed`]
//! keeps the elementary versions: the tests check the fused ops against them and against
//! finite differences, and `cargo xtask bench train --composed` measures the difference.
//!
//! candle-nn 0.11's own `ops::layer_norm`, `LayerNorm` fast path and `ops::softmax_last_dim`
//! have no backward: gradients stop at them silently. Nothing here uses them.

use crate::kernels::{Triangle, small_matmul};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static FUSED: AtomicBool = AtomicBool::new(true);

/// The threads the fused dense and attention ops split their work over: `MINIGPT_THREADS`, else
/// every core. candle's own kernels stay on one thread (see `.cargo/config.toml`): on tensors
/// this small they spend longer synchronising than computing, while these ops split whole
/// matrix products, a few per call.
pub fn threads() -> usize {
    pool().current_num_threads()
}

/// Rows per block when `rows` rows are split over the threads.
fn row_block(rows: usize) -> usize {
    rows.div_ceil(threads()).max(1)
}

pub(crate) fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("MINIGPT_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("kit-ops-{i}"))
            .build()
            .expect("a thread pool")
    })
}

/// Runs `work` on kit's thread pool and returns its result.
///
/// The fused ops split their products over that pool. Called from any other thread, each op
/// hands its work over to the pool and sleeps until it is done: a few hundred round trips
/// through the kernel per training step. Called from inside `work`, they start right away on
/// the pool's own thread. The training loop runs each step and each evaluation this way.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    pool().install(work)
}

/// Chooses the fused ops (the default) or the [`composed`] ones for every call in this process.
/// Only benchmarks and tests that compare the two need this.
pub fn set_fused(fused: bool) {
    FUSED.store(fused, Ordering::Relaxed);
}

/// Whether [`layer_norm`], [`causal_softmax`] and [`cross_entropy`] use the fused kernels.
pub fn fused() -> bool {
    FUSED.load(Ordering::Relaxed)
}

/// Layer normalisation over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
///
/// # Shapes
/// x: (..., C), weight and bias: (C) → (..., C)
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused() {
        return composed::layer_norm(x, weight, bias, eps);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps },
    )
}

/// Softmax over the last dimension of `scores * scale`, where query row `i` of a (T, S) score
/// matrix sees key columns `0..=i + S - T` only; the others get probability exactly 0.
///
/// # Shapes
/// (..., T, S) → (..., T, S), with S ≥ T
pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    if !fused() {
        return composed::causal_softmax(scores, scale);
    }
    let (t, s) = last_two(scores)?;
    if s < t {
        candle_core::bail!(
            "causal_softmax needs at least as many keys as queries, got T={t}, S={s}"
        )
    }
    scores.contiguous()?.apply_op1(CausalSoftmaxOp {
        scale: scale as f32,
    })
}

/// Mean softmax cross-entropy between `logits` and integer `targets`.
///
/// # Shapes
/// logits: (..., V), targets: (...) of u32 → scalar
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), v))?;
    let targets = targets.flatten_all()?;
    if !fused() {
        return composed::cross_entropy(&logits, &targets);
    }
    logits.contiguous()?.apply_op2(
        &targets.to_dtype(candle_core::DType::U32)?.contiguous()?,
        CrossEntropyOp,
    )
}

/// The same maths written with candle's elementary, differentiable ops.
pub mod composed {
    use super::*;

    pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(weight)?.broadcast_add(bias)
    }

    pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
        let (t, s) = last_two(scores)?;
        let visible: Vec<u8> = (0..t)
            .flat_map(|i| (0..s).map(move |j| u8::from(j <= i + s - t)))
            .collect();
        let visible =
            Tensor::from_vec(visible, (t, s), scores.device())?.broadcast_as(scores.shape())?;
        let hidden = Tensor::full(f32::NEG_INFINITY, scores.shape(), scores.device())?;
        let masked = visible.where_cond(&(scores * scale)?, &hidden)?;
        candle_nn::ops::softmax(&masked, D::Minus1)
    }

    pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        candle_nn::loss::cross_entropy(logits, targets)
    }

    pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
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

    pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        let scores = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
        causal_softmax(&scores, scale)?.matmul(&v.contiguous()?)
    }

    pub fn attention_packed(qkv: &Tensor, scale: f64) -> Result<Tensor> {
        let d = qkv.dim(D::Minus1)? / 3;
        let part = |i: usize| qkv.narrow(D::Minus1, i * d, d);
        attention(&part(0)?, &part(1)?, &part(2)?, scale)
    }
}

fn last_two(t: &Tensor) -> Result<(usize, usize)> {
    match t.dims() {
        [.., a, b] => Ok((*a, *b)),
        dims => candle_core::bail!("expected at least two dimensions, got shape {dims:?}"),
    }
}

fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("{what} must be f32, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

fn u32s<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [u32]> {
    let data = match storage {
        CpuStorage::U32(v) => v.as_slice(),
        other => candle_core::bail!("{what} must be u32, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

struct LayerNormOp {
    eps: f64,
}

/// Σ a[i] · b[i] over eight running sums: a float sum in one accumulator is a chain the
/// compiler may not reorder, eight of them become one vector register.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a[i], with eight running sums like [`dot`].
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for j in 0..8 {
            acc[j] += x[j];
        }
    }
    acc.iter().sum::<f32>() + tail
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

// ---------------------------------------------------------------------------------------------
// Causal softmax

struct CausalSoftmaxOp {
    scale: f32,
}

impl CustomOp1 for CausalSoftmaxOp {
    fn name(&self) -> &'static str {
        "kit-causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
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

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx =
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
        Ok(Some(dx))
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

/// `dx = scale · y ⊙ (dy − Σⱼ dyⱼ yⱼ)`, row by row; masked entries have y = 0 and get dx = 0.
struct SoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "kit-causal-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32s(s1, l1, "softmax output")?;
        let dy = f32s(s2, l2, "softmax gradient")?;
        let s = *l1.dims().last().unwrap_or(&1);
        let mut dx = vec![0f32; y.len()];
        let per_task = s * row_block(y.len() / s.max(1));
        let scale = self.scale;
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
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

struct CrossEntropyOp;

fn check_targets(logits: &Layout, targets: &Layout) -> Result<(usize, usize)> {
    let (n, v) = match logits.dims() {
        [n, v] => (*n, *v),
        d => candle_core::bail!("cross_entropy expects logits of shape (N, V), got {d:?}"),
    };
    if targets.dims() != [n] {
        candle_core::bail!(
            "cross_entropy: {n} rows of logits but targets of shape {:?}",
            targets.dims()
        )
    }
    Ok((n, v))
}

fn target_index(t: u32, v: usize) -> Result<usize> {
    let t = t as usize;
    if t >= v {
        candle_core::bail!("cross_entropy: target {t} is outside the vocabulary of {v} tokens")
    }
    Ok(t)
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "kit-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = check_targets(l1, l2)?;
        let x = f32s(s1, l1, "cross_entropy logits")?;
        let t = u32s(s2, l2, "cross_entropy targets")?;
        let mut total = 0f64;
        for (row, &target) in x.chunks_exact(v).zip(t) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
            let lse = max + row.iter().map(|a| (a - max).exp()).sum::<f32>().ln();
            total += (lse - row[target_index(target, v)?]) as f64;
        }
        Ok((
            CpuStorage::F32(vec![(total / n as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dlogits = logits.apply_op2_no_bwd(targets, &CrossEntropyBackward)?;
        Ok((Some(dlogits.broadcast_mul(grad)?), None))
    }
}

/// `(softmax(x) − onehot(target)) / N`.
struct CrossEntropyBackward;

impl CustomOp2 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "kit-cross-entropy-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = check_targets(l1, l2)?;
        let x = f32s(s1, l1, "cross_entropy logits")?;
        let t = u32s(s2, l2, "cross_entropy targets")?;
        let mut dx = vec![0f32; x.len()];
        let inv_n = 1.0 / n as f32;
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
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Dense layers and causal attention

/// `y = x Wᵀ (+ b)` over the last dimension, as one node of the graph.
///
/// # Shapes
/// x: (..., in), weight: (out, in), bias: (out) → (..., out)
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    check_dense_input(x, weight)?;
    if !fused() {
        return composed::linear(x, weight, bias);
    }
    dense_op(x, weight, bias, LinearOp { relu: false })
}

/// `relu(x Wᵀ (+ b))`, as one node of the graph: the first half of a feed-forward layer.
///
/// # Shapes
/// x: (..., in), weight: (out, in), bias: (out) → (..., out)
pub fn linear_relu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    check_dense_input(x, weight)?;
    if !fused() {
        return composed::linear(x, weight, bias)?.relu();
    }
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
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// Causal scaled dot-product attention, `softmax(mask(q kᵀ · scale)) v`, as one node.
///
/// # Shapes
/// q, k, v: (..., T, D) → (..., T, D)
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if !fused() {
        return composed::attention(q, k, v, scale);
    }
    if q.dims() != k.dims() || q.dims() != v.dims() || q.rank() < 2 {
        candle_core::bail!(
            "attention expects q, k and v of one shape (..., T, D), got {:?}, {:?}, {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        AttentionOp {
            scale: scale as f32,
        },
    )
}

/// [`attention`] with q, k and v side by side in the last dimension, as one dense layer with
/// 3·D outputs makes them: `qkv[..., 0..D]` is q, then k, then v.
///
/// # Shapes
/// qkv: (..., T, 3·D) → (..., T, D)
pub fn attention_packed(qkv: &Tensor, scale: f64) -> Result<Tensor> {
    let width = qkv.dim(D::Minus1)?;
    if qkv.rank() < 2 || width % 3 != 0 {
        candle_core::bail!(
            "attention_packed expects (..., T, 3·D), q, k and v side by side, got {:?}",
            qkv.dims()
        )
    }
    if !fused() {
        return composed::attention_packed(qkv, scale);
    }
    qkv.contiguous()?.apply_op1(PackedAttentionOp {
        scale: scale as f32,
    })
}

/// `c (m×n) = a (m×k) · b (k×n)` (or `c +=` with `accumulate`), row-major `c`, with the row and
/// column strides of `a` and `b` given, so that transposes cost nothing.
#[allow(clippy::too_many_arguments)]
fn matmul(
    shape: (usize, usize, usize),
    c: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    assert!(c.len() >= shape.0 * shape.1, "matmul: output too small");
    // SAFETY: `c` holds the m × n output.
    unsafe {
        gemm_into(
            shape,
            c.as_mut_ptr(),
            accumulate,
            a,
            a_strides,
            b,
            b_strides,
        )
    }
}

/// [`matmul`] into memory not yet initialised: every element of `c[..m * n]` is written and
/// none is read, so a fresh output needs no zero-filling first.
fn matmul_overwrite(
    shape: (usize, usize, usize),
    c: &mut [MaybeUninit<f32>],
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    assert!(c.len() >= shape.0 * shape.1, "matmul: output too small");
    // SAFETY: `c` holds the m × n output; without `accumulate` gemm does not read it (BLAS's
    // beta = 0) and writes all of it, zeros when k = 0.
    unsafe {
        gemm_into(
            shape,
            c.as_mut_ptr().cast(),
            false,
            a,
            a_strides,
            b,
            b_strides,
        )
    }
}

/// # Safety
/// `c` must be valid for writes of `m * n` floats, and for reads too with `accumulate`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    (m, n, k): (usize, usize, usize),
    c: *mut f32,
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(k == 0 || n == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every index gemm reads inside `a` and `b`; the caller
    // vouches for `c`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `x Wᵀ (+ b)`, then ReLU if `relu`.
struct LinearOp {
    relu: bool,
}

impl LinearOp {
    fn forward(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
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
                    matmul(shape, yb, accumulate, xb, (in_dim, 1), ws, (1, in_dim));
                    if self.relu {
                        yb.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                })
        });
        let mut dims = x.1.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = out_dim;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    /// `[dx, dW, db]`, packed.
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let grad = if self.relu {
            // ReLU passes the gradient where its output is positive, and nothing elsewhere.
            grad.contiguous()?.apply_op2_no_bwd(res, &ReluMask)?
        } else {
            grad.contiguous()?
        };
        let packed = x.apply_op3_no_bwd(w, &grad, &LinearBackward { with_bias })?;
        let (out_dim, in_dim) = w.dims2()?;
        let n = x.elem_count();
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed
            .narrow(0, n, out_dim * in_dim)?
            .reshape((out_dim, in_dim))?;
        let db = packed.narrow(0, n + out_dim * in_dim, if with_bias { out_dim } else { 0 })?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "kit-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, res, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "kit-linear-bias"
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
        self.forward((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, w, res, grad, true)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The gradient where the ReLU's output (the second input) is positive, zero elsewhere.
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "kit-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let grad = f32s(s1, l1, "gradient")?;
        let out = f32s(s2, l2, "ReLU output")?;
        let masked = grad
            .iter()
            .zip(out)
            .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(masked), l1.shape().clone()))
    }
}

struct LinearBackward {
    with_bias: bool,
}

impl CustomOp3 for LinearBackward {
    fn name(&self) -> &'static str {
        "kit-linear-backward"
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
        let xs = f32s(s1, l1, "dense input")?;
        let ws = f32s(s2, l2, "dense weight")?;
        let dy = f32s(s3, l3, "dense gradient")?;
        let (out_dim, in_dim) = (l2.dims()[0], l2.dims()[1]);
        let rows = xs.len() / in_dim.max(1);
        let nb = if self.with_bias { out_dim } else { 0 };
        let (nx, nw) = (xs.len(), out_dim * in_dim);
        let mut out: Vec<f32> = Vec::with_capacity(nx + nw + nb);
        let (dx, dw) = out.spare_capacity_mut()[..nx + nw].split_at_mut(nx);
        // Two products of the same size, side by side, each overwriting its part:
        // dx (rows × in) = dy (rows × out) · W (out × in)
        // dW (out × in) = dyᵀ (out × rows) · x (rows × in)
        pool().join(
            || {
                matmul_overwrite(
                    (rows, in_dim, out_dim),
                    dx,
                    dy,
                    (out_dim, 1),
                    ws,
                    (in_dim, 1),
                )
            },
            || {
                matmul_overwrite(
                    (out_dim, in_dim, rows),
                    dw,
                    dy,
                    (1, out_dim),
                    xs,
                    (in_dim, 1),
                )
            },
        );
        // SAFETY: the two products wrote every element of dx and dW, the first nx + nw.
        unsafe { out.set_len(nx + nw) };
        if self.with_bias {
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
}

struct AttentionOp {
    scale: f32,
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
        small_matmul(
            (t, t, d),
            p,
            self.q,
            (self.stride, 1),
            kt,
            t,
            Triangle::LowerC,
        );
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
        small_matmul(
            (t, d, t),
            o,
            p,
            (t, 1),
            self.v,
            self.stride,
            Triangle::LowerA,
        );
    }

    /// `dq`, `dk`, `dv` (each t × d, contiguous) from `go`, the gradient of the output.
    /// `p` and `dp` are t × t scratch, `xt` d × t.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        (t, d): (usize, usize),
        scale: f32,
        go: &[f32],
        (p, dp, xt): (&mut [f32], &mut [f32], &mut [f32]),
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) {
        let rs = self.stride;
        self.probs((t, d), scale, p, xt);
        // dv = pᵀ · do (pᵀ is upper triangular)
        small_matmul((t, d, t), dv, p, (1, t), go, d, Triangle::UpperA);
        // dp = do · vᵀ, where p is not zero
        transpose(self.v, rs, (t, d), xt);
        small_matmul((t, t, d), dp, go, (d, 1), xt, t, Triangle::LowerC);
        // ds = p ⊙ (dp − rowsum(dp ⊙ p)) · scale, zero where p is
        for (i, (prow, dprow)) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)).enumerate() {
            let dot = dot(&prow[..=i], &dprow[..=i]);
            for (x, &pv) in dprow[..=i].iter_mut().zip(prow) {
                *x = pv * (*x - dot) * scale;
            }
            dprow[i + 1..].fill(0.0);
        }
        // dq = ds · k (ds is lower triangular), dk = dsᵀ · q (upper)
        small_matmul((t, d, t), dq, dp, (t, 1), self.k, rs, Triangle::LowerA);
        small_matmul((t, d, t), dk, dp, (1, t), self.q, rs, Triangle::UpperA);
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

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "kit-causal-attention"
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
        let (q, k, v) = (f32s(s1, l1, "q")?, f32s(s2, l2, "k")?, f32s(s3, l3, "v")?);
        let (_, t, d) = attention_dims(l1);
        let mut out = vec![0f32; q.len()];
        // One (batch, head) group at a time, the groups spread over the threads.
        pool().install(|| {
            out.par_chunks_mut(t * d).enumerate().for_each_init(
                || vec![0f32; t * t + d * t],
                |scratch, (g, o)| {
                    let r = g * t * d..(g + 1) * t * d;
                    let group = Group {
                        q: &q[r.clone()],
                        k: &k[r.clone()],
                        v: &v[r],
                        stride: d,
                    };
                    group.forward((t, d), self.scale, scratch.split_at_mut(t * t), o);
                },
            )
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = q.elem_count();
        let qkv = Tensor::cat(&[q.flatten_all()?, k.flatten_all()?, v.flatten_all()?], 0)?;
        let packed = qkv.apply_op2_no_bwd(
            &grad.contiguous()?,
            &AttentionBackward {
                scale: self.scale,
                shape: q.shape().clone(),
            },
        )?;
        let part = |i: usize| packed.narrow(0, i * n, n)?.reshape(q.shape());
        Ok((Some(part(0)?), Some(part(1)?), Some(part(2)?)))
    }
}

/// `[dq, dk, dv]` from `[q, k, v]` (concatenated) and `do`.
struct AttentionBackward {
    scale: f32,
    shape: Shape,
}

impl CustomOp2 for AttentionBackward {
    fn name(&self) -> &'static str {
        "kit-causal-attention-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = f32s(s1, l1, "q, k, v")?;
        let dout = f32s(s2, l2, "attention gradient")?;
        let n = dout.len();
        let (q, k, v) = (&qkv[..n], &qkv[n..2 * n], &qkv[2 * n..3 * n]);
        let (_, t, d) = attention_dims(&Layout::contiguous(self.shape.clone()));
        let mut out = vec![0f32; 3 * n];
        let (dq, rest) = out.split_at_mut(n);
        let (dk, dv) = rest.split_at_mut(n);
        let groups = dq
            .par_chunks_mut(t * d)
            .zip(dk.par_chunks_mut(t * d))
            .zip(dv.par_chunks_mut(t * d));
        pool().install(|| {
            groups.enumerate().for_each_init(
                || (vec![0f32; t * t], vec![0f32; t * t], vec![0f32; d * t]),
                |(p, dp, xt), (g, ((dq, dk), dv))| {
                    let r = g * t * d..(g + 1) * t * d;
                    let group = Group {
                        q: &q[r.clone()],
                        k: &k[r.clone()],
                        v: &v[r.clone()],
                        stride: d,
                    };
                    group.backward((t, d), self.scale, &dout[r], (p, dp, xt), dq, dk, dv);
                },
            )
        });
        Ok((CpuStorage::F32(out), Shape::from(3 * n)))
    }
}

/// Causal attention over q, k and v packed side by side in the last dimension.
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

impl CustomOp1 for PackedAttentionOp {
    fn name(&self) -> &'static str {
        "kit-causal-attention-packed"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
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

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dqkv = qkv.apply_op2_no_bwd(
            &grad.contiguous()?,
            &PackedAttentionBackward { scale: self.scale },
        )?;
        Ok(Some(dqkv))
    }
}

/// The gradient of packed q, k and v, packed the same way, from them and `do`.
struct PackedAttentionBackward {
    scale: f32,
}

impl CustomOp2 for PackedAttentionBackward {
    fn name(&self) -> &'static str {
        "kit-causal-attention-packed-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
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
                    group.backward((t, d), self.scale, go, (p, dp, xt), dq, dk, dv);
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
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    #[test]
    fn the_pool_runs_work_on_its_own_threads() {
        let names: Vec<String> = pool().install(|| {
            (0..4)
                .into_par_iter()
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    std::thread::current().name().unwrap_or("?").to_string()
                })
                .collect()
        });
        println!("{} threads: {names:?}", threads());
        assert!(names.iter().all(|n| n.starts_with("kit-ops-")), "{names:?}");
    }
}
