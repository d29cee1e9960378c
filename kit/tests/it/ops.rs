//! The fused ops against their composed versions and against finite differences.
//!
//! Each check builds a scalar `L = Σ op(inputs) ⊙ W` with a fixed random `W`, so that every
//! output element carries a different weight, and compares ∂L/∂input three ways: the fused op's
//! backward, the composed op's backward (candle's autodiff), and central differences.

use candle_core::{D, DType, Device, Result, Tensor, Var};
use kit::ops::row_norm::{BLOCK_ROWS, RowNorm};
use kit::ops::{self, composed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// ∂L/∂inputs[k] by central differences, for every element of every input.
fn finite_differences(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    h: f32,
) -> Vec<Vec<f32>> {
    inputs
        .iter()
        .enumerate()
        .map(|(k, input)| {
            let base = values(input);
            (0..base.len())
                .map(|i| {
                    let at = |delta: f32| -> f64 {
                        let mut v = base.clone();
                        v[i] += delta;
                        let mut args = inputs.to_vec();
                        args[k] = Tensor::from_vec(v, input.shape(), &Device::Cpu).unwrap();
                        f(&args)
                            .unwrap()
                            .to_dtype(DType::F64)
                            .unwrap()
                            .to_scalar::<f64>()
                            .unwrap()
                    };
                    ((at(h) - at(-h)) / (2.0 * h as f64)) as f32
                })
                .collect()
        })
        .collect()
}

/// Gradients of `f` with respect to each input, through candle's backward pass.
fn backward(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Vec<Vec<f32>> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = f(&args).unwrap().backward().unwrap();
    vars.iter()
        .map(|v| values(grads.get(v).expect("every input receives a gradient")))
        .collect()
}

fn assert_close(what: &str, a: &[Vec<f32>], b: &[Vec<f32>], tol: f32) {
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            assert!(
                (p - q).abs() <= tol * (1.0 + q.abs()),
                "{what}: input {k}, element {i}: {p} vs {q}"
            );
        }
    }
}

/// Checks a fused op against the composed one (values and gradients) and against finite
/// differences.
fn check(
    name: &str,
    fused: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    reference: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    out_weights: &Tensor,
) {
    let fused_l = |args: &[Tensor]| (fused(args)?.broadcast_mul(out_weights))?.sum_all();
    let reference_l = |args: &[Tensor]| (reference(args)?.broadcast_mul(out_weights))?.sum_all();
    let (y_fused, y_ref) = (fused(inputs).unwrap(), reference(inputs).unwrap());
    assert_eq!(y_fused.dims(), y_ref.dims(), "{name}: output shapes");
    let d = max_abs_diff(&y_fused, &y_ref);
    assert!(
        d < 1e-5,
        "{name}: forward differs from the composed op by {d}"
    );
    let g_fused = backward(&fused_l, inputs);
    let g_ref = backward(&reference_l, inputs);
    assert_close(
        &format!("{name} backward vs composed"),
        &g_fused,
        &g_ref,
        1e-4,
    );
    let g_fd = finite_differences(&fused_l, inputs, 1e-2);
    assert_close(
        &format!("{name} backward vs finite differences"),
        &g_fused,
        &g_fd,
        5e-3,
    );
}

/// kit's layer_norm against its composed twin and finite differences, on `rows` rows of `c`
/// features each.
fn check_layer_norm(seed: u64, rows: &[usize], c: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shape = [rows, &[c]].concat();
    let x = random(&mut rng, &shape, 2.0);
    let w = (random(&mut rng, &[c], 0.5) + 1.0).unwrap();
    let b = random(&mut rng, &[c], 0.5);
    let out_w = random(&mut rng, &shape, 1.0);
    let eps = 1e-6;
    check(
        "layer_norm",
        &|a| ops::layer_norm(&a[0], &a[1], &a[2], eps),
        &|a| composed::layer_norm(&a[0], &a[1], &a[2], eps),
        &[x, w, b],
        &out_w,
    );
}

#[test]
fn layer_norm_matches_composed_and_finite_differences() {
    check_layer_norm(1, &[2, 3], 8);
}

#[test]
fn layer_norm_over_several_blocks_of_rows_matches_composed_and_finite_differences() {
    // 150 rows: two full blocks and part of a third, on the pool.
    check_layer_norm(4, &[2 * BLOCK_ROWS + 22], 6);
}

/// `y = γ ⊙ x + β`, row by row, and its backward pass: the plumbing without the maths.
const AFFINE: RowNorm = RowNorm {
    name: "test-affine",
    forward: |x, g, b, _, y| {
        for (((y, x), g), b) in y.iter_mut().zip(x).zip(g).zip(b) {
            *y = g * x + b;
        }
    },
    backward: |x, g, dy, _, dx, dg, db| {
        for i in 0..x.len() {
            dx[i] = g[i] * dy[i];
            dg[i] += dy[i] * x[i];
            db[i] += dy[i];
        }
    },
};

#[test]
fn row_norm_gives_each_row_to_its_functions_and_adds_up_the_parameters_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for rows in [1, 3, BLOCK_ROWS, BLOCK_ROWS + 1, 3 * BLOCK_ROWS + 5] {
        let x = random(&mut rng, &[rows, 5], 2.0);
        let g = random(&mut rng, &[5], 1.0);
        let b = random(&mut rng, &[5], 1.0);
        let out_w = random(&mut rng, &[rows, 5], 1.0);
        check(
            &format!("RowNorm over {rows} rows"),
            &|a| AFFINE.apply(&a[0], &a[1], &a[2], 0.0),
            &|a| a[0].broadcast_mul(&a[1])?.broadcast_add(&a[2]),
            &[x, g, b],
            &out_w,
        );
    }
}

/// A backward pass that overwrites ∂loss/∂γ and ∂loss/∂β instead of adding to them, as a
/// learner may write it: on one block, the rows run in order, so the last row's part is left.
#[test]
fn row_norm_runs_the_rows_of_one_block_in_order() {
    let overwrite = RowNorm {
        backward: |x, g, dy, _, dx, dg, db| {
            for i in 0..x.len() {
                dx[i] = g[i] * dy[i];
                dg[i] = dy[i] * x[i];
                db[i] = dy[i];
            }
        },
        ..AFFINE
    };
    let x = Var::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu).unwrap();
    let g = Var::new(&[1f32, 1.0], &Device::Cpu).unwrap();
    let b = Var::new(&[0f32, 0.0], &Device::Cpu).unwrap();
    let y = overwrite.apply(&x, &g, &b, 0.0).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(values(grads.get(&g).unwrap()), [5.0, 6.0]);
    assert_eq!(values(grads.get(&b).unwrap()), [1.0, 1.0]);
}

#[test]
fn row_norm_refuses_parameters_of_another_width() {
    let x = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
    let (five, eight) = (
        Tensor::ones(5, DType::F32, &Device::Cpu).unwrap(),
        Tensor::ones(8, DType::F32, &Device::Cpu).unwrap(),
    );
    for (g, b) in [(&eight, &five), (&five, &eight)] {
        let err = AFFINE.apply(&x, g, b, 0.0).unwrap_err().to_string();
        assert!(
            err.contains("test-affine: the input has 5 features"),
            "{err}"
        );
    }
}

#[test]
fn causal_softmax_matches_composed_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let scale = 1.0 / 8f64.sqrt();
    for shape in [[2usize, 2, 5, 5], [1, 1, 3, 7]] {
        let x = random(&mut rng, &shape, 3.0);
        let out_w = random(&mut rng, &shape, 1.0);
        check(
            "causal_softmax",
            &|a| ops::causal_softmax(&a[0], scale),
            &|a| composed::causal_softmax(&a[0], scale),
            &[x],
            &out_w,
        );
    }
}

#[test]
fn causal_softmax_hides_the_future_and_rows_sum_to_one() {
    let x = Tensor::arange(0f32, 9., &Device::Cpu)
        .unwrap()
        .reshape((3, 3))
        .unwrap();
    let y = ops::causal_softmax(&x, 1.0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (i, row) in y.iter().enumerate() {
        assert!(
            row[i + 1..].iter().all(|&p| p == 0.0),
            "row {i} sees the future: {row:?}"
        );
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    // Row 1 sees [3, 4]: softmax = [1/(1+e), e/(1+e)].
    let e = std::f32::consts::E;
    assert!((y[1][1] - e / (1.0 + e)).abs() < 1e-6);
}

#[test]
fn cross_entropy_matches_composed_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let logits = random(&mut rng, &[2, 3, 6], 3.0);
    let targets = Tensor::new(&[[0u32, 5, 2], [3, 3, 1]], &Device::Cpu).unwrap();
    let one = Tensor::new(1f32, &Device::Cpu).unwrap();
    let t = targets.clone();
    let t2 = targets.clone();
    check(
        "cross_entropy",
        &move |a| ops::cross_entropy(&a[0], &t),
        &move |a| composed::cross_entropy(&a[0].reshape(((), 6))?, &t2.flatten_all()?),
        &[logits],
        &one,
    );
}

#[test]
fn cross_entropy_of_uniform_logits_is_log_vocab() {
    // Every token equally likely: the loss is ln(V) = ln(65) = 4.1744.
    let logits = Tensor::zeros((4, 65), DType::F32, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[0u32, 10, 20, 64], &Device::Cpu).unwrap();
    let l: f32 = ops::cross_entropy(&logits, &targets)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!((l - 65f32.ln()).abs() < 1e-5, "{l}");
}

#[test]
fn cross_entropy_rejects_targets_outside_the_vocabulary() {
    let logits = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[4u32], &Device::Cpu).unwrap();
    let err = ops::cross_entropy(&logits, &targets)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
}

#[test]
fn linear_matches_composed_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = random(&mut rng, &[2, 3, 5], 1.0);
    let w = random(&mut rng, &[4, 5], 1.0);
    let b = random(&mut rng, &[4], 1.0);
    let out_w = random(&mut rng, &[2, 3, 4], 1.0);
    check(
        "linear with bias",
        &|a| ops::linear(&a[0], &a[1], Some(&a[2])),
        &|a| composed::linear(&a[0], &a[1], Some(&a[2])),
        &[x.clone(), w.clone(), b],
        &out_w,
    );
    check(
        "linear without bias",
        &|a| ops::linear(&a[0], &a[1], None),
        &|a| composed::linear(&a[0], &a[1], None),
        &[x, w],
        &out_w,
    );
}

#[test]
fn linear_relu_matches_composed_and_finite_differences() {
    // Inputs whose outputs, with and without the bias, keep clear of ReLU's kink at 0 (where
    // finite differences straddle it), with both signs present.
    let clear = |y: Tensor| {
        let y = values(&y);
        y.iter().all(|&v| v.abs() > 0.05)
            && y.iter().any(|&v| v < 0.0)
            && y.iter().any(|&v| v > 0.0)
    };
    let (x, w, b, out_w) = (0..1000)
        .map(|seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let x = random(&mut rng, &[2, 3, 5], 1.0);
            let w = random(&mut rng, &[4, 5], 1.0);
            let b = random(&mut rng, &[4], 1.0);
            let out_w = random(&mut rng, &[2, 3, 4], 1.0);
            (x, w, b, out_w)
        })
        .find(|(x, w, b, _)| {
            clear(composed::linear(x, w, Some(b)).unwrap())
                && clear(composed::linear(x, w, None).unwrap())
        })
        .expect("a seed whose outputs keep clear of 0");
    check(
        "linear + ReLU with bias",
        &|a| ops::linear_relu(&a[0], &a[1], Some(&a[2])),
        &|a| composed::linear(&a[0], &a[1], Some(&a[2]))?.relu(),
        &[x.clone(), w.clone(), b],
        &out_w,
    );
    check(
        "linear + ReLU without bias",
        &|a| ops::linear_relu(&a[0], &a[1], None),
        &|a| composed::linear(&a[0], &a[1], None)?.relu(),
        &[x, w],
        &out_w,
    );
}

#[test]
fn packed_attention_matches_composed_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for shape in [[2usize, 2, 5, 9], [1, 1, 4, 6]] {
        let qkv = random(&mut rng, &shape, 1.5);
        let d = shape[3] / 3;
        let out_w = random(&mut rng, &[shape[0], shape[1], shape[2], d], 1.0);
        let scale = 1.0 / (d as f64).sqrt();
        check(
            "packed attention",
            &|a| ops::attention_packed(&a[0], scale),
            &|a| composed::attention_packed(&a[0], scale),
            std::slice::from_ref(&qkv),
            &out_w,
        );
    }
    let odd = random(&mut rng, &[1, 4, 7], 1.0);
    let err = ops::attention_packed(&odd, 1.0).unwrap_err().to_string();
    assert!(err.contains("3·D"), "{err}");
}
