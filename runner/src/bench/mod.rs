//! `cargo xtask bench`: one file a benchmark (the training step, attention, the matrix
//! products, LayerNorm, generation with a cache), and the two timers they share. Method and
//! figures live in BENCHMARKS.md.

use std::process::ExitCode;
use std::time::Instant;
use workbook::cli::{BenchArgs, BenchWhat};

mod attention;
mod generate;
mod layer_norm;
mod products;
mod train;

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchWhat::Train(a) => train::run(a),
        BenchWhat::Attention(a) => attention::run(a),
        BenchWhat::Products(a) => products::run(a),
        BenchWhat::LayerNorm(a) => layer_norm::run(a),
        BenchWhat::Generate(a) => generate::run(a),
    }
}

/// The median of `xs`, which it sorts.
pub(super) fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Median milliseconds of `f` over `repeats` runs after one untimed run.
pub(super) fn time_ms(
    repeats: u64,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(repeats as usize);
    for _ in 0..repeats {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut times))
}
