//! Task 5 checks: LayerNorm's forward and backward pass by hand, as a candle custom op.
//!
//! The learner's op is compared with the checks' f64 LayerNorm, with central finite differences
//! in f64, with candle's autograd through kit's composed LayerNorm, and with JAX/Flax's
//! (`data/fixtures/task5_layer_norm.json`, made by `data/fixtures/make_task5_fixture.py`); then
//! it goes into every LayerNorm of MiniGPT, and candle-nn's own LayerNorm shows what a missing
//! backward pass does.

use candle_core::{DType, Module, Tensor, Var};
use candle_nn::VarBuilder;
use checks::diagnose::layer_norm as diagnose;
use checks::fixture;
use checks::learner::task5::LayerNorm;
use checks::support::{
    self, SMALL, assert_every_parameter_learns, dataset, device, max_abs_diff, move_off_init,
    values,
};
use kit::{GptConfig, SeededVarMap};
use proptest::prelude::*;
use reference::RefGpt;
use reference::norm::{EPS, Forward, layer_norm_way_f64};
use std::collections::HashMap;

/// "3 rows of 5 features", "1 row of 2 features".
fn input_size(rows: usize, c: usize) -> String {
    let s = |n: usize| if n == 1 { "" } else { "s" };
    format!("{rows} row{} of {c} feature{}", s(rows), s(c))
}

/// Your LayerNorm over `c` features, its scale and shift moved off 1 and 0.
fn layer(c: usize, seed: u64) -> (LayerNorm, SeededVarMap) {
    let params = SeededVarMap::new(seed);
    let m = LayerNorm::new(c, params.var_builder(&device())).expect("LayerNorm::new");
    move_off_init(&params, seed + 1);
    (m, params)
}

fn scale_and_shift(params: &SeededVarMap) -> (Vec<f64>, Vec<f64>) {
    (
        support::param(params, "weight"),
        support::param(params, "bias"),
    )
}

/// A random input (rows, c) spread over about ±2 and the upstream gradient `dy` for it, drawn
/// from `seed` and `seed + 1`.
fn input_and_upstream(seed: u64, rows: usize, c: usize) -> (Tensor, Tensor) {
    let x = (support::random_tensor(seed, &[rows, c]) * 2.0).unwrap();
    (x, support::random_tensor(seed + 1, &[rows, c]))
}

/// `x` (rows of `c`) through your layer, and the gradients of Σ y ⊙ dy by candle's backward
/// pass through your op: (y, dx, dγ, dβ).
fn through(
    m: &LayerNorm,
    params: &SeededVarMap,
    x: &Tensor,
    dy: &Tensor,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let x = Var::from_tensor(x).unwrap();
    let y = m.forward(x.as_tensor()).expect("LayerNorm::forward");
    let loss = (&y * dy).and_then(|p| p.sum_all()).expect("Σ y ⊙ dy");
    let grads = loss.backward().expect("the backward pass");
    let vars = params.named_vars();
    let var = |name: &str| vars.iter().find(|(n, _)| n == name).expect(name).1.clone();
    let (w, b) = (var("weight"), var("bias"));
    let inputs = [
        (x.as_tensor(), "the input"),
        (w.as_tensor(), "the scale γ (weight)"),
        (b.as_tensor(), "the shift β (bias)"),
    ];
    if inputs.iter().all(|(t, _)| grads.get(t).is_none()) {
        panic!(
            "backward() ran, and no gradient reached the input, the scale γ or the shift β: the \
             output of LayerNorm::forward has no node in candle's graph, so backward() never \
             called the op's bwd. An op applied with apply_op*_no_bwd records none (candle-nn \
             applies its fused layer_norm so); LayerNorm::new should give kit's LayerNorm a \
             RowNorm, whose `apply` records one with apply_op3 (kit/src/ops/row_norm.rs)"
        )
    }
    let of = |(t, what): (&Tensor, &str)| {
        values(grads.get(t).unwrap_or_else(|| {
            panic!(
                "no gradient reached {what}, though others did: the op's bwd returned None for it"
            )
        }))
    };
    (values(&y), of(inputs[0]), of(inputs[1]), of(inputs[2]))
}

#[test]
fn forward_matches_the_reference() {
    for (shape, seed) in [(vec![2, 5, 8], 1u64), (vec![3, 16], 2), (vec![1, 1, 2], 3)] {
        let c = shape[shape.len() - 1];
        let (m, params) = layer(c, seed);
        let x = (support::random_tensor(seed + 10, &shape) * 3.0).unwrap();
        let got = values(&m.forward(&x).expect("LayerNorm::forward"));
        let (g, b) = scale_and_shift(&params);
        let xv = values(&x);
        let want = layer_norm_way_f64(&xv, c, &g, &b, Forward::Right);
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff < 1e-4,
            "LayerNorm's output differs from the reference by {diff:.2e} for input shape \
             {shape:?}: {}",
            diagnose::forward(&got, &xv, c, &g, &b)
        );
    }
}

/// Sizes of the property tests: rows of C features.
const MAX_ROWS: usize = 6;
const MAX_C: usize = 16;

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn each_gradient_matches_central_differences(rows in 1..=MAX_ROWS, c in 2..=MAX_C, seed in 0u64..1000) {
        let (m, params) = layer(c, seed);
        let (x, dy) = input_and_upstream(seed + 1, rows, c);
        let (_, dx, dg, db) = through(&m, &params, &x, &dy);
        let (g, b) = scale_and_shift(&params);
        let (xv, w) = (values(&x), values(&dy));
        // loss = Σ w ⊙ LayerNorm(x), in f64; each gradient by (loss(+h) − loss(−h)) / 2h.
        let loss = |x: &[f64], g: &[f64], b: &[f64]| -> f64 {
            layer_norm_way_f64(x, c, g, b, Forward::Right).iter().zip(&w).map(|(y, w)| y * w).sum()
        };
        let h = 1e-5;
        let central = |at: usize, which: usize| {
            let (mut xs, mut gs, mut bs) = ((xv.clone(), xv.clone()), (g.clone(), g.clone()), (b.clone(), b.clone()));
            match which {
                0 => { xs.0[at] += h; xs.1[at] -= h; }
                1 => { gs.0[at] += h; gs.1[at] -= h; }
                _ => { bs.0[at] += h; bs.1[at] -= h; }
            }
            (loss(&xs.0, &gs.0, &bs.0) - loss(&xs.1, &gs.1, &bs.1)) / (2.0 * h)
        };
        for (name, got, n, which) in [("dx", &dx, rows * c, 0), ("dγ", &dg, c, 1), ("dβ", &db, c, 2)] {
            let numeric: Vec<f64> = (0..n).map(|i| central(i, which)).collect();
            let diff = max_abs_diff(got, &numeric);
            let size = numeric.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            if diff > 1e-3 * size {
                let why = diagnose::backward((&dx, &dg, &db), &xv, c, &g, &w)
                    .unwrap_or_else(|| "(it matches the reference's formula)".into());
                prop_assert!(false, "{name} differs from the central differences by {diff:.2e}, on an input of {}: {why}", input_size(rows, c));
            }
        }
    }

    #[test]
    fn gradients_match_candles_autograd_through_the_composed_layer_norm(rows in 1..=MAX_ROWS, c in 2..=MAX_C, seed in 0u64..1000) {
        let (m, params) = layer(c, seed);
        let (x, dy) = input_and_upstream(seed + 3, rows, c);
        let (_, dx, dg, db) = through(&m, &params, &x, &dy);
        // kit's LayerNorm written with candle's differentiable ops: candle's autograd gives the gradients.
        let xv = Var::from_tensor(&x).unwrap();
        let vars = params.named_vars();
        let var = |name: &str| vars.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let (w, b) = (var("weight"), var("bias"));
        let y = kit::ops::composed::layer_norm(xv.as_tensor(), w.as_tensor(), b.as_tensor(), EPS).unwrap();
        let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, got, want) in [
            ("dx", &dx, values(grads.get(xv.as_tensor()).unwrap())),
            ("dγ", &dg, values(grads.get(w.as_tensor()).unwrap())),
            ("dβ", &db, values(grads.get(b.as_tensor()).unwrap())),
        ] {
            let diff = max_abs_diff(got, &want);
            prop_assert!(diff < 1e-4 * (1.0 + want.iter().fold(0.0f64, |m, v| m.max(v.abs()))),
                "{name} differs from candle's autograd through the composed LayerNorm by {diff:.2e}, on an input of {}", input_size(rows, c));
        }
    }

    #[test]
    fn a_rows_input_gradient_sums_to_zero_and_is_orthogonal_to_x_hat(rows in 1..=MAX_ROWS, c in 2..=MAX_C, seed in 0u64..1000) {
        let (m, params) = layer(c, seed);
        // Rows spread well beyond ε: the values 0, 1, 2, … with noise, in a random order.
        let spread: Vec<f32> = (0..rows * c)
            .map(|i| ((i % c + i / c + seed as usize) % c) as f32)
            .collect();
        let spread = Tensor::from_vec(spread, (rows, c), &device()).unwrap();
        let x = (spread + (support::random_tensor(seed + 5, &[rows, c]) * 0.3).unwrap()).unwrap();
        let dy = support::random_tensor(seed + 6, &[rows, c]);
        let (_, dx, _, _) = through(&m, &params, &x, &dy);
        let ones = vec![1.0; c];
        let zeros = vec![0.0; c];
        let x_hat = layer_norm_way_f64(&values(&x), c, &ones, &zeros, Forward::Right);
        for (r, (d, h)) in dx.chunks(c).zip(x_hat.chunks(c)).enumerate() {
            let size = d.iter().map(|v| v.abs()).sum::<f64>().max(1.0);
            let sum: f64 = d.iter().sum();
            let dot: f64 = d.iter().zip(h).map(|(a, b)| a * b).sum();
            prop_assert!(sum.abs() < 1e-4 * size,
                "row {r}: Σ dx = {sum:.2e}, not 0: shifting a row by a constant cannot change its normalised value, so no such direction can have a gradient");
            prop_assert!(dot.abs() < 1e-4 * size,
                "row {r}: Σ dx·x̂ = {dot:.2e}, not 0: scaling a row's deviations cannot change its normalised value either (but for ε, negligible for this row's spread)");
        }
    }
}

/// Your LayerNorm over 4 features, and three rows whose values are (almost) all equal: a
/// constant row, and two with a spread of 1e-3, whose variances are below ε.
fn almost_equal_rows() -> (LayerNorm, SeededVarMap, Tensor) {
    let params = SeededVarMap::new(13);
    let m = LayerNorm::new(4, params.var_builder(&device())).expect("LayerNorm::new");
    move_off_init(&params, 14);
    let rows = [
        [3.0f32, 3.0, 3.0, 3.0],
        [0.0, 1e-3, 0.0, 1e-3],
        [-2.0, -2.0005, -2.0, -1.9995],
    ];
    (m, params, Tensor::new(&rows, &device()).unwrap())
}

#[test]
fn rows_of_almost_equal_values_are_not_blown_up() {
    // ε keeps a row whose values are (almost) all equal from dividing by a variance of about 0:
    // a constant row comes out as the shift, and a row with a spread of 1e-3 has a variance
    // smaller than ε, which then decides the scale.
    let (m, params, x) = almost_equal_rows();
    let (g, b) = scale_and_shift(&params);
    let xv = values(&x);
    let y = values(&m.forward(&x).expect("LayerNorm::forward"));
    let want = layer_norm_way_f64(&xv, 4, &g, &b, Forward::Right);
    let diff = max_abs_diff(&y, &want);
    assert!(
        diff < 1e-3,
        "for rows of almost equal values LayerNorm's output differs from the reference by \
         {diff:.2e}: r = 1/√(σ² + ε), with ε inside the root and added, so that a variance near 0 \
         divides by √ε, not by 0: {}",
        diagnose::forward(&y, &xv, 4, &g, &b)
    );
}

#[test]
fn the_gradients_of_rows_of_almost_equal_values_are_not_blown_up() {
    // The backward pass recomputes r = 1/√(σ² + ε): without ε, a constant row divides by 0.
    let (m, params, x) = almost_equal_rows();
    let dy = support::random_tensor(15, &[3, 4]);
    let (_, dx, dg, db) = through(&m, &params, &x, &dy);
    let (g, _) = scale_and_shift(&params);
    if let Some(wrong) = diagnose::backward((&dx, &dg, &db), &values(&x), 4, &g, &values(&dy)) {
        panic!("for rows of almost equal values: {wrong}");
    }
}

#[test]
fn gradients_match_the_jax_flax_fixture() {
    let fixture = fixture::load("task5_layer_norm.json");
    for case in fixture["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let shape = fixture::dims(&case["shape"]);
        let c = shape[shape.len() - 1];
        let tensor = |key: &str, shape: &[usize]| fixture::tensor(&case[key], shape);
        let params = SeededVarMap::new(0);
        let m = LayerNorm::new(c, params.var_builder(&device())).expect("LayerNorm::new");
        // Flax's scale and bias into your weight and bias.
        let vars: HashMap<String, Var> = params.named_vars().into_iter().collect();
        vars["weight"].set(&tensor("scale", &[c])).unwrap();
        vars["bias"].set(&tensor("bias", &[c])).unwrap();
        let (x, dy) = (tensor("x", &shape), tensor("dy", &shape));
        let (y, dx, dg, db) = through(&m, &params, &x, &dy);
        for (what, got, key) in [
            ("y", &y, "y"),
            ("dx", &dx, "dx"),
            ("dγ", &dg, "dscale"),
            ("dβ", &db, "dbias"),
        ] {
            let want = fixture::floats(&case[key]);
            let size = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(got, &want);
            assert!(
                diff < 1e-4 * size,
                "fixture case {name:?} (JAX/Flax LayerNorm, input {shape:?}): your {what} differs \
                 from Flax's by {diff:.2e}"
            );
        }
    }
}

#[test]
fn a_small_backward_snapshot() {
    // One row (1, 2, 3, 4), γ = 1, β = 0, and dy pulling on the first output alone.
    let params = SeededVarMap::new(0);
    let m = LayerNorm::new(4, params.var_builder(&device())).expect("LayerNorm::new");
    let x = Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &device()).unwrap();
    let dy = Tensor::new(&[[1f32, 0.0, 0.0, 0.0]], &device()).unwrap();
    let (y, dx, dg, db) = through(&m, &params, &x, &dy);
    let row = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:+.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    insta::with_settings!({
        description => "LayerNorm of the row (1, 2, 3, 4) with scale 1 and shift 0, and the \
            gradients of y[0] alone: dx is the sensitivity of the first normalised value to each \
            input (it sums to 0), dγ = dy ⊙ x̂ and dβ = dy. Rounded to 4 decimals.",
        omit_expression => true,
    }, {
        insta::assert_snapshot!(format!(
            "y  = [{}]\ndx = [{}]\ndγ = [{}]\ndβ = [{}]",
            row(&y), row(&dx), row(&dg), row(&db)
        ));
    });
}

#[test]
fn in_minigpt_every_parameter_receives_a_gradient() {
    let params = SeededVarMap::new(7);
    let model = RefGpt::minigpt(SMALL, params.var_builder(&device()), LayerNorm::new)
        .expect("MiniGPT with your LayerNorm");
    let ids: Vec<u32> = (0..16).map(|i| (i * 7 % 65) as u32).collect();
    let x = Tensor::from_vec(ids.clone(), (2, 8), &device()).unwrap();
    let y = Tensor::from_vec(
        ids.iter().map(|v| (v + 1) % 65).collect::<Vec<_>>(),
        (2, 8),
        &device(),
    )
    .unwrap();
    let loss = kit::train::loss(&model, &x, &y).expect("loss");
    assert_every_parameter_learns("MiniGPT with your LayerNorm", &params, &loss);
}

/// How far the losses of 50 training steps may drift between your LayerNorm and kit's: the two
/// round differently, and training amplifies differences a little each step.
const FIFTY_STEPS: f32 = 1e-3;

/// The losses of 50 steps of kit's trainer on the graded MiniGPT, from seed 0, with `make_norm`
/// in every LayerNorm.
fn fifty_losses<N: Module + Sync>(
    make_norm: impl Fn(usize, VarBuilder) -> candle_core::Result<N>,
) -> (Vec<f32>, SeededVarMap, RefGpt<reference::Heads, N>) {
    use rand::SeedableRng;
    let params = SeededVarMap::new(0);
    let cfg = GptConfig::graded(dataset().vocab_size());
    let model = RefGpt::minigpt(cfg, params.var_builder(&device()), make_norm).expect("MiniGPT");
    let adam_params = kit::adam::ParamsAdam::default();
    let mut adam =
        <kit::adam::Adam as candle_nn::Optimizer>::new(params.varmap().all_vars(), adam_params)
            .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let losses = (0..50)
        .map(|_| {
            let batch = kit::data::Batch::sample(&mut rng, &dataset().train, 16, 32).unwrap();
            let (x, y) = batch.to_tensors(&device()).unwrap();
            kit::train::step(&model, &mut adam, &x, &y).expect("a training step")
        })
        .collect();
    (losses, params, model)
}

#[test]
fn fifty_training_steps_give_the_losses_of_kits_layer_norm() {
    let (yours, _, _) = fifty_losses(LayerNorm::new);
    let (kits, _, _) = fifty_losses(kit::nn::LayerNorm::new);
    for (i, (a, b)) in yours.iter().zip(&kits).enumerate() {
        assert!(
            (a - b).abs() < FIFTY_STEPS,
            "at step {} MiniGPT with your LayerNorm has loss {a:.5}, with kit's {b:.5} (at most \
             {FIFTY_STEPS} apart)",
            i + 1
        );
    }
    println!(
        "50 steps with your LayerNorm: loss {:.4} → {:.4}; with kit's: {:.4} → {:.4}",
        yours[0], yours[49], kits[0], kits[49]
    );
}

/// What a missing backward pass does: the same MiniGPT with candle-nn's fused LayerNorm, which
/// computes the right values and has no backward, trains fifty steps, but most of it never
/// learns; with your LayerNorm, every parameter does.
#[test]
fn candle_nns_layer_norm_stops_the_gradients_that_yours_lets_through() {
    let config = candle_nn::LayerNormConfig {
        eps: EPS,
        ..Default::default()
    };
    let (losses, params, model) = fifty_losses(|dim, vb| candle_nn::layer_norm(dim, config, vb));
    let ids: Vec<u32> = (0..64).map(|i| (i * 7 % 65) as u32).collect();
    let x = Tensor::from_vec(ids.clone(), (2, 32), &device()).unwrap();
    let next: Vec<u32> = ids.iter().map(|v| (v + 1) % 65).collect();
    let y = Tensor::from_vec(next, (2, 32), &device()).unwrap();
    let loss = kit::train::loss(&model, &x, &y).unwrap();
    let stopped = support::parameters_without_gradient(&params, &loss);
    let total = params.named_vars().len();
    assert!(
        stopped.contains(&"wte.weight".to_string())
            && !stopped.contains(&"lm_head.weight".to_string()),
        "with candle-nn's LayerNorm, the gradient should stop at ln_f: {stopped:?}"
    );
    assert!(
        losses[49] < losses[0],
        "lm_head alone still learns: {losses:?}"
    );
    // The same model with yours.
    let (yours, yours_params, your_model) = fifty_losses(LayerNorm::new);
    let loss = kit::train::loss(&your_model, &x, &y).expect("loss");
    assert_every_parameter_learns("MiniGPT with your LayerNorm", &yours_params, &loss);
    println!(
        "with candle-nn's LayerNorm, 50 steps took the loss from {:.3} to {:.3} while {} of \
         {total} parameters received no gradient (all but lm_head's); with yours, from {:.3} to \
         {:.3}, every parameter learning",
        losses[0],
        losses[49],
        stopped.len(),
        yours[0],
        yours[49]
    );
}

#[test]
fn forward_keeps_the_shape_and_refuses_a_wrong_width() {
    let (m, _) = layer(8, 9);
    let x = support::random_tensor(9, &[2, 3, 8]);
    let y = m.forward(&x).expect("LayerNorm::forward");
    support::assert_shape(
        "LayerNorm::forward",
        &y,
        &[2, 3, 8],
        "(..., C): the input's shape",
    );
    let wrong = Tensor::zeros((2, 5), DType::F32, &device()).unwrap();
    assert!(
        m.forward(&wrong).is_err(),
        "a LayerNorm over 8 features took rows of 5"
    );
}
