//! The training step's maths in f64: cross-entropy and its gradient, and Adam, the right way
//! and the ways of learners' mistakes (the checks name the one a wrong answer matches).

/// Mean cross-entropy of `logits`, rows of `v` values, against one target per row:
/// the mean of `log Σⱼ exp(zⱼ) − z[target]`, computed stably.
pub fn cross_entropy_f64(logits: &[f64], v: usize, targets: &[u32]) -> f64 {
    let rows = logits.chunks(v).zip(targets);
    let total: f64 = rows.map(|(z, &t)| log_sum_exp(z) - z[t as usize]).sum();
    total / targets.len() as f64
}

/// `log Σⱼ exp(zⱼ)`, with the largest value taken out first.
pub fn log_sum_exp(z: &[f64]) -> f64 {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + z.iter().map(|a| (a - max).exp()).sum::<f64>().ln()
}

/// The gradient of [`cross_entropy_f64`] with respect to the logits: (softmax − one-hot) / N.
pub fn cross_entropy_grad_f64(logits: &[f64], v: usize, targets: &[u32]) -> Vec<f64> {
    let n = targets.len() as f64;
    let mut grad = Vec::with_capacity(logits.len());
    for (z, &t) in logits.chunks(v).zip(targets) {
        let lse = log_sum_exp(z);
        grad.extend(
            z.iter()
                .enumerate()
                .map(|(j, a)| ((a - lse).exp() - f64::from(u8::from(j == t as usize))) / n),
        );
    }
    grad
}

/// How an Adam computes its update: the right way (optax's `adam`), or with a learner's
/// mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdamWay {
    Right,
    /// Neither moment divided by 1 − βᵗ.
    NoBiasCorrection,
    /// Only v bias-corrected.
    FirstMomentUncorrected,
    /// Only m bias-corrected.
    SecondMomentUncorrected,
    /// √(v̂ + ε) instead of √v̂ + ε.
    EpsilonInsideTheRoot,
    /// β₁ where β₂ belongs and back.
    BetasSwapped,
    /// The moments start from zero again at every step.
    MomentsNotKept,
    /// θ + lr · m̂ / (√v̂ + ε).
    UphillUpdate,
    /// θ − lr · g: no moments at all.
    PlainGradientDescent,
    /// The second moment from |g| instead of g².
    SecondMomentOfAbsolute,
}

impl AdamWay {
    /// Every way, the right one first.
    pub const ALL: [AdamWay; 10] = [
        AdamWay::Right,
        AdamWay::NoBiasCorrection,
        AdamWay::FirstMomentUncorrected,
        AdamWay::SecondMomentUncorrected,
        AdamWay::EpsilonInsideTheRoot,
        AdamWay::BetasSwapped,
        AdamWay::MomentsNotKept,
        AdamWay::UphillUpdate,
        AdamWay::PlainGradientDescent,
        AdamWay::SecondMomentOfAbsolute,
    ];
}

/// Adam's settings: optax's defaults.
pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
pub const EPS: f64 = 1e-8;

/// `theta` after each of the updates of Adam at `lr` with `grads[i]` as the gradient of update
/// i + 1, computed `way`.
pub fn adam_f64(theta: &[f64], grads: &[Vec<f64>], lr: f64, way: AdamWay) -> Vec<Vec<f64>> {
    use AdamWay::*;
    let (b1, b2) = match way {
        BetasSwapped => (BETA2, BETA1),
        _ => (BETA1, BETA2),
    };
    let mut theta = theta.to_vec();
    let (mut m, mut v) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
    let mut after = Vec::with_capacity(grads.len());
    for (step, g) in grads.iter().enumerate() {
        let t = if way == MomentsNotKept {
            1
        } else {
            step as i32 + 1
        };
        if way == MomentsNotKept {
            m.fill(0.0);
            v.fill(0.0);
        }
        for i in 0..theta.len() {
            if way == PlainGradientDescent {
                theta[i] -= lr * g[i];
                continue;
            }
            let second = if way == SecondMomentOfAbsolute {
                g[i].abs()
            } else {
                g[i] * g[i]
            };
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * second;
            let correct_m = !matches!(way, NoBiasCorrection | FirstMomentUncorrected);
            let correct_v = !matches!(way, NoBiasCorrection | SecondMomentUncorrected);
            let m_hat = if correct_m {
                m[i] / (1.0 - b1.powi(t))
            } else {
                m[i]
            };
            let v_hat = if correct_v {
                v[i] / (1.0 - b2.powi(t))
            } else {
                v[i]
            };
            let step = match way {
                EpsilonInsideTheRoot => lr * m_hat / (v_hat + EPS).sqrt(),
                _ => lr * m_hat / (v_hat.sqrt() + EPS),
            };
            if way == UphillUpdate {
                theta[i] += step;
            } else {
                theta[i] -= step;
            }
        }
        after.push(theta.clone());
    }
    after
}

/// nanoGPT's learning rate at step `step` (from 0): a linear warm-up to `peak` over `warmup`
/// steps, a cosine decay to `floor` at `total`, `floor` after.
pub fn schedule_f64(step: usize, warmup: usize, total: usize, peak: f64, floor: f64) -> f64 {
    if step < warmup {
        peak * (step as f64 + 1.0) / warmup as f64
    } else if step >= total {
        floor
    } else {
        let ratio = (step - warmup) as f64 / (total - warmup) as f64;
        floor + 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()) * (peak - floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gradient_of_the_cross_entropy_is_its_central_difference() {
        let logits = [0.3, -1.2, 2.0, 0.5, 0.0, -0.7];
        let targets = [2, 0];
        let grad = cross_entropy_grad_f64(&logits, 3, &targets);
        for i in 0..logits.len() {
            let (mut up, mut down) = (logits, logits);
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let numeric = (cross_entropy_f64(&up, 3, &targets)
                - cross_entropy_f64(&down, 3, &targets))
                / 2e-6;
            assert!(
                (numeric - grad[i]).abs() < 1e-8,
                "{i}: {numeric} {}",
                grad[i]
            );
        }
    }

    #[test]
    fn adams_first_step_moves_each_weight_by_the_learning_rate() {
        // m̂ = g and v̂ = g² at t = 1, so the step is lr · g / (|g| + ε).
        let after = adam_f64(&[1.0, -2.0], &[vec![0.5, -3.0]], 0.1, AdamWay::Right);
        assert!((after[0][0] - 0.9).abs() < 1e-7 && (after[0][1] + 1.9).abs() < 1e-7);
    }
}
