//! Task 5: what a wrong LayerNorm computes, forward and backward.

use reference::norm::{Dparams, Dx, Forward, layer_norm_backward_f64, layer_norm_way_f64};

/// Whether two outputs agree to `1e-4`, relative to their size.
fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
}

/// What the learner's forward pass `got` on `x` (rows of `c`) with scale `g` and shift `b`
/// matches, if it is a known mistake.
pub fn forward(got: &[f64], x: &[f64], c: usize, g: &[f64], b: &[f64]) -> String {
    let found = Forward::MISTAKES
        .into_iter()
        .find(|&way| close(got, &layer_norm_way_f64(x, c, g, b, way)));
    match found {
        Some(Forward::UnbiasedVariance) => "it matches a variance divided by C − 1: LayerNorm \
            divides by C, the mean of the squared deviations"
            .into(),
        Some(Forward::EpsilonOutsideTheRoot) => {
            "it matches (x − μ)/(σ + ε): ε goes inside the root, √(σ² + ε)".into()
        }
        Some(Forward::MeanNotSubtracted) => "it matches x/√(mean(x²) + ε), without μ: subtract \
            the row's mean first (that is RMSNorm, Task 7's)"
            .into(),
        Some(Forward::ShiftNotAdded) => "it matches γ x̂ without β: add the shift".into(),
        Some(Forward::ScaleNotApplied) => {
            "it matches x̂ + β without γ: multiply by the scale".into()
        }
        Some(Forward::ScaleAndShiftSwapped) => "it matches β x̂ + γ: γ scales and β shifts".into(),
        _ => "it is none of the usual mistakes: compute μ, then σ² over C, then r = 1/√(σ² + \
            ε), then γᵢ (xᵢ − μ) r + βᵢ, for one row at a time"
            .into(),
    }
}

/// Which of the learner's gradients `(dx, dγ, dβ)` are wrong, and what each matches, for
/// `x` (rows of `c`), scale `g` and upstream gradient `dy`; `None` if all three are right.
pub fn backward(
    got: (&[f64], &[f64], &[f64]),
    x: &[f64],
    c: usize,
    g: &[f64],
    dy: &[f64],
) -> Option<String> {
    let right = layer_norm_backward_f64(x, c, g, dy, (Dx::Right, Dparams::Right));
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
    if !(finite(got.0) && finite(got.1) && finite(got.2)) {
        return Some(
            "the backward pass gives NaN or ∞: on a row whose values are (almost) all equal, σ² \
             is about 0, and r = 1/√σ² without ε divides by it. Recompute r = 1/√(σ² + ε) with \
             the forward pass's ε, as x̂ = (x − μ)·r was computed"
                .into(),
        );
    }
    let mut said = Vec::new();
    if !close(got.0, &right.0) {
        let found = Dx::MISTAKES.into_iter().find(|&way| {
            close(
                got.0,
                &layer_norm_backward_f64(x, c, g, dy, (way, Dparams::Right)).0,
            )
        });
        said.push(match found {
            Some(Dx::MeanTermMissing) => "dx matches r·(ĝ − x̂·mean(ĝ x̂)) without the mean(ĝ) \
                term: moving one xⱼ moves μ, and every x̂ᵢ subtracts μ"
                .to_string(),
            Some(Dx::VarianceTermMissing) => "dx matches r·(ĝ − mean(ĝ)) without the \
                x̂·mean(ĝ x̂) term: moving one xⱼ moves σ², and with it r, which scales every x̂ᵢ"
                .into(),
            Some(Dx::BothTermsMissing) => "dx matches r·ĝ alone: as if μ and r did not depend on \
                x; both do, which gives two more terms"
                .into(),
            Some(Dx::ScaleMissing) => "dx matches the formula with dy where dy ⊙ γ belongs: the \
                gradient reaching x̂ has passed through the scale"
                .into(),
            Some(Dx::RMissing) => "dx matches the right formula without its factor r = 1/√(σ² + \
                ε): x̂ is (x − μ)·r"
                .into(),
            _ => "dx is none of the usual mistakes: with ĝ = dy ⊙ γ, dxⱼ = r·(ĝⱼ − mean(ĝ) − \
                x̂ⱼ·mean(ĝ ⊙ x̂)); the two identities Σ dx = 0 and Σ dx·x̂ = 0 are a test"
                .into(),
        });
    }
    if !close(got.1, &right.1) || !close(got.2, &right.2) {
        let found = Dparams::MISTAKES.into_iter().find(|&way| {
            let (_, dg, db) = layer_norm_backward_f64(x, c, g, dy, (Dx::Right, way));
            close(got.1, &dg) && close(got.2, &db)
        });
        said.push(match found {
            Some(Dparams::LastRowOnly) => "dγ and dβ hold only the last row's part: every row \
                used γ and β, so add each row's part into them (+=), do not overwrite"
                .to_string(),
            Some(Dparams::Swapped) => {
                "dγ and dβ are swapped: dγ gathers dy ⊙ x̂, dβ gathers dy".into()
            }
            Some(Dparams::ScaleFromInput) => "dγ gathers dy ⊙ x where it should gather dy ⊙ x̂: \
                γ multiplies the normalised x̂"
                .into(),
            _ => "dγ or dβ is wrong: over the rows, dγ is the sum of dy ⊙ x̂ and dβ the sum of \
                dy"
            .into(),
        });
    }
    (!said.is_empty()).then(|| said.join("; and "))
}
