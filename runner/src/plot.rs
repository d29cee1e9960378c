//! The loss curve of a training run, as an SVG image.

use crate::reference::Band;
use kit::train::TrainReport;
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
    let steps = report.steps_run.max(1) as f64;
    let reference: Vec<&Band> = reference
        .iter()
        .filter(|b| b.step <= report.steps_run)
        .collect();
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
    let (lo, hi) = ((lo - 0.1).max(0.0) as f64, (hi + 0.1) as f64);
    let x = |step: f64| LEFT + step / steps * (W - LEFT - RIGHT);
    let y = |loss: f64| TOP + (hi - loss) / (hi - lo) * (H - TOP - BOTTOM);
    let mut svg = String::new();
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
    // Axes, with five ticks on each.
    let _ = writeln!(
        svg,
        r#"<path d="M{LEFT},{TOP} V{} H{}" stroke="black" fill="none"/>"#,
        H - BOTTOM,
        W - RIGHT
    );
    for i in 0..=4 {
        let loss = lo + (hi - lo) * i as f64 / 4.0;
        let step = steps * i as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{0}" y="{1}" text-anchor="end">{loss:.2}</text><line x1="{LEFT}" x2="{3}" y1="{2}" y2="{2}" stroke="#ddd"/>"##,
            LEFT - 6.0,
            y(loss) + 4.0,
            y(loss),
            W - RIGHT
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{step:.0}</text>"#,
            x(step),
            H - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 10.0
    );
    let line = |points: Vec<(f64, f64)>, colour: &str| -> String {
        let d: Vec<String> = points
            .iter()
            .map(|(s, l)| format!("{:.1},{:.1}", x(*s), y(*l)))
            .collect();
        format!(
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            d.join(" ")
        )
    };
    // The band: the reference's lowest losses left to right, then its highest right to left.
    let band = |side: fn(&Band) -> (f32, f32), colour: &str| -> String {
        let lows = reference.iter().map(|b| (b.step, side(b).0));
        let highs = reference.iter().rev().map(|b| (b.step, side(b).1));
        let d: Vec<String> = lows
            .chain(highs)
            .map(|(s, l)| format!("{:.1},{:.1}", x(s as f64), y(l as f64)))
            .collect();
        format!(
            r#"<polygon points="{}" fill="{colour}" fill-opacity="0.18"/>"#,
            d.join(" ")
        )
    };
    if reference.len() > 1 {
        let _ = writeln!(svg, "{}", band(|b| b.train, TRAIN));
        let _ = writeln!(svg, "{}", band(|b| b.eval, EVAL));
    }
    let train: Vec<(f64, f64)> = report
        .evals
        .iter()
        .map(|e| (e.step as f64, e.train_loss as f64))
        .collect();
    let eval: Vec<(f64, f64)> = report
        .evals
        .iter()
        .map(|e| (e.step as f64, e.eval_loss as f64))
        .collect();
    let _ = writeln!(svg, "{}", line(train, TRAIN));
    let _ = writeln!(svg, "{}", line(eval, EVAL));
    // The legend, top right: one row per entry.
    let mut legend = vec![
        (format!(r#"height="3" fill="{TRAIN}""#), "train"),
        (format!(r#"height="3" fill="{EVAL}""#), "eval"),
    ];
    if reference.len() > 1 {
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
    svg.push_str("</svg>\n");
    svg
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
