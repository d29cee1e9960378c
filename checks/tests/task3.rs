//! Task 3 checks: multi-head attention with einsum.
//!
//! The einsum model must equal the per-head computation (the challenge's TestMultiHeadEinsum):
//! each head's slice of the fused projections run as one causal head, the heads concatenated in
//! order, then the output layer. The reference here is the checks' own f64 code.

use candle_core::{Module, Tensor};
use checks::learner::task3::MultiHeadAttention;
use checks::support::{
    self, assert_every_parameter_learns, assert_shape, dataset, device, max_abs_diff, param, values,
};
use kit::{GptConfig, SeededVarMap};
use proptest::prelude::*;
use reference::RefGpt;

fn mha(c: usize, heads: usize, d: usize, seed: u64) -> (MultiHeadAttention, SeededVarMap) {
    let params = SeededVarMap::new(seed);
    let m = MultiHeadAttention::new(c, heads, d, params.var_builder(&device()))
        .expect("MultiHeadAttention::new");
    (m, params)
}

/// How the per-head computation is done: the right way, or the way of a known mistake.
#[derive(Clone, Copy, Default)]
struct Way {
    /// The scores are divided by head_dim to this power: ½ is right, 1 scales twice, 0 never.
    scale_power: f64,
    /// Head i takes rows i, i + n, i + 2n, ... of each projection: split as `(h n)`.
    split_interleaved: bool,
    /// The heads are merged as `(h n)`: feature j of head i lands in column j·n + i.
    merge_interleaved: bool,
}

const RIGHT: Way = Way {
    scale_power: 0.5,
    split_interleaved: false,
    merge_interleaved: false,
};

/// Known mistakes, each with what to tell the learner whose output matches it.
const MISTAKES: [(Way, &str); 4] = [
    (
        Way {
            scale_power: 1.0,
            ..RIGHT
        },
        "it matches scores scaled by 1/head_dim instead of 1/√head_dim: kit::ops::causal_softmax \
         applies the scale you pass it, so pass 1/√h and do not divide the scores yourself as well",
    ),
    (
        Way {
            scale_power: 0.0,
            ..RIGHT
        },
        "it matches scores that are not scaled: pass 1/√h as causal_softmax's scale",
    ),
    (
        Way {
            split_interleaved: true,
            ..RIGHT
        },
        "it matches heads split as (h n): head i owns columns i·head_dim..(i+1)·head_dim, so \
         split with \"b t (n h) -> b n t h\"",
    ),
    (
        Way {
            merge_interleaved: true,
            ..RIGHT
        },
        "it matches heads merged as (h n): merge in the order of the split, \"b n t h -> b t (n h)\"",
    ),
];

/// Per-head computation: head h gets rows h·d..(h+1)·d of each fused (n·d, C) projection,
/// unless `way` says otherwise.
fn per_head(params: &SeededVarMap, x: &Tensor, heads: usize, d: usize, way: Way) -> Vec<f64> {
    let (b, t, c) = x.dims3().unwrap();
    let xv = values(x);
    let (wq, wk, wv) = (
        param(params, "query.weight"),
        param(params, "key.weight"),
        param(params, "value.weight"),
    );
    let rows = |w: &[f64], h: usize| -> Vec<f64> {
        if way.split_interleaved {
            (0..d)
                .flat_map(|j| w[(j * heads + h) * c..(j * heads + h + 1) * c].to_vec())
                .collect()
        } else {
            reference::head_rows(w, h, d, c)
        }
    };
    let outs: Vec<Vec<f64>> = (0..heads)
        .map(|h| {
            reference::attention_head_f64(
                &xv,
                b,
                t,
                &rows(&wq, h),
                &rows(&wk, h),
                &rows(&wv, h),
                d,
                1.0 / (d as f64).powf(way.scale_power),
            )
        })
        .collect();
    let cat = if way.merge_interleaved {
        (0..b * t)
            .flat_map(|r| {
                (0..d)
                    .flat_map(|j| outs.iter().map(|o| o[r * d + j]).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            })
            .collect()
    } else {
        reference::concat_heads(&outs, b * t, d)
    };
    reference::dense_f64(
        &cat,
        b * t,
        &param(params, "proj.weight"),
        Some(&param(params, "proj.bias")),
        heads * d,
    )
}

/// Per-head reference: the right way.
fn per_head_reference(params: &SeededVarMap, x: &Tensor, heads: usize, d: usize) -> Vec<f64> {
    per_head(params, x, heads, d, RIGHT)
}

/// What an output that differs from the reference matches, if it is a known mistake (on a
/// small input, more than one can).
fn diagnosis(got: &[f64], params: &SeededVarMap, x: &Tensor, heads: usize, d: usize) -> String {
    let matches: Vec<&str> = MISTAKES
        .iter()
        .filter(|(way, _)| max_abs_diff(got, &per_head(params, x, heads, d, *way)) < 1e-5)
        .map(|(_, says)| *says)
        .collect();
    if matches.is_empty() {
        "check that head i uses columns i·head_dim..(i+1)·head_dim of each projection, that the \
         heads are merged back in the same order, (b, t, (n h)), and the mask and scale"
            .into()
    } else {
        matches.join("; or ")
    }
}

#[test]
fn output_has_shape_b_t_heads_times_head_dim() {
    for (b, t, c, heads, d) in [(1, 2, 8, 2, 4), (2, 5, 6, 3, 2), (1, 1, 4, 1, 4)] {
        let (m, _) = mha(c, heads, d, 0);
        let out = m
            .forward(&support::random_tensor(1, &[b, t, c]))
            .expect("MultiHeadAttention::forward");
        assert_shape(
            "MultiHeadAttention::forward",
            &out,
            &[b, t, heads * d],
            "(B, T, num_heads·head_dim)",
        );
    }
}

#[test]
fn equals_per_head_attention_in_the_challenges_case() {
    // The challenge's TestMultiHeadEinsum: head_dim 4, 2 heads, batch 1, T 2 (C 8 here).
    let (m, params) = mha(8, 2, 4, 3);
    // Biases away from 0, so that a missing one shows.
    support::move_off_init(&params, 30);
    let x = support::random_tensor(4, &[1, 2, 8]);
    let got = values(&m.forward(&x).expect("forward"));
    let diff = max_abs_diff(&got, &per_head_reference(&params, &x, 2, 4));
    assert!(
        diff < 1e-5,
        "einsum attention differs from the per-head computation by {diff:.2e}: {}",
        diagnosis(&got, &params, &x, 2, 4)
    );
}

#[test]
fn every_parameter_receives_a_gradient() {
    let (m, params) = mha(8, 2, 4, 5);
    let x = support::random_tensor(6, &[2, 5, 8]);
    let loss = m
        .forward(&x)
        .and_then(|y| y.sqr()?.sum_all())
        .expect("forward");
    assert_every_parameter_learns("MultiHeadAttention (Task 3)", &params, &loss);
}

#[test]
fn the_future_does_not_change_the_past() {
    let (b, t, c, heads, d) = (2, 9, 8, 2, 4);
    let (m, _) = mha(c, heads, d, 7);
    let x = support::random_tensor(8, &[b, t, c]);
    let y0 = values(&m.forward(&x).expect("forward"));
    for cut in 0..t - 1 {
        let tail = support::random_tensor(9 + cut as u64, &[b, t - cut - 1, c]);
        let changed = Tensor::cat(&[x.narrow(1, 0, cut + 1).unwrap(), tail], 1).unwrap();
        let y1 = values(&m.forward(&changed).expect("forward"));
        for bi in 0..b {
            let lo = bi * t * heads * d;
            let n = (cut + 1) * heads * d;
            let diff = max_abs_diff(&y0[lo..lo + n], &y1[lo..lo + n]);
            assert!(
                diff < 1e-5,
                "changing inputs after position {cut} changed outputs at 0..={cut} by {diff:.2e}: apply the causal mask to every head"
            );
        }
    }
}

const MAX_B: usize = 3;
const MAX_T: usize = 16;
const MAX_HEADS: usize = 4;
const MAX_D: usize = 8;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn equals_per_head_attention_for_any_shape(
        b in 1..=MAX_B, t in 1..=MAX_T, heads in 1..=MAX_HEADS, d in 1..=MAX_D, c in 1usize..=12, seed: u64,
    ) {
        let (m, params) = mha(c, heads, d, seed);
        let x = support::random_tensor(seed ^ 1, &[b, t, c]);
        let got = values(&m.forward(&x).expect("MultiHeadAttention::forward"));
        let diff = max_abs_diff(&got, &per_head_reference(&params, &x, heads, d));
        prop_assert!(diff < 1e-5,
            "einsum attention (input shape [{b}, {t}, {c}], {heads} head(s) of head_dim {d}) differs \
             from the per-head computation by {diff:.2e}: {}", diagnosis(&got, &params, &x, heads, d));
    }
}

/// The challenge's closing question for Task 3: with the einsum attention in every block, does
/// MiniGPT still reach the graded Task 1 result? Same settings: Adam 1e-3, 4 layers, batch 16,
/// block 32, 4 heads, hidden 128, at most 4000 steps, 100-batch evaluations every 250 steps.
/// The rest of the model is the checks' own, so Task 1 need not be finished.
#[test]
fn graded_training_with_einsum_attention_reaches_eval_loss_below_1_9() {
    let cfg = GptConfig::graded(dataset().vocab_size());
    let params = SeededVarMap::new(0);
    let model = RefGpt::new(cfg, params.var_builder(&device()), MultiHeadAttention::new)
        .expect("building MiniGPT with your attention");
    let graded = support::graded("task3");
    let last = support::graded_training("task3", &model, &params, &graded);
    assert!(
        last.eval_loss < graded.bar,
        "with your attention, after {} steps the mean eval loss over 100 batches is {:.3}, not below {}",
        last.step,
        last.eval_loss,
        graded.bar
    );
}
