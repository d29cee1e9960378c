//! `bench gpt2`: generation with Task 9's GPT-2 at GPT-2 small's size, against transformers'.

use super::median;
use crate::models::{self, Gpt2Model, Writing};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use kit::gpt2::Gpt2Config;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;
use workbook::cli::BenchGpt2Args;

/// What the peer script needs.
const PEER_MODULES: &str = "torch, transformers";

/// GPT-2 small's weights, drawn as `transformers` initialises them: every matrix from
/// N(0, 0.02²), biases 0, LayerNorms the identity; named as OpenAI's files name them.
fn random_weights(cfg: &Gpt2Config) -> candle_core::Result<HashMap<String, Tensor>> {
    let (c, cpu) = (cfg.n_embd, Device::Cpu);
    let normal = |shape: &[usize]| Tensor::randn(0f32, 0.02, shape, &cpu);
    let mut t = HashMap::new();
    t.insert("wte.weight".into(), normal(&[cfg.vocab_size, c])?);
    t.insert("wpe.weight".into(), normal(&[cfg.n_positions, c])?);
    let mut norm = |name: String| -> candle_core::Result<()> {
        t.insert(format!("{name}.weight"), Tensor::ones(c, DType::F32, &cpu)?);
        t.insert(format!("{name}.bias"), Tensor::zeros(c, DType::F32, &cpu)?);
        Ok(())
    };
    for l in 0..cfg.n_layer {
        norm(format!("h.{l}.ln_1"))?;
        norm(format!("h.{l}.ln_2"))?;
    }
    norm("ln_f".into())?;
    for l in 0..cfg.n_layer {
        for (name, n_in, n_out) in [
            ("attn.c_attn", c, 3 * c),
            ("attn.c_proj", c, c),
            ("mlp.c_fc", c, 4 * c),
            ("mlp.c_proj", 4 * c, c),
        ] {
            t.insert(format!("h.{l}.{name}.weight"), normal(&[n_in, n_out])?);
            t.insert(
                format!("h.{l}.{name}.bias"),
                Tensor::zeros(n_out, DType::F32, &cpu)?,
            );
        }
    }
    Ok(t)
}

/// The process's resident memory now and at its peak, in MB, from /proc/self/status (Linux).
fn resident_mb() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024.0 / 1e6)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub(super) fn run(args: BenchGpt2Args, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = Gpt2Config::small();
    anyhow::ensure!(
        args.prompt + args.tokens <= cfg.n_positions as u64,
        "--prompt {} and --tokens {} make more than GPT-2's {} positions",
        args.prompt,
        args.tokens,
        cfg.n_positions
    );
    let threads = kit::ops::threads();
    print_setup(&args, &cfg, threads);
    let weights = random_weights(&cfg)?;
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let model = models::gpt2(!args.yours, &cfg, vb)?;
    let memory = resident_mb();
    let mut runs = time_generation(model.as_ref(), &args, &cfg)?;
    let seconds = median(&mut runs);
    let ours = args.tokens as f64 / seconds;
    let peer = transformers_peer(&args, threads);
    print_results(&args, &cfg, ours, &peer, memory);
    if json {
        let params = cfg.parameters();
        let (rss, peak) = memory.unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{}",
            serde_json::json!({
                "tokens_per_s": ours, "runs_s": runs, "threads": threads,
                "prompt": args.prompt, "new": args.tokens,
                "gpt2": if args.yours { "yours" } else { "reference" },
                "parameters": params, "rss_mb": rss, "peak_rss_mb": peak,
                "transformers": peer.ok(),
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What the bench runs, said before it runs.
fn print_setup(args: &BenchGpt2Args, cfg: &Gpt2Config, threads: usize) {
    let whose = if args.yours {
        "yours (exercises/src/task9.rs)"
    } else {
        "the reference solution's (--yours times your own)"
    };
    println!(
        "GPT-2 small's shape ({} blocks of {} heads, width {}, {} tokens, {} positions), random \
         weights; greedy, a prompt of {} tokens and {} new ones with the KV cache; median of {} \
         runs; {threads} thread{} (MINIGPT_THREADS) for kit's ops and as many for PyTorch. \
         GPT-2 and generate timed: {whose}",
        cfg.n_layer,
        cfg.n_head,
        cfg.n_embd,
        cfg.vocab_size,
        cfg.n_positions,
        args.prompt,
        args.tokens,
        args.repeats,
        if threads == 1 { "" } else { "s" },
    );
}

/// The seconds of each timed run of greedy generation with the cache, after one untimed.
fn time_generation(
    model: &dyn Gpt2Model,
    args: &BenchGpt2Args,
    cfg: &Gpt2Config,
) -> anyhow::Result<Vec<f64>> {
    let prompt: Vec<u32> = (0..args.prompt as u32)
        .map(|i| (i * 7919 + 13) % cfg.vocab_size as u32)
        .collect();
    let n = args.tokens as usize;
    let greedy = Writing {
        temperature: 0.0,
        top_k: None,
        top_p: None,
        seed: 0,
        use_cache: true,
        stop: None,
    };
    let run = || -> anyhow::Result<f64> {
        let start = Instant::now();
        let out = model.write(&prompt, n, greedy)?;
        anyhow::ensure!(
            out.len() == prompt.len() + n,
            "generate wrote {} tokens",
            out.len()
        );
        Ok(start.elapsed().as_secs_f64())
    };
    run()?;
    (0..args.repeats).map(|_| run()).collect()
}

/// The table of tokens a second, ours beside transformers', and the memory.
fn print_results(
    args: &BenchGpt2Args,
    cfg: &Gpt2Config,
    ours: f64,
    peer: &Result<serde_json::Value, String>,
    memory: Option<(f64, f64)>,
) {
    println!("{:<42} {:>10} {:>10}", "", "tokens/s", "ms/token");
    println!(
        "{:<42} {ours:>10.1} {:>10.1}",
        if args.yours {
            "yours"
        } else {
            "the reference's"
        },
        1e3 / ours
    );
    match peer {
        Ok(p) => println!(
            "{:<42} {:>10.1} {:>10.1}",
            format!(
                "transformers {} (torch {})",
                p["transformers"].as_str().unwrap_or("?"),
                p["torch"].as_str().unwrap_or("?")
            ),
            p["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
            p["ms_per_token"].as_f64().unwrap_or(f64::NAN)
        ),
        Err(why) => println!("transformers not timed: {why}"),
    }
    let params = cfg.parameters();
    let (rss, peak) = memory.unwrap_or((f64::NAN, f64::NAN));
    println!(
        "Memory: {params} parameters, {:.1} MB in f32; this process held {rss:.0} MB once the \
         model was built ({peak:.0} MB at its peak, while the weights it was built from were \
         still held){}",
        params as f64 * 4.0 / 1e6,
        match peer {
            Ok(p) => format!(
                "; the transformers process peaked at {:.0} MB",
                p["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
            ),
            Err(_) => String::new(),
        }
    );
}

/// `benches/gpt2_peers.py`'s JSON line, on `threads` threads; why not, if it could not run.
fn transformers_peer(args: &BenchGpt2Args, threads: usize) -> Result<serde_json::Value, String> {
    let args = [
        "--threads".to_string(),
        threads.to_string(),
        "--prompt".to_string(),
        args.prompt.to_string(),
        "--new".to_string(),
        args.tokens.to_string(),
        "--repeats".to_string(),
        args.repeats.to_string(),
    ];
    super::python_peer("gpt2_peers.py", PEER_MODULES, &args)
}
