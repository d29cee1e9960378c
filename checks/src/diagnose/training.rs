//! Task 4: what a wrong cross-entropy or a wrong Adam computes instead.

use reference::training::{AdamWay, BETA1, BETA2, adam_f64, cross_entropy_f64, log_sum_exp};

/// Why `got`, the learner's cross-entropy of `logits` (rows of `v`) against `targets`, is not
/// the reference's: what it matches, or what it is.
pub fn cross_entropy(got: f64, logits: &[f64], v: usize, targets: &[u32]) -> String {
    if !got.is_finite() {
        let largest = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        return format!(
            "it is {got} for logits up to {largest:.0}: exp overflows f32 above about 88, so \
             subtract each row's largest logit before exp, log softmax(z)ᵢ = zᵢ − m − log Σⱼ \
             exp(zⱼ − m)"
        );
    }
    let n = targets.len() as f64;
    let right = cross_entropy_f64(logits, v, targets);
    let rows = || logits.chunks(v).zip(targets);
    let mean =
        |f: &dyn Fn(&[f64], usize) -> f64| rows().map(|(z, &t)| f(z, t as usize)).sum::<f64>() / n;
    let candidates: [(f64, String); 6] = [
        (
            right * n,
            format!("the sum over the {n} positions: take the mean, dividing by B·T"),
        ),
        (
            -right,
            "the loss with the wrong sign: it is −log p(target), a positive number".into(),
        ),
        (
            right / v as f64,
            format!(
                "the mean over the vocabulary too: divide by the B·T positions only, not by V = {v} as well"
            ),
        ),
        (
            mean(&|z, t| -z[t]),
            "−z[target] without the log of the softmax's denominator: the loss is \
             log Σⱼ exp(zⱼ) − z[target]"
                .into(),
        ),
        (
            mean(&|z, _| log_sum_exp(z)),
            "log Σⱼ exp(zⱼ) alone: subtract the target's logit".into(),
        ),
        (
            mean(&|z, t| -(z[t] - log_sum_exp(z)).exp()),
            "minus the target's probability: take its log, −log p(target)".into(),
        ),
    ];
    let close = |want: f64| (got - want).abs() <= 1e-4 * (1.0 + want.abs());
    match candidates.iter().find(|(want, _)| close(*want)) {
        Some((_, says)) => format!("it matches {says}"),
        None => format!(
            "it is {got:.5} where the mean of −log softmax(logits)[target] is {right:.5}: \
             compute log softmax over the last dimension, pick each position's target, and \
             average over the B·T positions"
        ),
    }
}

/// Why the learner's Adam, whose parameters were `got[i]` after update i + 1, differs from
/// optax's on the same start and gradients: the mistake it matches, or what its first update
/// did.
pub fn adam(got: &[Vec<f64>], theta: &[f64], grads: &[Vec<f64>], lr: f64) -> String {
    let close = |a: &[Vec<f64>], b: &[Vec<f64>]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.iter()
                    .zip(y)
                    .all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs()))
            })
    };
    let found = AdamWay::ALL
        .into_iter()
        .skip(1)
        .find(|&way| close(got, &adam_f64(theta, grads, lr, way)));
    if let Some(way) = found {
        return format!("it matches {}", says(way));
    }
    // The first update of Adam moves a weight by lr · g / (|g| + ε): about lr, whatever g.
    let first = &got[0];
    let moved: Vec<f64> = first
        .iter()
        .zip(theta)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let typical = moved.iter().sum::<f64>() / moved.len() as f64;
    format!(
        "its first update moves the weights by {:.3}·lr on average, where Adam's first update \
         moves each weight with a gradient by almost exactly lr (m̂ = g and v̂ = g² at t = 1); \
         compare your update with θ − lr · m̂ / (√v̂ + ε) step by step",
        typical / lr
    )
}

fn says(way: AdamWay) -> String {
    let first_uncorrected = (1.0 - BETA1) / (1.0 - BETA2).sqrt();
    match way {
        AdamWay::Right => "Adam".into(),
        AdamWay::NoBiasCorrection => format!(
            "moments that are not bias-corrected: your first update moves each weight by \
             about lr·(1 − β₁)/√(1 − β₂) ≈ {first_uncorrected:.2}·lr instead of lr; divide m by \
             1 − β₁ᵗ and v by 1 − β₂ᵗ, t the number of updates so far"
        ),
        AdamWay::FirstMomentUncorrected => format!(
            "m not bias-corrected (v is): your first update moves each weight by about {:.1}·lr \
             instead of lr; divide m by 1 − β₁ᵗ",
            1.0 - BETA1
        ),
        AdamWay::SecondMomentUncorrected => format!(
            "v not bias-corrected (m is): your first update moves each weight by about {:.1}·lr \
             instead of lr; divide v by 1 − β₂ᵗ",
            1.0 / (1.0 - BETA2).sqrt()
        ),
        AdamWay::EpsilonInsideTheRoot => {
            "ε inside the square root: optax divides by √v̂ + ε, not √(v̂ + ε); the two differ \
             where a gradient is tiny"
                .into()
        }
        AdamWay::BetasSwapped => {
            format!("β₁ and β₂ swapped: m decays by β₁ = {BETA1} a step and v by β₂ = {BETA2}")
        }
        AdamWay::MomentsNotKept => {
            "moments that start from zero at every update: keep m, v and t in the optimiser \
             between updates; each of your updates is a first one, lr·g/(|g| + ε)"
                .into()
        }
        AdamWay::UphillUpdate => {
            "an update that goes uphill: θ ← θ − lr·m̂/(√v̂ + ε), with a minus".into()
        }
        AdamWay::PlainGradientDescent => {
            "plain gradient descent, θ ← θ − lr·g: Adam divides the averaged gradient m̂ by \
             √v̂ + ε"
                .into()
        }
        AdamWay::SecondMomentOfAbsolute => {
            "a second moment of |g| instead of g²: v ← β₂ v + (1 − β₂) g²".into()
        }
    }
}
