//! `cargo xtask bench`: one file a benchmark (the training step, attention, the matrix
//! products, LayerNorm, generation with a cache, the BPE tokenizer, GPT-2), the two timers
//! they share and the line that names the machine. Method and figures live in BENCHMARKS.md.

use std::process::ExitCode;
use std::time::Instant;
use workbook::cli::{BenchArgs, BenchWhat};

mod attention;
mod bpe;
mod generate;
mod gpt2;
mod layer_norm;
mod products;
mod train;

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchWhat::Train(a) => train::run(a, args.json),
        BenchWhat::Attention(a) => attention::run(a, args.json),
        BenchWhat::Products(a) => products::run(a, args.json),
        BenchWhat::LayerNorm(a) => layer_norm::run(a, args.json),
        BenchWhat::Generate(a) => generate::run(a, args.json),
        BenchWhat::Bpe(a) => bpe::run(a, args.json),
        BenchWhat::Gpt2(a) => gpt2::run(a, args.json),
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

/// The CPU's model name (Linux's /proc/cpuinfo) and whether it has AVX-512: what a figure
/// needs beside it to be compared.
pub(super) fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    #[cfg(target_arch = "x86_64")]
    let avx512 = if std::arch::is_x86_feature_detected!("avx512f") {
        "yes"
    } else {
        "no"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = "no (not x86-64)";
    format!("{model}, AVX-512: {avx512}")
}

/// The JSON line a peer script in `benches/` prints last, run by the Python `MINIGPT_PYTHON`
/// names (else `python3`) once it has imported `modules`; why not, if it could not run.
pub(super) fn python_peer(
    script: &str,
    modules: &str,
    args: &[String],
) -> Result<serde_json::Value, String> {
    use std::process::Command;
    let python = std::env::var("MINIGPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let without = |what: String| {
        format!(
            "{what}. For the peers' figures, a Python with `pip install {}`, named by \
             MINIGPT_PYTHON (else python3 is used).",
            modules.replace(", ", " ")
        )
    };
    let imports = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .map_err(|e| without(format!("{python} does not start ({e})")))?;
    if !imports.status.success() {
        return Err(without(format!("{python} lacks one of {modules}")));
    }
    let out = Command::new(&python)
        .arg(workbook::workspace_root().join("benches").join(script))
        .args(args)
        .output()
        .map_err(|e| without(format!("{python} does not start ({e})")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str(stdout.lines().last().unwrap_or_default()) {
        Ok(value) if out.status.success() => Ok(value),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr.lines().last().unwrap_or("no output");
            Err(format!(
                "benches/{script} failed ({why}): the figures above are ours alone"
            ))
        }
    }
}
