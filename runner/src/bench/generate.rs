//! `bench generate`: generation with and without a KV cache.

use super::time_ms;
use crate::models::{self, TextModel};
use candle_core::Device;
use kit::{Dataset, GptConfig, SeededVarMap};
use std::process::ExitCode;
use workbook::cli::BenchGenerateArgs;

/// Tokens per second of generation with and without Task 6's KV cache (the learner's with
/// `--yours`, else the reference solution's), on the graded MiniGPT with Task 3's attention and
/// random weights, at a short and a long context: from a prompt of one token, as many new
/// tokens as the context holds (so the cache is never rebuilt).
pub(super) fn run(args: BenchGenerateArgs, json: bool) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let vocab = Dataset::load()?.vocab_size();
    let whose = if args.yours {
        "yours (exercises/src/task6.rs)"
    } else {
        "the reference solution's (--yours times your own)"
    };
    println!(
        "Generation, MiniGPT (4 layers, 4 heads, hidden 128) with Task 3's attention, from one \
         token to a full context; median of {} runs. The KV cache and generate_cached timed: \
         {whose}",
        args.repeats
    );
    println!(
        "{:<8} {:>18} {:>18} {:>10}",
        "block", "no cache (tok/s)", "cache (tok/s)", "speed-up"
    );
    let mut rows = Vec::new();
    for block in [32usize, 256] {
        let cfg = GptConfig {
            block_size: block,
            ..GptConfig::graded(vocab)
        };
        let params = SeededVarMap::new(0);
        let [without, with] =
            models::with_and_without_cache(cfg, args.yours, params.var_builder(&device))?;
        let rate = |m: &dyn TextModel| -> anyhow::Result<f64> {
            let ms = time_ms(args.repeats, || {
                m.write(&mut kit::Sampler::new(0), &[0], block - 1)
                    .map(|_| ())
            })?;
            Ok((block - 1) as f64 / (ms / 1e3))
        };
        let (slow, fast) = (rate(without.as_ref())?, rate(with.as_ref())?);
        println!("{block:<8} {slow:>18.0} {fast:>18.0} {:>9.1}x", fast / slow);
        rows.push(serde_json::json!({
            "block": block, "uncached_tokens_per_s": slow, "cached_tokens_per_s": fast, "speedup": fast / slow,
            "cache": if args.yours { "yours" } else { "reference" },
        }));
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(ExitCode::SUCCESS)
}
