//! The loss curve of a training run, as an SVG image.

use kit::train::TrainReport;
use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Train loss (a running mean per evaluation interval) and eval loss against the step.
pub fn loss_curve_svg(report: &TrainReport, title: &str) -> String {
    let steps = report.steps_run.max(1) as f64;
    let losses: Vec<f32> = report
        .evals
        .iter()
        .flat_map(|e| [e.train_loss, e.eval_loss])
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
    let _ = writeln!(svg, "{}", line(train, "#1f77b4"));
    let _ = writeln!(svg, "{}", line(eval, "#d62728"));
    let _ = writeln!(
        svg,
        r##"<rect x="{0}" y="{1}" width="12" height="3" fill="#1f77b4"/><text x="{2}" y="{3}">train</text><rect x="{0}" y="{4}" width="12" height="3" fill="#d62728"/><text x="{2}" y="{5}">eval</text>"##,
        W - RIGHT - 90.0,
        TOP + 10.0,
        W - RIGHT - 72.0,
        TOP + 14.0,
        TOP + 28.0,
        TOP + 32.0
    );
    svg.push_str("</svg>\n");
    svg
}
