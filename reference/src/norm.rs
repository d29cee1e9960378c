//! LayerNorm's backward pass in f64, the right way and the ways of learners' mistakes, and its
//! forward pass with the mistakes too (the checks name the one a wrong answer matches).

/// LayerNorm's epsilon (Flax's).
pub const EPS: f64 = 1e-6;

/// How a LayerNorm's forward pass is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    Right,
    /// σ² over C − 1.
    UnbiasedVariance,
    /// (x − μ) / (σ + ε).
    EpsilonOutsideTheRoot,
    /// No mean subtracted: x / √(mean(x²) + ε).
    MeanNotSubtracted,
    /// γ x̂, no β.
    ShiftNotAdded,
    /// x̂ + β, no γ.
    ScaleNotApplied,
    /// β x̂ + γ.
    ScaleAndShiftSwapped,
}

impl Forward {
    pub const MISTAKES: [Forward; 6] = [
        Forward::UnbiasedVariance,
        Forward::EpsilonOutsideTheRoot,
        Forward::MeanNotSubtracted,
        Forward::ShiftNotAdded,
        Forward::ScaleNotApplied,
        Forward::ScaleAndShiftSwapped,
    ];
}

/// Rows of `c` values of `x`, normalised `way`, with scale `g` and shift `b`, ε = [`EPS`].
pub fn layer_norm_way_f64(x: &[f64], c: usize, g: &[f64], b: &[f64], way: Forward) -> Vec<f64> {
    layer_norm_eps_way_f64(x, c, g, b, EPS, way)
}

/// [`layer_norm_way_f64`] with ε = `eps` (GPT-2's is 1e-5).
pub fn layer_norm_eps_way_f64(
    x: &[f64],
    c: usize,
    g: &[f64],
    b: &[f64],
    eps: f64,
    way: Forward,
) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let n = c as f64;
        let mean = if way == Forward::MeanNotSubtracted {
            0.0
        } else {
            row.iter().sum::<f64>() / n
        };
        let squares = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        let var = match way {
            Forward::UnbiasedVariance => squares / (n - 1.0).max(1.0),
            _ => squares / n,
        };
        let denominator = match way {
            Forward::EpsilonOutsideTheRoot => var.sqrt() + eps,
            _ => (var + eps).sqrt(),
        };
        y.extend(row.iter().enumerate().map(|(i, v)| {
            let h = (v - mean) / denominator;
            match way {
                Forward::ShiftNotAdded => g[i] * h,
                Forward::ScaleNotApplied => h + b[i],
                Forward::ScaleAndShiftSwapped => b[i] * h + g[i],
                _ => g[i] * h + b[i],
            }
        }));
    }
    y
}

/// How the gradient with respect to the input is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dx {
    /// r (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)), with ĝ = dy ⊙ γ.
    Right,
    /// The mean(ĝ) term left out: μ treated as a constant.
    MeanTermMissing,
    /// The x̂ mean(ĝ x̂) term left out: r treated as a constant.
    VarianceTermMissing,
    /// r ĝ alone: μ and r both treated as constants.
    BothTermsMissing,
    /// dy in place of dy ⊙ γ.
    ScaleMissing,
    /// Without the factor r.
    RMissing,
}

impl Dx {
    pub const MISTAKES: [Dx; 5] = [
        Dx::MeanTermMissing,
        Dx::VarianceTermMissing,
        Dx::BothTermsMissing,
        Dx::ScaleMissing,
        Dx::RMissing,
    ];
}

/// How the gradients of the scale and the shift are gathered over the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dparams {
    /// dγ = Σ over rows of dy ⊙ x̂, dβ = Σ over rows of dy.
    Right,
    /// Only the last row's part: each row overwrote instead of adding.
    LastRowOnly,
    /// dγ = Σ dy, dβ = Σ dy ⊙ x̂: the two swapped.
    Swapped,
    /// dγ = Σ dy ⊙ x (not x̂).
    ScaleFromInput,
}

impl Dparams {
    pub const MISTAKES: [Dparams; 3] = [
        Dparams::LastRowOnly,
        Dparams::Swapped,
        Dparams::ScaleFromInput,
    ];
}

/// The gradients of LayerNorm (rows of `c` values of `x`, scale `g`) for the upstream
/// gradient `dy`: (dx, dγ, dβ), dx computed `dx_way` and dγ, dβ `params_way`.
pub fn layer_norm_backward_f64(
    x: &[f64],
    c: usize,
    g: &[f64],
    dy: &[f64],
    (dx_way, params_way): (Dx, Dparams),
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = c as f64;
    let (mut dx, mut dg, mut db) = (Vec::with_capacity(x.len()), vec![0.0; c], vec![0.0; c]);
    for (row, dyr) in x.chunks(c).zip(dy.chunks(c)) {
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let r = 1.0 / (var + EPS).sqrt();
        let h: Vec<f64> = row.iter().map(|v| (v - mean) * r).collect();
        let gh: Vec<f64> = match dx_way {
            Dx::ScaleMissing => dyr.to_vec(),
            _ => dyr.iter().zip(g).map(|(d, g)| d * g).collect(),
        };
        let mean_g = gh.iter().sum::<f64>() / n;
        let mean_gh = gh.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>() / n;
        for i in 0..c {
            let (m, v) = match dx_way {
                Dx::MeanTermMissing => (0.0, h[i] * mean_gh),
                Dx::VarianceTermMissing => (mean_g, 0.0),
                Dx::BothTermsMissing => (0.0, 0.0),
                _ => (mean_g, h[i] * mean_gh),
            };
            let factor = if dx_way == Dx::RMissing { 1.0 } else { r };
            dx.push(factor * (gh[i] - m - v));
        }
        if params_way == Dparams::LastRowOnly {
            dg.fill(0.0);
            db.fill(0.0);
        }
        for i in 0..c {
            let (scale_part, shift_part) = match params_way {
                Dparams::Swapped => (dyr[i], dyr[i] * h[i]),
                Dparams::ScaleFromInput => (dyr[i] * row[i], dyr[i]),
                _ => (dyr[i] * h[i], dyr[i]),
            };
            dg[i] += scale_part;
            db[i] += shift_part;
        }
    }
    (dx, dg, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σᵢ wᵢ yᵢ for the LayerNorm of `x`: a loss whose ∂/∂y is `w`.
    fn loss(x: &[f64], c: usize, g: &[f64], b: &[f64], w: &[f64]) -> f64 {
        layer_norm_way_f64(x, c, g, b, Forward::Right)
            .iter()
            .zip(w)
            .map(|(y, w)| y * w)
            .sum()
    }

    #[test]
    fn the_backward_pass_is_the_central_difference_of_the_forward_pass() {
        let (x, c) = ([0.3, -1.2, 2.0, 0.5, 0.0, -0.7, 1.1, 0.4], 4);
        let (g, b) = ([1.5, 0.5, -1.0, 2.0], [0.1, 0.0, -0.2, 0.3]);
        let w = [0.2, -0.5, 1.0, 0.7, -1.3, 0.4, 0.0, 0.9];
        let (dx, dg, db) = layer_norm_backward_f64(&x, c, &g, &w, (Dx::Right, Dparams::Right));
        let numeric = |f: &dyn Fn(f64) -> f64| (f(1e-6) - f(-1e-6)) / 2e-6;
        for i in 0..x.len() {
            let moved = |h: f64| {
                let mut x = x;
                x[i] += h;
                loss(&x, c, &g, &b, &w)
            };
            assert!((numeric(&moved) - dx[i]).abs() < 1e-7, "dx[{i}]");
        }
        for i in 0..c {
            let scale = |h: f64| {
                let mut g = g;
                g[i] += h;
                loss(&x, c, &g, &b, &w)
            };
            let shift = |h: f64| {
                let mut b = b;
                b[i] += h;
                loss(&x, c, &g, &b, &w)
            };
            assert!((numeric(&scale) - dg[i]).abs() < 1e-7, "dg[{i}]");
            assert!((numeric(&shift) - db[i]).abs() < 1e-7, "db[{i}]");
        }
    }
}
