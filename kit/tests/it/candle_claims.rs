//! candle's behaviour as the workbook's texts state it: one test per claim.
//!
//! The guide, the README, the hints in tasks.toml and the doc comments of the exercises and of
//! kit say what candle 0.11 does: which ops are recorded for the backward pass and which are
//! not, which calls write in place and what the backward pass then sees, what a custom op
//! without a `bwd` does, what the CPU random generator can do. Each test says where its claim
//! is made, is about the candle functions the claim names, and fails if candle stops behaving
//! so: then the text must change with it.

use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Device, Error, IndexOp, InplaceOp1,
    Layout, Module, Result, Shape, Tensor, Var,
};
use candle_nn::kv_cache::{KvCache, RotatingKvCache};
use candle_nn::{AdamW, Init, Optimizer, ParamsAdamW, SGD, VarBuilder, VarMap};
use kit::ops::slices::f32s;
use std::sync::{Arc, Mutex};

const CPU: Device = Device::Cpu;

fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(values, shape, &CPU).unwrap()
}

fn var(values: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&tensor(values, shape)).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `n` distinct values between about −1.5 and 1.5, none equal.
fn spread(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((1.3 * i as f64 + 0.5).sin() * 1.5) as f32)
        .collect()
}

/// A weight for each element of `out`, all different and none zero, so that `Σ out ⊙ W` gives
/// every element of `out` a gradient of its own.
fn weights(out: &Tensor) -> Tensor {
    let w: Vec<f64> = (0..out.elem_count())
        .map(|i| {
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            0.3 + 0.7 * sign * ((i * 7 % 11) as f64 / 11.0)
        })
        .collect();
    Tensor::from_vec(w, out.shape(), &CPU)
        .unwrap()
        .to_dtype(out.dtype())
        .unwrap()
}

/// `Σ out ⊙ W`, a scalar loss.
fn weighted_sum(out: &Tensor) -> Tensor {
    (out * weights(out)).unwrap().sum_all().unwrap()
}

/// `values` as (rows, cols), stored transposed: the variable that holds them, and the
/// (rows, cols) view of it, which is not contiguous.
fn stored_transposed(values: &[f32], rows: usize, cols: usize) -> (Var, Tensor) {
    let stored = tensor(values, &[rows, cols])
        .t()
        .unwrap()
        .contiguous()
        .unwrap();
    let stored = Var::from_tensor(&stored).unwrap();
    let view = stored.t().unwrap();
    assert!(!view.is_contiguous());
    (stored, view)
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: not as many values");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tol,
        "{what}: {got:?} against {want:?}, {worst:.2e} apart"
    );
}

/// `out` records no graph node; a backward pass through it succeeds and gives none of `inputs`
/// a gradient.
#[track_caller]
fn assert_stops_silently(what: &str, out: &Tensor, inputs: &[&Var]) {
    assert!(
        !out.track_op(),
        "{what}: its output records a graph node now; the texts that say it records none must \
         change"
    );
    let grads = weighted_sum(out)
        .backward()
        .unwrap_or_else(|e| panic!("{what}: backward() fails now ({e}), where it succeeded"));
    for (i, input) in inputs.iter().enumerate() {
        assert!(
            grads.get(input).is_none(),
            "{what}: input {i} receives a gradient now; the texts that say the gradient stops \
             there must change"
        );
    }
}

/// `out` records a graph node, and each of `inputs` receives a gradient that is not all zero.
#[track_caller]
fn assert_differentiable(what: &str, out: &Tensor, inputs: &[&Var]) -> GradStore {
    assert!(out.track_op(), "{what}: its output records no graph node");
    let grads = weighted_sum(out).backward().unwrap();
    for (i, input) in inputs.iter().enumerate() {
        let g = grads
            .get(input)
            .unwrap_or_else(|| panic!("{what}: input {i} receives no gradient"));
        assert!(
            values(g).iter().any(|v| v.abs() > 1e-6),
            "{what}: the gradient of input {i} is all zero"
        );
    }
    grads
}

fn softmax_rows(x: &[f32], c: usize) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

/// LayerNorm (`remove_mean`) or RMSNorm of each row of `c` values, scaled and shifted.
fn norm_rows(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    remove_mean: bool,
) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|row| {
            let mean = if remove_mean {
                row.iter().sum::<f32>() / c as f32
            } else {
                0.0
            };
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / c as f32;
            let r = 1.0 / (var + eps).sqrt();
            (0..c)
                .map(|i| (row[i] - mean) * r * gamma[i] + beta[i])
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Rotates each vector of `d` values of `x` (rows of positions `0..t`, repeated for every
/// batch row and head) by the angles `cos`/`sin` (t, d/2), pairing dimension `i` with `i + d/2`
/// (`interleaved` false) or `2i` with `2i + 1` (true).
fn rotate(x: &[f32], t: usize, d: usize, cos: &[f32], sin: &[f32], interleaved: bool) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (r, (xr, yr)) in x.chunks(d).zip(out.chunks_mut(d)).enumerate() {
        let p = r % t;
        for i in 0..d / 2 {
            let (a, b) = if interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + d / 2)
            };
            let (c, s) = (cos[p * d / 2 + i], sin[p * d / 2 + i]);
            yr[a] = xr[a] * c - xr[b] * s;
            yr[b] = xr[a] * s + xr[b] * c;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Which ops record a graph node, and what happens to a gradient where one does not.
// ---------------------------------------------------------------------------------------------

/// docs/guide.md §1, "Gradients come from `loss.backward()`": "candle-nn 0.11 applies its fused
/// ops that way: `ops::softmax_last_dim`, … They compute the right values, and no gradient
/// passes through them to what came before." README.md, "Things worth knowing about candle";
/// exercises/src/task2.rs, module doc ("candle-nn 0.11's `candle_nn::ops::softmax_last_dim`
/// records no backward, and the gradient stops there without an error"); tasks.toml, task2
/// `forward`, hint 3 ("softmax_last_dim has none"); kit/src/ops/mod.rs, module doc.
#[test]
fn softmax_last_dim_records_no_node_so_the_gradient_stops_silently() {
    let x = var(&spread(12), &[3, 4]);
    let out = candle_nn::ops::softmax_last_dim(&x).unwrap();
    assert_close(
        "candle_nn::ops::softmax_last_dim's values",
        &values(&out),
        &softmax_rows(&spread(12), 4),
        1e-6,
    );
    assert_stops_silently("candle_nn::ops::softmax_last_dim", &out, &[&x]);
}

/// docs/guide.md §1: "kit's `LayerNorm` and `candle_nn::ops::softmax(&x, D::Minus1)` have
/// working backward passes". README.md, "Things worth knowing about candle" ("Use
/// `candle_nn::ops::softmax(&x, D::Minus1)`"); tasks.toml, task2 `forward`, hint 3
/// ("candle_nn::ops::softmax(&x, D::Minus1)? has a backward pass"); exercises/src/task2.rs,
/// module doc ("its `candle_nn::ops::softmax` over a dimension is written with differentiable
/// ops").
#[test]
fn softmax_over_a_dimension_is_differentiable() {
    let x = var(&spread(12), &[3, 4]);
    let out = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
    let s = softmax_rows(&spread(12), 4);
    assert_close("candle_nn::ops::softmax's values", &values(&out), &s, 1e-6);
    let grads = assert_differentiable("candle_nn::ops::softmax", &out, &[&x]);
    // ∂(Σ s ⊙ w)/∂x = s ⊙ (w − Σ s w), row by row.
    let w = values(&weights(&out));
    let want: Vec<f32> = s
        .chunks(4)
        .zip(w.chunks(4))
        .flat_map(|(sr, wr)| {
            let dot: f32 = sr.iter().zip(wr).map(|(a, b)| a * b).sum();
            sr.iter().zip(wr).map(move |(a, b)| a * (b - dot))
        })
        .collect();
    assert_close(
        "candle_nn::ops::softmax's gradient",
        &values(grads.get(&x).unwrap()),
        &want,
        1e-6,
    );
}

/// docs/guide.md §1 ("`ops::layer_norm` … no gradient passes through them") and Task 5
/// ("candle-nn's fused LayerNorm, `candle_nn::ops::layer_norm`, is applied the second way: it
/// computes the right values, and no gradient gets past it"); exercises/src/task5.rs, module
/// doc; tasks.toml, task1 `block-new`, hint 3; README.md, "Things worth knowing about candle";
/// kit/src/ops/mod.rs, module doc.
#[test]
fn ops_layer_norm_records_no_node_so_the_gradient_stops_silently() {
    let x = var(&spread(12), &[3, 4]);
    let (gamma, beta) = ([1.5f32, 0.5, -1.0, 2.0], [0.1f32, -0.2, 0.3, 0.0]);
    let (g, b) = (var(&gamma, &[4]), var(&beta, &[4]));
    let out = candle_nn::ops::layer_norm(&x, &g, &b, 1e-5).unwrap();
    assert_close(
        "candle_nn::ops::layer_norm's values",
        &values(&out),
        &norm_rows(&spread(12), 4, &gamma, &beta, 1e-5, true),
        1e-5,
    );
    assert_stops_silently("candle_nn::ops::layer_norm", &out, &[&x, &g, &b]);
}

/// docs/guide.md §1: "`ops::layer_norm` and `ops::rms_norm` (which its `LayerNorm` with a bias
/// and its `RmsNorm` run on a contiguous input)". tasks.toml, task1 `block-new`, hint 3 ("Not
/// candle_nn's LayerNorm: with a bias, as candle_nn::layer_norm makes it, on a contiguous input
/// it runs candle_nn::ops::layer_norm"); exercises/src/task1.rs, module doc ("candle-nn's
/// `LayerNorm`, given a bias as `candle_nn::layer_norm` gives it one, runs the fused
/// `candle_nn::ops::layer_norm` on a contiguous input, which records no graph node"); README.md,
/// "Things worth knowing about candle" ("`LayerNorm` with a bias … on a contiguous input");
/// kit/src/nn.rs, `LayerNorm`'s doc ("candle-nn 0.11's `LayerNorm` (with a bias) takes a fast
/// path on a contiguous input, `candle_nn::ops::layer_norm`, which records no graph node");
/// kit/src/ops/mod.rs, module doc ("`LayerNorm` fast path").
#[test]
fn candle_nn_layer_norm_with_a_bias_stops_the_gradient_on_a_contiguous_input_only() {
    let (gamma, beta) = ([1.5f32, 0.5, -1.0, 2.0], [0.1f32, -0.2, 0.3, 0.0]);
    let (g, b) = (var(&gamma, &[4]), var(&beta, &[4]));
    let ln = candle_nn::LayerNorm::new(g.as_tensor().clone(), b.as_tensor().clone(), 1e-5);
    let want = norm_rows(&spread(12), 4, &gamma, &beta, 1e-5, true);

    let x = var(&spread(12), &[3, 4]);
    let fast = ln.forward(&x).unwrap();
    assert_close(
        "candle_nn::LayerNorm, contiguous",
        &values(&fast),
        &want,
        1e-5,
    );
    assert_stops_silently(
        "candle_nn::LayerNorm::forward on a contiguous input",
        &fast,
        &[&x, &g, &b],
    );

    // The same rows, stored transposed: not contiguous, so the differentiable path.
    let (xt, strided) = stored_transposed(&spread(12), 3, 4);
    let slow = ln.forward(&strided).unwrap();
    assert_close("candle_nn::LayerNorm, strided", &values(&slow), &want, 1e-5);
    assert_differentiable(
        "candle_nn::LayerNorm::forward on a strided input",
        &slow,
        &[&xt, &g, &b],
    );
}

/// docs/guide.md §1: "(which its `LayerNorm` with a bias and its `RmsNorm` run on a contiguous
/// input)", README.md and tasks.toml, task1 `block-new`, hint 3 ("with a bias"): the fast path
/// needs the bias; `LayerNorm::new_no_bias` (and `candle_nn::layer_norm_no_bias`) always take
/// the differentiable one.
#[test]
fn candle_nn_layer_norm_without_a_bias_is_differentiable_even_on_a_contiguous_input() {
    let gamma = [1.5f32, 0.5, -1.0, 2.0];
    let g = var(&gamma, &[4]);
    let ln = candle_nn::LayerNorm::new_no_bias(g.as_tensor().clone(), 1e-5);
    let x = var(&spread(12), &[3, 4]);
    let out = ln.forward(&x).unwrap();
    assert_close(
        "candle_nn::LayerNorm::new_no_bias",
        &values(&out),
        &norm_rows(&spread(12), 4, &gamma, &[0.0; 4], 1e-5, true),
        1e-5,
    );
    assert_differentiable(
        "candle_nn::LayerNorm::new_no_bias, contiguous",
        &out,
        &[&x, &g],
    );
}

/// docs/guide.md §1 ("`ops::rms_norm`") and Task 7 ("`candle_nn::ops::rms_norm` … applied with
/// `apply_op*_no_bwd` and record nothing"); exercises/src/task7.rs, module doc; tasks.toml,
/// task7 `rms-norm`, hint 3 ("Not candle_nn::ops::rms_norm, which records no backward");
/// README.md, "Things worth knowing about candle".
#[test]
fn ops_rms_norm_records_no_node_so_the_gradient_stops_silently() {
    let gamma = [1.5f32, 0.5, -1.0, 2.0];
    let x = var(&spread(12), &[3, 4]);
    let g = var(&gamma, &[4]);
    let out = candle_nn::ops::rms_norm(&x, &g, 1e-6).unwrap();
    assert_close(
        "candle_nn::ops::rms_norm's values",
        &values(&out),
        &norm_rows(&spread(12), 4, &gamma, &[0.0; 4], 1e-6, false),
        1e-5,
    );
    assert_stops_silently("candle_nn::ops::rms_norm", &out, &[&x, &g]);
}

/// docs/guide.md, Task 7: "the `RmsNorm` module calls `ops::rms_norm` whenever its input is
/// contiguous, falling back to differentiable ops only for an input that is not (its
/// `forward_diff` always takes the differentiable path)". exercises/src/task7.rs, module doc;
/// tasks.toml, task7 `rms-norm`, hint 3 ("nor candle_nn::RmsNorm, which calls it on any
/// contiguous input"); README.md ("`RmsNorm` on a contiguous input").
#[test]
fn candle_nn_rms_norm_is_fused_on_a_contiguous_input_and_forward_diff_is_differentiable() {
    let gamma = [1.5f32, 0.5, -1.0, 2.0];
    let g = var(&gamma, &[4]);
    let norm = candle_nn::RmsNorm::new(g.as_tensor().clone(), 1e-6);
    let want = norm_rows(&spread(12), 4, &gamma, &[0.0; 4], 1e-6, false);

    let x = var(&spread(12), &[3, 4]);
    let fast = norm.forward(&x).unwrap();
    assert_close(
        "candle_nn::RmsNorm, contiguous",
        &values(&fast),
        &want,
        1e-5,
    );
    assert_stops_silently(
        "candle_nn::RmsNorm::forward on a contiguous input",
        &fast,
        &[&x, &g],
    );

    let diff = norm.forward_diff(&x).unwrap();
    assert_close(
        "candle_nn::RmsNorm::forward_diff",
        &values(&diff),
        &want,
        1e-5,
    );
    assert_differentiable(
        "candle_nn::RmsNorm::forward_diff on a contiguous input",
        &diff,
        &[&x, &g],
    );

    let (xt, strided) = stored_transposed(&spread(12), 3, 4);
    let slow = norm.forward(&strided).unwrap();
    assert_close("candle_nn::RmsNorm, strided", &values(&slow), &want, 1e-5);
    assert_differentiable(
        "candle_nn::RmsNorm::forward on a strided input",
        &slow,
        &[&xt, &g],
    );
}

/// docs/guide.md §1 ("the fused `rotary_emb::rope`, `rope_i` and `rope_thd`. They compute the
/// right values, and no gradient passes through them") and Task 7 ("the fused
/// `candle_nn::rotary_emb::rope` [is] applied with `apply_op*_no_bwd` and record[s] nothing");
/// exercises/src/task7.rs, module doc; tasks.toml, task7 `rope`, hint 3 ("Not
/// candle_nn::rotary_emb::rope: it is applied with apply_op3_no_bwd and records no backward");
/// README.md, "Things worth knowing about candle".
#[test]
fn fused_rope_records_no_node_so_the_gradient_stops_silently() {
    let (b, h, t, d) = (1, 2, 3, 4);
    let angles: Vec<f32> = (0..t)
        .flat_map(|p| (0..d / 2).map(move |i| p as f32 * 10000f32.powf(-2.0 * i as f32 / d as f32)))
        .collect();
    let cos_v: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
    let sin_v: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
    let (cos, sin) = (var(&cos_v, &[t, d / 2]), var(&sin_v, &[t, d / 2]));
    let xv = spread(b * h * t * d);
    let x = var(&xv, &[b, h, t, d]);

    type Rope = fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;
    let ropes: [(&str, Rope, &str, bool); 2] = [
        (
            "candle_nn::rotary_emb::rope",
            candle_nn::rotary_emb::rope,
            "dimension i turned with i + d/2",
            false,
        ),
        (
            "candle_nn::rotary_emb::rope_i",
            candle_nn::rotary_emb::rope_i,
            "dimension 2i turned with 2i + 1",
            true,
        ),
    ];
    for (name, rope, pairs, interleaved) in ropes {
        let out = rope(&x, &cos, &sin).unwrap();
        assert_close(
            &format!("{name}'s values ({pairs})"),
            &values(&out),
            &rotate(&xv, t, d, &cos_v, &sin_v, interleaved),
            1e-6,
        );
        assert_stops_silently(name, &out, &[&x, &cos, &sin]);
    }

    // rope_thd takes (B, T, H, D): the same rotation with the positions before the heads.
    let x_thd = Var::from_tensor(&x.transpose(1, 2).unwrap().contiguous().unwrap()).unwrap();
    let out = candle_nn::rotary_emb::rope_thd(&x_thd, &cos, &sin).unwrap();
    assert_close(
        "candle_nn::rotary_emb::rope_thd's values",
        &values(&out.transpose(1, 2).unwrap()),
        &rotate(&xv, t, d, &cos_v, &sin_v, false),
        1e-6,
    );
    assert_stops_silently(
        "candle_nn::rotary_emb::rope_thd",
        &out,
        &[&x_thd, &cos, &sin],
    );
}

// ---------------------------------------------------------------------------------------------
// Custom ops.
// ---------------------------------------------------------------------------------------------

/// The element-wise sum of the inputs, each contiguous f32.
fn sum_of(inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
    let mut out = f32s(inputs[0].0, inputs[0].1, "input 0")?.to_vec();
    for (s, l) in &inputs[1..] {
        for (o, v) in out.iter_mut().zip(f32s(s, l, "input")?) {
            *o += v;
        }
    }
    Ok((CpuStorage::F32(out), inputs[0].1.shape().clone()))
}

/// Custom ops that keep the traits' default `bwd`.
struct Copy1;
struct Sum2;
struct Sum3;

impl CustomOp1 for Copy1 {
    fn name(&self) -> &'static str {
        "claims-copy"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        sum_of(&[(s, l)])
    }
}

impl CustomOp2 for Sum2 {
    fn name(&self) -> &'static str {
        "claims-sum-of-two"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        sum_of(&[(s1, l1), (s2, l2)])
    }
}

impl CustomOp3 for Sum3 {
    fn name(&self) -> &'static str {
        "claims-sum-of-three"
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
        sum_of(&[(s1, l1), (s2, l2), (s3, l3)])
    }
}

fn three_vars() -> (Var, Var, Var) {
    (
        var(&[1.0, 2.0, 3.0], &[3]),
        var(&[10.0, 20.0, 30.0], &[3]),
        var(&[100.0, 200.0, 300.0], &[3]),
    )
}

/// docs/guide.md §1: "A custom op … is recorded only when it is applied with `apply_op1`,
/// `apply_op2` or `apply_op3`; `backward` then calls the op's `bwd`, and an op that kept the
/// trait's default `bwd` makes `backward` fail with `BackwardNotSupported` ("backward is not
/// supported for" the op's name)." docs/guide.md, Task 5 ("makes `backward()` fail with
/// "backward is not supported for task5-layer-norm""); exercises/src/task5.rs, module doc;
/// kit/src/ops/row_norm.rs, module doc; README.md, "Things worth knowing about candle" ("A
/// custom op of your own applied with `apply_op1/2/3` and no `bwd` is not silent: `backward()`
/// fails with `BackwardNotSupported`").
#[test]
fn a_custom_op_applied_with_apply_op_and_the_default_bwd_makes_backward_fail() {
    let (a, b, c) = three_vars();
    let outs = [
        ("apply_op1", "claims-copy", a.apply_op1(Copy1).unwrap()),
        (
            "apply_op2",
            "claims-sum-of-two",
            a.apply_op2(&b, Sum2).unwrap(),
        ),
        (
            "apply_op3",
            "claims-sum-of-three",
            a.apply_op3(&b, &c, Sum3).unwrap(),
        ),
    ];
    assert_eq!(values(&outs[2].2), [111.0, 222.0, 333.0]);
    for (how, name, out) in outs {
        assert!(out.track_op(), "{how}: the output records no graph node");
        let err = weighted_sum(&out)
            .backward()
            .expect_err("backward() through a custom op without a bwd succeeds now");
        assert!(
            matches!(err, Error::BackwardNotSupported { op } if op == name),
            "{how}: backward() fails with another error now: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("backward is not supported for {name}"),
            "{how}: the message changed"
        );
    }
}

/// docs/guide.md §1: "Applied with `apply_op1_no_bwd` (or `apply_op2_no_bwd`,
/// `apply_op3_no_bwd`), it is not recorded at all: its output is a constant to `backward`, and
/// every gradient stops there without an error." docs/guide.md, Task 5 ("Applied with
/// `apply_op3_no_bwd` … it is not recorded, and every gradient stops there without an
/// error"); exercises/src/task5.rs, module doc; kit/src/ops/row_norm.rs, module doc;
/// README.md, "Things worth knowing about candle".
#[test]
fn a_custom_op_applied_with_apply_op_no_bwd_is_a_constant_to_backward() {
    let (a, b, c) = three_vars();
    let one = a.apply_op1_no_bwd(&Copy1).unwrap();
    assert_stops_silently("apply_op1_no_bwd", &one, &[&a]);
    let two = a.apply_op2_no_bwd(&b, &Sum2).unwrap();
    assert_stops_silently("apply_op2_no_bwd", &two, &[&a, &b]);
    let three = a.apply_op3_no_bwd(&b, &c, &Sum3).unwrap();
    assert_stops_silently("apply_op3_no_bwd", &three, &[&a, &b, &c]);

    // A constant: a gradient that also reaches `a` another way keeps only that way's part.
    let loss = (weighted_sum(&one) + a.sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(values(grads.get(&a).unwrap()), [1.0, 1.0, 1.0]);
}

/// `y = 3x`, whose `bwd` keeps the gradient it is handed.
struct Triple {
    seen: Arc<Mutex<Option<Vec<f32>>>>,
}

impl CustomOp1 for Triple {
    fn name(&self) -> &'static str {
        "claims-triple"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "x")?;
        Ok((
            CpuStorage::F32(x.iter().map(|v| 3.0 * v).collect()),
            l.shape().clone(),
        ))
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        *self.seen.lock().unwrap() = Some(values(grad));
        Ok(Some((grad * 3.0)?))
    }
}

/// exercises/src/task5.rs, module doc: "candle calls its `bwd` with ∂loss/∂output and expects
/// ∂loss/∂input back"; docs/guide.md §1: "`backward` then calls the op's `bwd`".
#[test]
fn backward_calls_a_custom_ops_bwd_with_the_gradient_of_its_output() {
    let seen = Arc::new(Mutex::new(None));
    let x = var(&[1.0, -2.0, 0.5, 4.0], &[4]);
    let y = x
        .apply_op1(Triple {
            seen: Arc::clone(&seen),
        })
        .unwrap();
    assert_eq!(values(&y), [3.0, -6.0, 1.5, 12.0]);
    let grads = weighted_sum(&y).backward().unwrap();
    let w = values(&weights(&y));
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some(&w[..]),
        "bwd was not handed ∂loss/∂y"
    );
    let want: Vec<f32> = w.iter().map(|v| 3.0 * v).collect();
    assert_eq!(values(grads.get(&x).unwrap()), want);
}

/// Records what `cpu_fwd` is handed: the storage's length and where the layout says the
/// tensor's elements lie.
struct Peek {
    seen: Mutex<Option<Handed>>,
}

/// The storage's length, and the start and end of the tensor's elements in it if they are one
/// run.
type Handed = (usize, Option<(usize, usize)>);

impl CustomOp1 for Peek {
    fn name(&self) -> &'static str {
        "claims-peek"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let len = match s {
            CpuStorage::F32(v) => v.len(),
            _ => candle_core::bail!("f32 only"),
        };
        *self.seen.lock().unwrap() = Some((len, l.contiguous_offsets()));
        Ok((
            CpuStorage::F32(vec![0.0; l.shape().elem_count()]),
            l.shape().clone(),
        ))
    }
}

/// kit/src/ops/slices.rs, module doc: "candle hands a custom op each input as a `CpuStorage`
/// (a vector of one element type) and a `Layout` (where the tensor's elements lie in it). For
/// a contiguous tensor they are one run of that vector".
#[test]
fn a_custom_op_is_handed_the_whole_storage_and_a_layout_that_says_where_the_tensor_lies() {
    let whole = Tensor::arange(0f32, 12.0, &CPU)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    let peek = Peek {
        seen: Mutex::new(None),
    };
    let row = whole.narrow(0, 1, 1).unwrap();
    row.apply_op1_no_bwd(&peek).unwrap();
    assert_eq!(
        peek.seen.lock().unwrap().take(),
        Some((12, Some((4, 8)))),
        "row 1 of a (3, 4) tensor: the whole storage, and elements 4..8 of it"
    );
    whole.t().unwrap().apply_op1_no_bwd(&peek).unwrap();
    assert_eq!(
        peek.seen.lock().unwrap().take(),
        Some((12, None)),
        "a transposed tensor is no single run of its storage"
    );
}

// ---------------------------------------------------------------------------------------------
// Clones, writes in place, and what the backward pass sees of them.
// ---------------------------------------------------------------------------------------------

/// docs/guide.md §1, "Tensors are eager values": "Tensors are cheap to clone (a clone shares
/// the data), and an operation never changes its inputs: it returns a new tensor."
#[test]
fn a_clone_shares_the_data_and_an_operation_returns_a_new_tensor() {
    let a = tensor(&[1.0, 2.0, 3.0], &[3]);
    let clone = a.clone();
    assert_eq!(clone.id(), a.id(), "Tensor::clone is a new tensor now");
    a.zero_set().unwrap();
    assert_eq!(
        values(&clone),
        [0.0; 3],
        "a clone does not share the data now"
    );

    let b = tensor(&[1.0, 2.0, 3.0], &[3]);
    let sum = (&b + 1.0).unwrap();
    let exp = b.exp().unwrap();
    assert_ne!(sum.id(), b.id());
    assert_ne!(exp.id(), b.id());
    assert_eq!(
        values(&b),
        [1.0, 2.0, 3.0],
        "an operation changed its input"
    );
    sum.zero_set().unwrap();
    assert_eq!(
        values(&b),
        [1.0, 2.0, 3.0],
        "an op's result shares its input's data"
    );
}

/// Writes into y = `scale`·x in place with `write`, x a variable holding `x`, and asserts what
/// the guide says of every such write: y, and a clone of y taken before the write, hold
/// `written` after it; the backward pass ignores it, so ∂/∂x is that of y = `scale`·x
/// everywhere, the written positions included. Returns y and its gradients.
#[track_caller]
fn assert_written_in_place_and_not_recorded(
    what: &str,
    x: &[f32],
    scale: f64,
    write: impl FnOnce(&Tensor),
    written: &[f32],
) -> (Tensor, GradStore) {
    let x = var(x, &[x.len()]);
    let y = x.affine(scale, 0.0).unwrap();
    let clone = y.clone();
    write(&y);
    assert_eq!(values(&y), written, "{what}: not what was written");
    assert_eq!(
        values(&clone),
        written,
        "{what}: the write does not show through a clone, so it is not in place now"
    );
    let grads = weighted_sum(&y).backward().unwrap();
    let want: Vec<f32> = values(&weights(&y))
        .iter()
        .map(|w| scale as f32 * w)
        .collect();
    assert_eq!(
        values(grads.get(&x).unwrap()),
        want,
        "{what}: ∂/∂x is not that of y = {scale}·x everywhere, the written positions included: \
         the backward pass sees the write now"
    );
    (y, grads)
}

/// docs/guide.md §1: "Only a few calls write into a tensor's storage in place, and the backward
/// pass records none of them: … `Tensor::slice_set`, which copies a tensor into a range of
/// another along one dimension … A write in place shows through every clone of the tensor
/// written." What the backward pass then does: it follows the node the written tensor already
/// had, as if the write had not happened, and the tensor copied in receives no gradient.
#[test]
fn slice_set_writes_in_place_and_the_backward_pass_ignores_the_write() {
    let src = var(&[10.0, 20.0], &[2]);
    let (y, grads) = assert_written_in_place_and_not_recorded(
        "slice_set",
        &[1.0, 2.0, 3.0, 4.0],
        2.0,
        |y| y.slice_set(&src, 0, 1).unwrap(),
        &[2.0, 10.0, 20.0, 8.0],
    );
    assert!(y.track_op(), "y keeps the node it had");
    assert!(
        grads.get(&src).is_none(),
        "slice_set's source receives a gradient now"
    );
}

/// docs/guide.md §1: "`zero_set`, `one_set` and `const_set`, which fill a tensor" write in
/// place, "the backward pass records none of them", and "A write in place shows through every
/// clone of the tensor written."
#[test]
fn zero_set_one_set_and_const_set_fill_in_place_and_the_backward_pass_ignores_the_fill() {
    type Fill = fn(&Tensor) -> Result<()>;
    let fills: [(&str, Fill, f32); 3] = [
        ("zero_set", |t| t.zero_set(), 0.0),
        ("one_set", |t| t.one_set(), 1.0),
        ("const_set", |t| t.const_set(7f32.into()), 7.0),
    ];
    for (name, fill, value) in fills {
        assert_written_in_place_and_not_recorded(
            name,
            &[1.0, 2.0, 3.0],
            2.0,
            |y| fill(y).unwrap(),
            &[value; 3],
        );
    }
}

/// docs/guide.md §1: "`Var::set`, which an optimiser uses", writes in place; "the backward pass
/// records none of them"; "A write in place shows through every clone". What that means for a
/// gradient: a node keeps its inputs as tensors that share their storage, so a `Var::set`
/// between forward and backward changes what backward computes. `loss = Σ x²` taken at
/// x = (1, 2, 3), then x set to (10, 20, 30): backward gives 2·(10, 20, 30).
#[test]
fn var_set_writes_in_place_and_a_later_backward_reads_the_new_value() {
    let x = var(&[1.0, 2.0, 3.0], &[3]);
    let clone = x.as_tensor().clone();
    let loss = x.sqr().unwrap().sum_all().unwrap();
    x.set(&tensor(&[10.0, 20.0, 30.0], &[3])).unwrap();
    assert_eq!(
        values(&clone),
        [10.0, 20.0, 30.0],
        "Var::set is not in place now"
    );
    assert_eq!(values(&loss), [14.0], "a computed value changed");
    let grads = loss.backward().unwrap();
    assert_eq!(
        values(grads.get(&x).unwrap()),
        [20.0, 40.0, 60.0],
        "backward reads x as it is when backward runs"
    );
}

struct Double;

impl InplaceOp1 for Double {
    fn name(&self) -> &'static str {
        "claims-double"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| Error::Msg("contiguous only".into()))?;
        match s {
            CpuStorage::F32(v) => v[start..end].iter_mut().for_each(|x| *x *= 2.0),
            _ => candle_core::bail!("f32 only"),
        }
        Ok(())
    }
}

/// docs/guide.md §1: "in-place custom ops (`inplace_op1`, `inplace_op2`, `inplace_op3`), which
/// kit's `Adam` uses to update every parameter and its moments in one pass" write in place,
/// the backward pass records none of them, and the write shows through every clone.
#[test]
fn an_inplace_op_writes_through_every_clone_and_is_not_recorded() {
    assert_written_in_place_and_not_recorded(
        "inplace_op1",
        &[1.0, 2.0, 3.0],
        3.0,
        |y| y.inplace_op1(&Double).unwrap(),
        &[6.0, 12.0, 18.0],
    );
}

/// docs/guide.md, Task 6: "`KvCache` allocates room for a given number of positions at its
/// first append and writes each new chunk into that buffer in place with `Tensor::slice_set`
/// (growing it by as much again when it is full)"; §1: "candle-nn's `KvCache` and
/// `RotatingKvCache` store their keys and values with `slice_set`", which the backward pass
/// does not record: what comes out of the cache carries no gradient back.
#[test]
fn kv_cache_writes_each_chunk_in_place_and_grows_by_its_first_size() {
    let chunk = |first: f32, n: usize| -> Var {
        let v: Vec<f32> = (0..n).flat_map(|i| [first + i as f32; 2]).collect();
        var(&v, &[1, 1, n, 2])
    };
    let mut cache = KvCache::new(2, 3);
    let k0 = chunk(1.0, 2);
    cache.append(&k0, &k0).unwrap();
    let buffer = cache
        .k_cache()
        .all_data()
        .clone()
        .expect("a buffer after the first append");
    assert_eq!(
        buffer.dims(),
        [1, 1, 3, 2],
        "room for 3 positions at the first append"
    );

    let k1 = chunk(3.0, 1);
    cache.append(&k1, &k1).unwrap();
    assert_eq!(
        values(&buffer),
        [1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
        "the new chunk is written into the same buffer"
    );

    let k2 = chunk(4.0, 2);
    let (k, _) = cache.append(&k2, &k2).unwrap();
    assert_eq!(
        cache.k_cache().max_seq_len(),
        6,
        "a full buffer grows by 3 more"
    );
    assert_eq!(
        cache.k_cache().all_data().as_ref().unwrap().dims(),
        [1, 1, 6, 2]
    );
    assert_eq!(
        values(&k),
        [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0]
    );
    assert_stops_silently("KvCache::append's keys", &k, &[&k0, &k1, &k2]);
}

/// docs/guide.md, Task 6: "`RotatingKvCache` keeps a ring of a fixed number of positions, each
/// new one written over the oldest."
#[test]
fn rotating_kv_cache_writes_each_new_position_over_the_oldest() {
    let mut cache = RotatingKvCache::new(2, 3);
    let mut last = None;
    for p in 0..4 {
        let k = tensor(&[p as f32], &[1, 1, 1, 1]);
        last = Some(cache.append(&k, &k).unwrap().0);
    }
    assert_eq!(
        values(&last.unwrap()),
        [3.0, 1.0, 2.0],
        "position 3 is written over position 0, the oldest"
    );
}

// ---------------------------------------------------------------------------------------------
// The random generator.
// ---------------------------------------------------------------------------------------------

/// README.md, "Things worth knowing about candle": "candle's CPU random generator cannot be
/// seeded (`Device::Cpu.set_seed(…)` returns an error)". kit/src/init.rs, module doc: "candle's
/// CPU random generator cannot be seeded (`Device::set_seed` fails on the CPU), so a `VarMap`
/// gives different weights on every run."
#[test]
fn the_cpu_random_generator_cannot_be_seeded_so_a_var_map_draws_new_weights_each_time() {
    let err = Device::Cpu
        .set_seed(0)
        .expect_err("Device::Cpu.set_seed succeeds now: kit's SeededVarMap may not be needed");
    assert!(
        err.to_string().contains("cannot seed the CPU rng"),
        "another error: {err}"
    );
    let draw = || {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &CPU);
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        values(&vb.get_with_hints(16, "w", init).unwrap())
    };
    assert_ne!(draw(), draw(), "two VarMaps drew the same weights");
}

// ---------------------------------------------------------------------------------------------
// Optimisers, variables and gradient stores.
// ---------------------------------------------------------------------------------------------

const LR: f64 = 0.1;
const B1: f64 = 0.9;
const B2: f64 = 0.999;
const EPS: f64 = 1e-8;

fn adamw_without_decay(vars: Vec<Var>) -> AdamW {
    let params = ParamsAdamW {
        lr: LR,
        beta1: B1,
        beta2: B2,
        eps: EPS,
        weight_decay: 0.0,
    };
    AdamW::new(vars, params).unwrap()
}

/// `Σ var ⊙ g`, whose gradient with respect to `var` is `g`.
fn gradient_of(var: &Var, g: &[f32]) -> Tensor {
    (var.as_tensor() * tensor(g, var.dims()))
        .unwrap()
        .sum_all()
        .unwrap()
}

/// docs/guide.md §1, "Optimisers consume a `GradStore`": "The challenge uses plain Adam;
/// candle-nn's `AdamW` with `weight_decay: 0.0` is the same thing"; "`opt.step(&grads)`
/// updates every `Var` it was given" (in place, with `Var::set`: a clone taken before shows the
/// update). kit/src/adam.rs, module doc ("The maths is the same … the challenge's
/// `optax.adam`").
#[test]
fn adamw_without_weight_decay_is_plain_adam_and_updates_its_vars_in_place() {
    let theta0 = [0.5f32, -1.0, 2.0];
    let w = var(&theta0, &[3]);
    let clone = w.as_tensor().clone();
    let mut opt = adamw_without_decay(vec![w.clone()]);
    let gs = [[0.3f32, -2.0, 0.01], [-0.1, -1.0, 0.02]];
    let (mut m, mut v, mut theta) = ([0f64; 3], [0f64; 3], theta0.map(f64::from));
    for (t, g) in gs.iter().enumerate() {
        let grads = gradient_of(&w, g).backward().unwrap();
        opt.step(&grads).unwrap();
        let t = t as i32 + 1;
        for i in 0..3 {
            let g = g[i] as f64;
            m[i] = B1 * m[i] + (1.0 - B1) * g;
            v[i] = B2 * v[i] + (1.0 - B2) * g * g;
            let (mh, vh) = (m[i] / (1.0 - B1.powi(t)), v[i] / (1.0 - B2.powi(t)));
            theta[i] -= LR * mh / (vh.sqrt() + EPS);
        }
        let want: Vec<f32> = theta.iter().map(|&x| x as f32).collect();
        assert_close(&format!("AdamW, update {t}"), &values(&w), &want, 1e-6);
    }
    assert_eq!(
        values(&clone),
        values(&w),
        "AdamW::step does not write in place now"
    );
}

/// docs/guide.md, Task 4: Adam "as candle-nn's `AdamW` does, leaving alone a parameter the
/// store has no gradient for"; exercises/src/task4.rs, module doc: "A parameter without a
/// gradient in the store is left as it is, and so are its moments: the convention of
/// candle-nn's `AdamW`." The update count t still grows: b's first update, at t = 2, is that of
/// moments starting from zero with t = 2's bias correction.
#[test]
fn adamw_leaves_a_parameter_without_a_gradient_and_its_moments_as_they_are() {
    let a = var(&[0.5, -0.5], &[2]);
    let b0 = [1.0f32, -2.0];
    let b = var(&b0, &[2]);
    let mut opt = adamw_without_decay(vec![a.clone(), b.clone()]);
    let grads = gradient_of(&a, &[1.0, 1.0]).backward().unwrap();
    assert!(grads.get(&b).is_none());
    opt.step(&grads).unwrap();
    assert_eq!(
        values(&b),
        b0,
        "AdamW moved a parameter that had no gradient"
    );
    assert_ne!(values(&a), [0.5, -0.5]);

    let gb = [0.4f32, -3.0];
    let loss = (gradient_of(&a, &[1.0, 1.0]) + gradient_of(&b, &gb)).unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
    let t = 2;
    let want: Vec<f32> = (0..2)
        .map(|i| {
            let g = gb[i] as f64;
            let mh = (1.0 - B1) * g / (1.0 - B1.powi(t));
            let vh = (1.0 - B2) * g * g / (1.0 - B2.powi(t));
            (b0[i] as f64 - LR * mh / (vh.sqrt() + EPS)) as f32
        })
        .collect();
    assert_close(
        "b's first update, at t = 2, from zero moments",
        &values(&b),
        &want,
        1e-6,
    );
}

/// docs/guide.md §1: "`opt.backward_step(&loss)` does both steps" (`loss.backward()` and
/// `opt.step(&grads)`).
#[test]
fn backward_step_is_backward_then_step() {
    let (x1, x2) = (var(&[1.0, -2.0], &[2]), var(&[1.0, -2.0], &[2]));
    let mut one = SGD::new(vec![x1.clone()], 0.1).unwrap();
    let mut other = SGD::new(vec![x2.clone()], 0.1).unwrap();
    one.backward_step(&x1.sqr().unwrap().sum_all().unwrap())
        .unwrap();
    let grads = x2.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    other.step(&grads).unwrap();
    assert_eq!(values(&x1), values(&x2));
    assert_close("SGD's step", &values(&x1), &[0.8, -1.6], 1e-6);
}

/// docs/guide.md §1, "Parameters are `Var`s, found through a `VarBuilder`": "its constructor
/// receives a `VarBuilder`, asks it for a tensor of some name and shape, and the builder
/// creates it (from an initialiser) or finds it. `vb.pp("attn")` returns a builder whose names
/// start with `attn.`, so a model's parameters end up with names like
/// `h.0.attn.heads.1.query.weight`." tasks.toml, task1 `attention-new`, hint 3
/// (`vb.pp(format!("heads.{i}"))` gives head i its names).
#[test]
fn a_var_builder_prefixes_names_with_pp_and_creates_or_finds_each_variable() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &CPU);
    let head = vb
        .pp("h")
        .pp(0)
        .pp("attn")
        .pp(format!("heads.{}", 1))
        .pp("query");
    let w = head
        .get_with_hints((2, 3), "weight", Init::Const(1.0))
        .unwrap();
    let names: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
    assert_eq!(names, ["h.0.attn.heads.1.query.weight"]);
    assert_eq!(values(&w), [1.0; 6], "created from the initialiser");

    let again = head
        .get_with_hints((2, 3), "weight", Init::Const(5.0))
        .unwrap();
    assert_eq!(
        again.id(),
        w.id(),
        "asked again, the builder finds the same variable"
    );
    assert_eq!(map.all_vars().len(), 1);
    let err = head
        .get_with_hints((3, 2), "weight", Init::Const(1.0))
        .expect_err("another shape under the same name is accepted now");
    assert!(err.to_string().contains("shape mismatch"), "{err}");

    // What the layer holds is the Var's tensor: an optimiser's write shows in the layer.
    map.data().lock().unwrap()["h.0.attn.heads.1.query.weight"]
        .set(&tensor(&[2.0; 6], &[2, 3]))
        .unwrap();
    assert_eq!(values(&w), [2.0; 6]);
}

/// docs/guide.md §1: "`grads.get(&var)` is ∂loss/∂var"; tasks.toml, task4 `adam`, hint 3
/// ("grads.get(var) is the gradient or None") and `clip`, hint 3 ("grads.remove(var) takes a
/// gradient out and grads.insert(var, scaled) puts one back").
#[test]
fn a_grad_store_gets_removes_and_inserts_gradients_by_variable() {
    let (x, unused) = (var(&[1.0, 2.0], &[2]), var(&[3.0], &[1]));
    let mut grads = x.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(values(grads.get(&x).unwrap()), [2.0, 4.0]);
    assert!(grads.get(&unused).is_none());
    let g = grads.remove(&x).unwrap();
    assert!(
        grads.get(&x).is_none(),
        "remove leaves the gradient in the store"
    );
    grads.insert(&x, (g * 0.5).unwrap());
    assert_eq!(values(grads.get(&x).unwrap()), [1.0, 2.0]);
}

/// tasks.toml, task4 `cross-entropy`, hint 3: "logits.max_keepdim(D::Minus1)? is each row's
/// max as (B, T, 1) (.detach() it: the shift needs no gradient)"; checks' gradient messages
/// name "a `detach`" among what stops a gradient. `Tensor::detach` shares the data and records
/// no node.
#[test]
fn detach_shares_the_data_and_stops_the_gradient() {
    let x = var(&[1.0, 5.0, 2.0], &[1, 1, 3]);
    let max = x.max_keepdim(D::Minus1).unwrap();
    assert_eq!(max.dims(), [1, 1, 1]);
    let detached = max.detach();
    assert_eq!(values(&detached), [5.0]);
    assert_stops_silently("Tensor::detach", &detached, &[&x]);
    let y = x.affine(1.0, 0.0).unwrap();
    let d = y.detach();
    y.zero_set().unwrap();
    assert_eq!(values(&d), [0.0; 3], "detach copies the data now");
}

/// docs/guide.md §1: "candle's own operations record themselves"; exercises/src/task5.rs,
/// module doc ("candle differentiates the tensor ops you have used so far");
/// exercises/src/task4.rs, module doc ("Written with candle's differentiable ops, its gradient
/// comes from `loss.backward()`");
/// docs/guide.md, Task 5 ("candle can differentiate `(x − mean) / sqrt(var + eps)` written with
/// its own ops") and Task 7 ("Write them with candle's differentiable ops"). Each op the hints
/// name, on an f64 input, against central differences.
#[test]
fn the_ops_the_hints_name_record_themselves_with_the_right_gradient() {
    type Op = fn(&Tensor) -> Result<Tensor>;
    let ops: [(&str, Op); 19] = [
        ("matmul and t", |x| x.matmul(&x.t()?)),
        ("transpose, contiguous and reshape", |x| {
            x.transpose(1, 2)?.contiguous()?.reshape((2, 12))
        }),
        ("exp", |x| x.exp()),
        ("sqr and log", |x| (x.sqr()? + 1.0)?.log()),
        ("sqrt", |x| (x.sqr()? + 1.0)?.sqrt()),
        ("sum_keepdim and broadcast_div", |x| {
            x.broadcast_div(&(x.sqr()?.sum_keepdim(D::Minus1)? + 1.0)?)
        }),
        ("mean_keepdim and broadcast_sub", |x| {
            x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)
        }),
        ("max_keepdim", |x| x.max_keepdim(D::Minus1)),
        ("broadcast_mul and broadcast_add", |x| {
            x.broadcast_mul(&x.narrow(2, 0, 1)?)?
                .broadcast_add(&x.narrow(1, 0, 1)?)
        }),
        ("gather", |x| {
            let idx = Tensor::new(&[[[1u32], [3], [0]], [[2], [2], [1]]], x.device())?;
            x.gather(&idx, D::Minus1)
        }),
        ("narrow and cat", |x| {
            Tensor::cat(&[x.narrow(2, 2, 2)?, x.narrow(2, 0, 1)?], 2)
        }),
        ("i", |x| x.i((1, 2))),
        ("where_cond with tril2, then softmax", |x| {
            let s = x.narrow(2, 0, 3)?;
            let mask = Tensor::tril2(3, DType::U8, x.device())?.broadcast_as(s.shape())?;
            let minus_infinity = Tensor::full(f64::NEG_INFINITY, s.shape(), x.device())?;
            candle_nn::ops::softmax(&mask.where_cond(&s, &minus_infinity)?, D::Minus1)
        }),
        ("candle_nn::ops::softmax", |x| {
            candle_nn::ops::softmax(x, D::Minus1)
        }),
        ("silu", |x| candle_nn::ops::silu(x)),
        ("affine and neg", |x| x.affine(3.0, 1.0)?.neg()),
        ("index_select (Embedding)", |x| {
            let ids = Tensor::new(&[5u32, 0, 5, 2], x.device())?;
            x.reshape((6, 4))?.index_select(&ids, 0)
        }),
        ("mean_all", |x| x.sqr()?.mean_all()),
        ("(x − mean) / sqrt(var + eps)", |x| {
            let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            centred.broadcast_div(&(var + 1e-5)?.sqrt()?)
        }),
    ];
    let x0: Vec<f64> = spread(24).iter().map(|&v| v as f64).collect();
    let input = |v: &[f64]| Tensor::from_slice(v, (2, 3, 4), &CPU).unwrap();
    let loss =
        |op: Op, x: &Tensor| -> f64 { weighted_sum(&op(x).unwrap()).to_scalar::<f64>().unwrap() };
    let h = 1e-6;
    for (name, op) in ops {
        let x = Var::from_tensor(&input(&x0)).unwrap();
        let out = op(&x).unwrap();
        assert!(out.track_op(), "{name}: records no graph node now");
        let grads = weighted_sum(&out).backward().unwrap();
        let got: Vec<f64> = grads
            .get(&x)
            .unwrap_or_else(|| panic!("{name}: no gradient reaches the input now"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for i in 0..x0.len() {
            let at = |delta: f64| {
                let mut v = x0.clone();
                v[i] += delta;
                loss(op, &input(&v))
            };
            let want = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (got[i] - want).abs() < 1e-6 * (1.0 + want.abs()),
                "{name}: ∂loss/∂x[{i}] is {} by backward and {want} by central differences",
                got[i]
            );
        }
    }
}

/// tasks.toml, task7 `swiglu`, hint 3 ("candle_nn::ops::silu(&t)?"), exercises/src/task7.rs,
/// module doc ("`silu(z) = z · sigmoid(z)`"), and docs/guide.md Task 7 ("Every part must be
/// differentiable").
#[test]
fn candle_nn_silu_is_z_times_sigmoid_z() {
    let z = spread(8);
    let out = candle_nn::ops::silu(&tensor(&z, &[8])).unwrap();
    let want: Vec<f32> = z.iter().map(|v| v / (1.0 + (-v).exp())).collect();
    assert_close("candle_nn::ops::silu", &values(&out), &want, 1e-6);
}

/// tasks.toml, warmup `forward`, hint 3: "candle_nn::Embedding implements Module, so
/// `self.token_embedding.forward(xs)` looks up every id at once"; docs/guide.md, the warm-up
/// ("forward looks up the rows, (B, T) → (B, T, 65)"; graded by "the table receives a
/// gradient").
#[test]
fn an_embedding_looks_up_one_row_per_id_and_its_table_receives_a_gradient() {
    let table = var(&spread(12), &[4, 3]);
    let emb = candle_nn::Embedding::new(table.as_tensor().clone(), 3);
    let ids = Tensor::new(&[[2u32, 0], [2, 3]], &CPU).unwrap();
    let out = emb.forward(&ids).unwrap();
    assert_eq!(out.dims(), [2, 2, 3]);
    let rows = spread(12);
    let want: Vec<f32> = [2, 0, 2, 3]
        .iter()
        .flat_map(|&r| rows[3 * r..3 * r + 3].to_vec())
        .collect();
    assert_eq!(values(&out), want);
    let grads = assert_differentiable("candle_nn::Embedding::forward", &out, &[&table]);
    let g = values(grads.get(&table).unwrap());
    assert_eq!(&g[3..6], [0.0; 3], "row 1, never looked up, has a gradient");
}

/// tasks.toml: task2 `forward`, hint 3 ("q.matmul(&k.t()?)? is q kᵀ (t() swaps the last two
/// dimensions); Tensor::tril2(t, DType::U8, device)? is 1 on and below the diagonal;
/// broadcast_as(scores.shape())? spreads it over the batch; mask.where_cond(&scores,
/// &minus_infinity)? keeps the scores where the mask is 1"); task1 `attention`, hint 3
/// ("Tensor::cat(&outs, D::Minus1) joins tensors along the last dimension"); task1
/// `model`, hint 3 (arange, "broadcast_add adds (T, C) to every row of (B, T, C)");
/// task1 `generate`, hint 3 ("logits.i((0, t - 1))? … takes the last position"); task6
/// `append` and task7 `cache`, hint 3 (`Tensor::cat(&[&cached, &new], 2)`, "k.narrow(2, drop,
/// len - drop)? keeps the last len − drop positions"); task6 `attention`, hint 3
/// ("y.reshape((b, t, n, h))?.transpose(1, 2)?.contiguous()? splits the heads", head i owning
/// columns i·h..(i+1)·h).
#[test]
fn the_tensor_calls_of_the_attention_hints_do_what_the_hints_say() {
    // t() swaps the last two dimensions; matmul is batched over the first.
    let q = tensor(&spread(12), &[2, 3, 2]);
    let qt = q.t().unwrap();
    assert_eq!(qt.dims(), [2, 2, 3]);
    let (qv, qtv) = (values(&q), values(&qt.contiguous().unwrap()));
    assert_eq!(
        qtv[3 + 2],
        qv[2 * 2 + 1],
        "qᵀ[b=0, i=1, j=2] is q[b=0, 2, 1]"
    );
    assert_eq!(q.matmul(&qt).unwrap().dims(), [2, 3, 3]);

    // tril2, broadcast_as, where_cond.
    let mask = Tensor::tril2(3, DType::U8, &CPU).unwrap();
    assert_eq!(
        mask.to_vec2::<u8>().unwrap(),
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    );
    let scores = tensor(&spread(18), &[2, 3, 3]);
    let minus_infinity = Tensor::full(f32::NEG_INFINITY, (2, 3, 3), &CPU).unwrap();
    let masked = mask
        .broadcast_as(scores.shape())
        .unwrap()
        .where_cond(&scores, &minus_infinity)
        .unwrap();
    let (s, m) = (values(&scores), values(&masked));
    for (i, (sv, mv)) in s.iter().zip(&m).enumerate() {
        let (row, col) = ((i / 3) % 3, i % 3);
        let want = if col <= row { *sv } else { f32::NEG_INFINITY };
        assert_eq!(*mv, want, "where_cond at batch {}, ({row}, {col})", i / 9);
    }

    // cat along the last dimension, first tensor first.
    let (h0, h1) = (tensor(&[1.0, 2.0], &[1, 1, 2]), tensor(&[3.0], &[1, 1, 1]));
    assert_eq!(
        values(&Tensor::cat(&[&h0, &h1], D::Minus1).unwrap()),
        [1.0, 2.0, 3.0]
    );

    // arange and broadcast_add of (T, C) to every row of (B, T, C).
    let pos = Tensor::arange(0u32, 3, &CPU).unwrap();
    assert_eq!(pos.to_vec1::<u32>().unwrap(), [0, 1, 2]);
    let tc = tensor(&spread(6), &[3, 2]);
    let btc = Tensor::zeros((2, 3, 2), DType::F32, &CPU).unwrap();
    let sum = btc.broadcast_add(&tc).unwrap();
    assert_eq!(values(&sum.i(0).unwrap()), values(&tc));
    assert_eq!(values(&sum.i(1).unwrap()), values(&tc));

    // i((0, t - 1)) is the last position's row of logits.
    let logits = tensor(&spread(12), &[1, 3, 4]);
    assert_eq!(values(&logits.i((0, 2)).unwrap()), spread(12)[8..].to_vec());

    // cat along the positions, narrow keeps the last ones.
    let cached = tensor(&[0.0, 1.0, 2.0], &[1, 1, 3, 1]);
    let new = tensor(&[3.0, 4.0], &[1, 1, 2, 1]);
    let all = Tensor::cat(&[&cached, &new], 2).unwrap();
    assert_eq!(all.dims(), [1, 1, 5, 1]);
    assert_eq!(values(&all.narrow(2, 2, 3).unwrap()), [2.0, 3.0, 4.0]);

    // reshape, transpose(1, 2): head i owns columns i·h..(i+1)·h.
    let (b, t, n, h) = (1, 2, 3, 2);
    let y = Tensor::arange(0f32, 12.0, &CPU)
        .unwrap()
        .reshape((b, t, n * h))
        .unwrap();
    let heads = y
        .reshape((b, t, n, h))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    assert_eq!(heads.dims(), [1, 3, 2, 2]);
    assert_eq!(
        values(&heads.i((0, 1)).unwrap()),
        [2.0, 3.0, 8.0, 9.0],
        "head 1 holds columns 2..4 of both positions"
    );
}

/// tasks.toml, task4 `cross-entropy`, hints 2 and 3: "exp(1000) is infinite in f32";
/// "logits.max_keepdim(D::Minus1)? is each row's max as (B, T, 1)"; "targets.unsqueeze(
/// D::Minus1)? with .gather(&idx, D::Minus1)? picks each row's target".
#[test]
fn the_tensor_calls_of_the_cross_entropy_hints_do_what_the_hints_say() {
    let big = tensor(&[1000.0, 10.0], &[2]);
    let e = values(&big.exp().unwrap());
    assert!(e[0].is_infinite() && e[1].is_finite(), "exp in f32: {e:?}");

    let logits = tensor(&spread(12), &[2, 2, 3]);
    let max = logits.max_keepdim(D::Minus1).unwrap();
    assert_eq!(max.dims(), [2, 2, 1]);
    let want: Vec<f32> = spread(12)
        .chunks(3)
        .map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    assert_eq!(values(&max), want);

    let targets = Tensor::new(&[[2u32, 0], [1, 1]], &CPU).unwrap();
    let picked = logits
        .gather(&targets.unsqueeze(D::Minus1).unwrap(), D::Minus1)
        .unwrap();
    assert_eq!(picked.dims(), [2, 2, 1]);
    let l = spread(12);
    assert_eq!(values(&picked), [l[2], l[3], l[7], l[10]]);
}

/// docs/guide.md §1: "Shapes are checked at run time, so every operation that can fail returns
/// a `candle_core::Result` … (accessors such as `dims()` and `shape()` cannot fail and return
/// plain values): the `?` after each call is where a shape mistake surfaces, with the offending
/// shapes in the message."
#[test]
fn a_shape_mistake_is_an_error_that_names_both_shapes() {
    let a = Tensor::zeros((2, 3), DType::F32, &CPU).unwrap();
    let dims: &[usize] = a.dims();
    let shape: &Shape = a.shape();
    assert_eq!((dims, shape.dims()), (&[2, 3][..], &[2, 3][..]));

    let b = Tensor::zeros((4, 5), DType::F32, &CPU).unwrap();
    let err = a
        .matmul(&b)
        .expect_err("a (2, 3) · (4, 5) product")
        .to_string();
    assert!(err.contains("[2, 3]") && err.contains("[4, 5]"), "{err}");
    let c = Tensor::zeros((3, 2), DType::F32, &CPU).unwrap();
    let err = (&a + &c).expect_err("(2, 3) + (3, 2)").to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
}

/// README.md, "Things worth knowing about candle": "a model trained by kit must be `Sync`, as
/// any struct of tensors is"; kit's training loop differentiates the halves of a batch side by
/// side and hands their gradient stores back (kit/src/train/parallel.rs).
#[test]
fn tensors_vars_and_gradient_stores_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Tensor>();
    shared::<Var>();
    shared::<GradStore>();
    shared::<candle_nn::Embedding>();
}

/// README.md, "Things worth knowing about candle": "`.cargo/config.toml` sets
/// `RAYON_NUM_THREADS=1` and `CANDLE_NUM_THREADS=1` for cargo commands: on tensors this small,
/// candle's threads spend longer waiting for each other than computing"; kit/src/ops/pool.rs
/// ("candle's own kernels stay on one thread (see `.cargo/config.toml`)"). candle 0.11's CPU
/// kernels take their thread count from `RAYON_NUM_THREADS`
/// (`candle_core::utils::get_num_threads`).
#[test]
fn candles_cpu_kernels_take_their_thread_count_from_rayon_num_threads() {
    let Some(n) = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
    else {
        // Run outside cargo, without the variable: nothing to compare.
        return;
    };
    assert_eq!(candle_core::utils::get_num_threads(), n);
}

// ---------------------------------------------------------------------------------------------
// Task 9: GELU's two forms, and what a VarBuilder says of a tensor it does not hold as asked.
// ---------------------------------------------------------------------------------------------

/// exercises/src/task9.rs, module doc ("candle's `Tensor::gelu` computes it [the tanh
/// approximation], and `Tensor::gelu_erf` the exact `x·Φ(x)`, which differs by up to about
/// 5e-4"); docs/guide.md, Task 9; tasks.toml, task9 `mlp`, hint 3.
#[test]
fn gelu_is_the_tanh_approximation_and_gelu_erf_the_exact_one() {
    let x = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0];
    let tanh: Vec<f32> = x
        .iter()
        .map(|&v| {
            let v = f64::from(v);
            let k = (2.0 / std::f64::consts::PI).sqrt();
            (0.5 * v * (1.0 + (k * (v + 0.044715 * v.powi(3))).tanh())) as f32
        })
        .collect();
    let t = tensor(&x, &[7]);
    assert_close("Tensor::gelu", &values(&t.gelu().unwrap()), &tanh, 1e-6);
    // x·Φ(x) with scipy.special.erf: at -3, -1, -0.5, 0, 0.5, 1, 2.
    let exact = [
        -0.004_049_694_f32,
        -0.158_655_25,
        -0.154_268_73,
        0.0,
        0.345_731_27,
        0.841_344_7,
        1.954_499_7,
    ];
    let erf = values(&t.gelu_erf().unwrap());
    assert_close("Tensor::gelu_erf", &erf, &exact, 1e-6);
    let apart = erf
        .iter()
        .zip(&tanh)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(apart > 1e-4 && apart < 5e-4, "{apart}");
}

/// exercises/src/task9.rs, module doc ("Loaded as it is stored, a square weight
/// (`attn.c_proj`) loads without a complaint"); docs/guide.md, Task 9 ("Asked for in Dense's
/// shape, a non-square weight is refused by the loader"); tasks.toml, task9 `conv1d`, hint 2.
/// A VarBuilder over tensors checks the shape asked for against the one it holds, and nothing
/// else.
#[test]
fn a_var_builder_refuses_a_weight_asked_for_in_another_shape_and_only_then() {
    let held = |shape: &[usize]| {
        let n = shape.iter().product();
        let ts = std::collections::HashMap::from([("w".to_string(), tensor(&spread(n), shape))]);
        VarBuilder::from_tensors(ts, DType::F32, &CPU)
    };
    let e = held(&[3, 5]).get((5, 3), "w").unwrap_err().to_string();
    assert!(e.contains("shape mismatch for w"), "{e}");
    assert!(held(&[4, 4]).get((4, 4), "w").is_ok());
    assert!(held(&[4, 4]).contains_tensor("w") && !held(&[4, 4]).contains_tensor("v"));
}
