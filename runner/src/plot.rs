//! The loss curve of a training run, as an SVG image.

use kit::train::TrainReport;
use reference::curves::Band;
use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

const TRAIN: &str = "#1f77b4";
const EVAL: &str = "#d62728";

/// Train loss (a running mean per evaluation interval) and eval loss against the step, over
/// the `reference` band (the reference solution's spread over a few seeds) where given.
pub fn loss_curve_svg(report: &TrainReport, title: &str, reference: &[Band]) -> String {
    let reference: Vec<&Band> = reference
        .iter()
        .filter(|b| b.step <= report.steps_run)
        .collect();
    let (lo, hi) = loss_range(report, &reference);
    let scale = Scale {
        steps: report.steps_run.max(1) as f64,
        lo,
        hi,
    };
    let mut svg = String::new();
    write_title(&mut svg, title);
    write_axes(&mut svg, &scale);
    // The bands first, so that the run's lines lie on top.
    if reference.len() > 1 {
        let _ = writeln!(svg, "{}", scale.band(&reference, |b| b.train, TRAIN));
        let _ = writeln!(svg, "{}", scale.band(&reference, |b| b.eval, EVAL));
    }
    let train = report.evals.iter().map(|e| (e.step, e.train_loss));
    let eval = report.evals.iter().map(|e| (e.step, e.eval_loss));
    let _ = writeln!(svg, "{}", scale.line(train, TRAIN));
    let _ = writeln!(svg, "{}", scale.line(eval, EVAL));
    write_legend(&mut svg, reference.len() > 1);
    svg.push_str("</svg>\n");
    svg
}

/// The losses' axis, from the lowest to the highest loss drawn, the run's and the reference's,
/// 0.1 beyond each (not below 0); 0 to 5 when they give no range.
fn loss_range(report: &TrainReport, reference: &[&Band]) -> (f64, f64) {
    let losses: Vec<f32> = report
        .evals
        .iter()
        .flat_map(|e| [e.train_loss, e.eval_loss])
        .chain(
            reference
                .iter()
                .flat_map(|b| [b.train.0, b.train.1, b.eval.0, b.eval.1]),
        )
        .collect();
    let (mut lo, mut hi) = losses
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    if !(lo.is_finite() && hi.is_finite()) || lo >= hi {
        (lo, hi) = (0.0, 5.0);
    }
    ((lo - 0.1).max(0.0) as f64, (hi + 0.1) as f64)
}

/// Where a step and a loss fall in the image: steps 0 to `steps` left to right, losses `lo` to
/// `hi` bottom to top.
struct Scale {
    steps: f64,
    lo: f64,
    hi: f64,
}

impl Scale {
    /// How far right `step` is.
    fn x(&self, step: f64) -> f64 {
        LEFT + step / self.steps * (W - LEFT - RIGHT)
    }

    /// How far down `loss` is.
    fn y(&self, loss: f64) -> f64 {
        TOP + (self.hi - loss) / (self.hi - self.lo) * (H - TOP - BOTTOM)
    }

    /// The SVG points of (step, loss) pairs.
    fn points(&self, points: impl Iterator<Item = (usize, f32)>) -> String {
        let d: Vec<String> = points
            .map(|(s, l)| format!("{:.1},{:.1}", self.x(s as f64), self.y(l as f64)))
            .collect();
        d.join(" ")
    }

    /// A loss curve, in `colour`.
    fn line(&self, points: impl Iterator<Item = (usize, f32)>, colour: &str) -> String {
        format!(
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            self.points(points)
        )
    }

    /// The band of `side` (train or eval), in `colour`: the reference's lowest losses left to
    /// right, then its highest right to left.
    fn band(&self, reference: &[&Band], side: fn(&Band) -> (f32, f32), colour: &str) -> String {
        let lows = reference.iter().map(|b| (b.step, side(b).0));
        let highs = reference.iter().rev().map(|b| (b.step, side(b).1));
        format!(
            r#"<polygon points="{}" fill="{colour}" fill-opacity="0.18"/>"#,
            self.points(lows.chain(highs))
        )
    }
}

/// The image's opening, its white background and its title.
fn write_title(svg: &mut String, title: &str) {
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{title}: loss against step</text>"#,
        W / 2.0
    );
}

/// The axes, with five ticks on each, and the steps' label.
fn write_axes(svg: &mut String, scale: &Scale) {
    let _ = writeln!(
        svg,
        r#"<path d="M{LEFT},{TOP} V{} H{}" stroke="black" fill="none"/>"#,
        H - BOTTOM,
        W - RIGHT
    );
    for i in 0..=4 {
        let loss = scale.lo + (scale.hi - scale.lo) * i as f64 / 4.0;
        let step = scale.steps * i as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{0}" y="{1}" text-anchor="end">{loss:.2}</text><line x1="{LEFT}" x2="{3}" y1="{2}" y2="{2}" stroke="#ddd"/>"##,
            LEFT - 6.0,
            scale.y(loss) + 4.0,
            scale.y(loss),
            W - RIGHT
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{step:.0}</text>"#,
            scale.x(step),
            H - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 10.0
    );
}

/// The legend, top right: one row per entry, the reference's band last where it is drawn.
fn write_legend(svg: &mut String, with_band: bool) {
    let mut legend = vec![
        (format!(r#"height="3" fill="{TRAIN}""#), "train"),
        (format!(r#"height="3" fill="{EVAL}""#), "eval"),
    ];
    if with_band {
        let swatch = r##"height="10" fill="#888" fill-opacity="0.3""##.to_string();
        legend.push((swatch, "reference (band)"));
    }
    let (left, top) = (W - RIGHT - 150.0, TOP + 10.0);
    for (i, (swatch, label)) in legend.iter().enumerate() {
        let row = top + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{left}" y="{row}" width="12" {swatch}/><text x="{}" y="{}">{label}</text>"#,
            left + 18.0,
            row + 4.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::train::EvalPoint;

    fn report() -> TrainReport {
        let evals = (1..=4)
            .map(|i| EvalPoint {
                step: 100 * i,
                train_loss: 3.0 - 0.2 * i as f32,
                eval_loss: 3.1 - 0.2 * i as f32,
                eval_batches: 1,
            })
            .collect();
        TrainReport {
            evals,
            steps_run: 400,
            ..TrainReport::default()
        }
    }

    #[test]
    fn the_reference_band_is_drawn_under_the_run_and_labelled() {
        let bands: Vec<Band> = (1..=8)
            .map(|i| Band {
                step: 100 * i,
                train: (2.9 - 0.2 * i as f32, 3.0 - 0.2 * i as f32),
                eval: (3.0 - 0.2 * i as f32, 3.1 - 0.2 * i as f32),
            })
            .collect();
        let svg = loss_curve_svg(&report(), "task1", &bands);
        assert_eq!(
            svg.matches("<polygon").count(),
            2,
            "a train and an eval band"
        );
        assert!(svg.contains("reference (band)"), "{svg}");
        // Drawn first, so the run's lines lie on top; and only up to the run's last step.
        assert!(svg.find("<polygon").unwrap() < svg.find("<polyline").unwrap());
        let band = svg.lines().find(|l| l.starts_with("<polygon")).unwrap();
        assert_eq!(
            band.matches(',').count(),
            8,
            "four steps, low then high: {band}"
        );

        let plain = loss_curve_svg(&report(), "task1", &[]);
        assert!(!plain.contains("<polygon") && !plain.contains("reference"));
        assert_eq!(plain.matches("<polyline").count(), 2);
    }
}
