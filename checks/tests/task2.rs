//! Task 2 checks: causal self-attention written by hand.
//!
//! The learner's `SelfAttention` is compared with three references it cannot see: plain f64
//! loops in `checks::reference`, a fixture computed by the challenge's own JAX/Flax code
//! (`data/fixtures/`), and properties every causal attention has.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use checks::diagnose::attention::{Subject, diagnose};
use checks::fixture;
use checks::learner::task2::SelfAttention;
use checks::support::{
    self, assert_every_parameter_learns_through, assert_output_shape, assert_shape, device,
    max_abs_diff, param, values,
};
use kit::SeededVarMap;
use proptest::prelude::*;
use reference::attention_head_f64;
use std::collections::HashMap;
use std::sync::OnceLock;

fn head(hidden: usize, head_dim: usize, seed: u64) -> (SelfAttention, SeededVarMap) {
    support::seeded(seed, "SelfAttention::new", |vb| {
        SelfAttention::new(hidden, head_dim, vb)
    })
}

fn forward(m: &SelfAttention, x: &Tensor) -> Vec<f64> {
    values(&m.forward(x).expect("SelfAttention::forward"))
}

/// The reference output for the learner's own weights.
fn reference(params: &SeededVarMap, x: &Tensor, d: usize) -> Vec<f64> {
    let (b, t, _) = x.dims3().unwrap();
    let w = |m: &str| param(params, &format!("{m}.weight"));
    attention_head_f64(
        &values(x),
        b,
        t,
        &w("query"),
        &w("key"),
        &w("value"),
        d,
        1.0 / (d as f64).sqrt(),
    )
}

/// What the learner's attention computes instead, from the probes of `checks::diagnose`. Worked
/// out once per process: a property that fails runs its check many times while it shrinks.
fn diagnosis(m: &SelfAttention, params: &SeededVarMap, d: usize) -> String {
    static SAID: OnceLock<String> = OnceLock::new();
    SAID.get_or_init(|| {
        diagnose(&Subject {
            forward: &|x| m.forward(x),
            params,
            heads: 1,
            head_dim: d,
        })
    })
    .clone()
}

/// Compares with the f64 reference; on a mismatch, says what the learner's attention does.
fn assert_matches_reference(
    m: &SelfAttention,
    params: &SeededVarMap,
    x: &Tensor,
    d: usize,
) -> Result<(), TestCaseError> {
    let got = forward(m, x);
    let want = reference(params, x, d);
    let diff = max_abs_diff(&got, &want);
    if diff >= 1e-5 {
        return Err(TestCaseError::fail(format!(
            "SelfAttention differs from the reference by {diff:.2e} for input shape {:?}, \
             head_dim {d}: {}",
            x.dims(),
            diagnosis(m, params, d)
        )));
    }
    Ok(())
}

/// [`assert_matches_reference`] outside a property: a mismatch fails with its message.
#[track_caller]
fn must_match_reference(m: &SelfAttention, params: &SeededVarMap, x: &Tensor, d: usize) {
    if let Err(TestCaseError::Fail(reason) | TestCaseError::Reject(reason)) =
        assert_matches_reference(m, params, x, d)
    {
        panic!("{}", reason.message());
    }
}

#[test]
fn output_has_one_head_dim_vector_per_position() {
    for (b, t, c, d) in [(1, 4, 8, 16), (2, 7, 6, 5), (3, 1, 4, 2)] {
        let (m, _) = head(c, d, 0);
        assert_output_shape(
            "SelfAttention::forward",
            &m,
            &[b, t, c],
            &[b, t, d],
            "(B, T, head_dim)",
        );
    }
}

#[test]
fn matches_the_reference_on_a_fixed_input() {
    // x[0][t][c] = (t - c) / 4: small, exact values that a person can reproduce by hand.
    let x: Vec<f32> = (0..4)
        .flat_map(|t| (0..3).map(move |c| (t as f32 - c as f32) / 4.0))
        .collect();
    let x = Tensor::from_vec(x, (1, 4, 3), &device()).unwrap();
    let (m, params) = head(3, 2, 11);
    must_match_reference(&m, &params, &x, 2);
}

#[test]
fn matches_the_reference_on_random_inputs() {
    for (seed, (b, t, c, d)) in [(1u64, (2, 9, 8, 4)), (2, (1, 16, 5, 7)), (3, (3, 3, 2, 1))] {
        let (m, params) = head(c, d, seed);
        let x = support::random_tensor(seed + 100, &[b, t, c]);
        must_match_reference(&m, &params, &x, d);
    }
}

#[test]
fn matches_the_jax_flax_fixture() {
    let fixture = fixture::load("task2_attention.json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(!cases.is_empty(), "the fixture has no cases");
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let d = case["head_dim"].as_u64().expect("head_dim") as usize;
        let shape = fixture::dims(&case["input_shape"]);
        let c = shape[2];
        // Flax kernels are (in, out); candle's Linear weight is (out, in): transpose.
        let mut weights = HashMap::new();
        for m in ["query", "key", "value"] {
            let kernel = fixture::tensor(&case[format!("{m}_kernel")], &[c, d]);
            weights.insert(
                format!("{m}.weight"),
                kernel.t().unwrap().contiguous().unwrap(),
            );
        }
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device());
        let m =
            SelfAttention::new(c, d, vb).expect("SelfAttention::new with the fixture's weights");
        let x = fixture::tensor(&case["input"], &shape);
        let out = m.forward(&x).expect("SelfAttention::forward");
        assert_shape(
            "SelfAttention::forward",
            &out,
            &fixture::dims(&case["expected_shape"]),
            "(B, T, head_dim)",
        );
        let diff = max_abs_diff(&values(&out), &fixture::floats(&case["expected"]));
        assert!(
            diff < 1e-5,
            "fixture case {name:?} (JAX/Flax, head_dim {d}, input {shape:?}): output differs from \
             Flax's by {diff:.2e}"
        );
    }
}

#[test]
fn every_parameter_receives_a_gradient() {
    let (m, params) = head(6, 4, 5);
    assert_every_parameter_learns_through("SelfAttention", &m, &params, &[2, 5, 6]);
}

#[test]
fn small_output_snapshot() {
    let (m, _) = head(4, 2, 42);
    let x = support::random_tensor(43, &[1, 3, 4]);
    let out = forward(&m, &x);
    let rows: Vec<String> = out
        .chunks(2)
        .enumerate()
        .map(|(t, r)| format!("t={t}: [{:+.4}, {:+.4}]", r[0], r[1]))
        .collect();
    insta::with_settings!({
        description => "SelfAttention(hidden 4, head_dim 2) with the checks' seeded weights (seed 42) \
            on a seeded random input (1, 3, 4), rounded to 4 decimals. Position 0 can only attend to \
            itself, so its row is exactly its own value vector.",
        omit_expression => true,
    }, {
        insta::assert_snapshot!(rows.join("\n"));
    });
}

/// Batch, time, channel and head sizes plus a seed, with named bounds.
const MAX_B: usize = 3;
const MAX_T: usize = 10;
const MAX_C: usize = 8;
const MAX_D: usize = 8;

fn sizes() -> impl Strategy<Value = (usize, usize, usize, usize, u64)> {
    (1..=MAX_B, 1..=MAX_T, 1..=MAX_C, 1..=MAX_D, any::<u64>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_reference_for_any_sizes((b, t, c, d, seed) in sizes()) {
        let (m, params) = head(c, d, seed);
        assert_matches_reference(&m, &params, &support::random_tensor(seed ^ 1, &[b, t, c]), d)?;
    }

    #[test]
    fn the_future_does_not_change_the_past((b, t, c, d, seed) in sizes(), cut in 0usize..MAX_T) {
        let cut = cut % t;
        let (m, _) = head(c, d, seed);
        let x = support::random_tensor(seed ^ 2, &[b, t, c]);
        let noise = support::random_tensor(seed ^ 3, &[b, t, c]);
        // Change every input after position `cut`.
        let keep = Tensor::from_vec((0..t).map(|i| u8::from(i <= cut)).collect::<Vec<_>>(), (1, t, 1), &device())
            .unwrap().broadcast_as((b, t, c)).unwrap();
        let changed = keep.where_cond(&x, &(&x + &noise).unwrap()).unwrap();
        let (y0, y1) = (forward(&m, &x), forward(&m, &changed));
        for bi in 0..b {
            let lo = bi * t * d;
            let diff = max_abs_diff(&y0[lo..lo + (cut + 1) * d], &y1[lo..lo + (cut + 1) * d]);
            prop_assert!(diff < 1e-5, "changing inputs after position {cut} changed outputs at 0..={cut} by {diff:.2e} (input shape [{b}, {t}, {c}], head_dim {d}): the mask lets the future in");
        }
    }

    #[test]
    fn each_output_is_a_convex_combination_of_visible_values((b, t, c, seed) in (1..=MAX_B, 1..=MAX_T, 1..=MAX_C, any::<u64>())) {
        // With head_dim = C and the value projection set to the identity, v = x: each output
        // coordinate must lie between the smallest and largest value of that coordinate at
        // the visible positions.
        let (m, params) = head(c, c, seed);
        let eye = Tensor::eye(c, DType::F32, &device()).unwrap();
        let value = params.named_vars().into_iter().find(|(n, _)| n == "value.weight").expect("value.weight").1;
        value.set(&eye).unwrap();
        let x = support::random_tensor(seed ^ 4, &[b, t, c]);
        let (xv, y) = (values(&x), forward(&m, &x));
        for bi in 0..b {
            for ti in 0..t {
                for ci in 0..c {
                    let seen = (0..=ti).map(|s| xv[(bi * t + s) * c + ci]);
                    let (lo, hi) = seen.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
                    let out = y[(bi * t + ti) * c + ci];
                    prop_assert!(out >= lo - 1e-5 && out <= hi + 1e-5,
                        "output at position {ti}, channel {ci} is {out:.4}, outside [{lo:.4}, {hi:.4}], \
                         the range of the values it may see (input shape [{b}, {t}, {c}], head_dim {c}): \
                         the weights are not a softmax over visible keys");
                }
            }
        }
        // Position 0 sees only itself: its output is its own value vector.
        for bi in 0..b {
            let lo = bi * t * c;
            prop_assert!(max_abs_diff(&y[lo..lo + c], &xv[lo..lo + c]) < 1e-5, "position 0 must attend only to itself (input shape [{b}, {t}, {c}], head_dim {c})");
        }
    }
}
