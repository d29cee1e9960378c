//! `cargo xtask bench`: training-step, attention and matrix-product timings. Method and
//! figures live in BENCHMARKS.md.

use crate::models::{self, TextModel};
use anyhow::Context as _;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use kit::adam::{Adam, ParamsAdam};
use kit::data::Batch;
use kit::train::{Evaluation, TrainConfig};
use kit::{Dataset, GptConfig, SeededVarMap};
use rand::SeedableRng;
use std::process::ExitCode;
use std::time::Instant;
use workbook::cli::{
    BenchArgs, BenchAttentionArgs, BenchGenerateArgs, BenchLayerNormArgs, BenchTrainArgs, BenchWhat,
};
use workbook::tasks::{ModelCommand, Task, TaskList};

mod products;

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchWhat::Train(a) => train(a),
        BenchWhat::Attention(a) => attention(a),
        BenchWhat::Products(a) => products::run(a),
        BenchWhat::LayerNorm(a) => layer_norm(a),
        BenchWhat::Generate(a) => generate(a),
    }
}

/// Tokens per second of generation with and without Task 6's KV cache (the learner's with
/// `--yours`, else the reference solution's), on the graded MiniGPT with Task 3's attention and
/// random weights, at a short and a long context: from a prompt of one token, as many new
/// tokens as the context holds (so the cache is never rebuilt).
fn generate(args: BenchGenerateArgs) -> anyhow::Result<ExitCode> {
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
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// Task 5's LayerNorm against kit's fused and composed ones: forward, and forward plus the
/// backward pass of the sum of squares, on a training step's activations, (B·T, C).
fn layer_norm(args: BenchLayerNormArgs) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let (b, t, c) = (16, 32, 128);
    let params = SeededVarMap::new(0);
    let norms = models::layer_norms(c, args.yours, params.var_builder(&device))?;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, c), &device)?)?;
    println!(
        "LayerNorm of ({b}, {t}, {c}), the activations of a training step; median of {} runs (ms)",
        args.repeats
    );
    println!("{:<26} {:>10} {:>18}", "", "forward", "forward+backward");
    let mut rows = Vec::new();
    for (name, m) in &norms {
        let forward = time_ms(args.repeats, || m.forward(x.as_tensor()).map(|_| ()))?;
        let both = time_ms(args.repeats, || {
            let y = m.forward(x.as_tensor())?;
            y.sqr()?.sum_all()?.backward().map(|_| ())
        })?;
        println!("{name:<26} {forward:>10.3} {both:>18.3}");
        rows.push(serde_json::json!({ "layer_norm": name, "forward_ms": forward, "forward_backward_ms": both }));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// `bench train`: the median training step of a task's reference model at its graded
/// settings, its dense products' rate and an evaluation's time, as text and, with `--json`, as
/// one JSON object.
fn train(args: BenchTrainArgs) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let list = TaskList::here()?;
    let task = bench_task(&list, args.task.as_deref())?;
    let data = Dataset::load()?;
    let cfg = GptConfig::graded(data.vocab_size());
    let graded = task
        .graded
        .map(|g| g.graded().config)
        .unwrap_or(TrainConfig::CHALLENGE);
    let params = SeededVarMap::new(0);
    let model = models::build(&task.name, true, cfg, params.var_builder(&device))?;
    let (vars, lr) = (params.varmap().all_vars(), graded.learning_rate);
    let parts = args.parts as usize;
    // Both are the challenge's plain Adam and differ in speed only: kit's, one in-place pass
    // per parameter (what training uses), or candle-nn's `AdamW` without weight decay, built
    // from candle's elementary ops (the "before" figure of `--composed`).
    let steps = if args.composed {
        let params = ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        let optimiser = AdamW::new(vars, params)?;
        time_and_break_down(model.as_ref(), optimiser, &data, &graded, &args)?
    } else {
        let optimiser = Adam::new(
            vars,
            ParamsAdam {
                lr,
                ..ParamsAdam::default()
            },
        )?;
        time_and_break_down(model.as_ref(), optimiser, &data, &graded, &args)?
    };
    let ops = if args.composed { "composed" } else { "fused" };
    print_steps(&task.title, &graded, &args, ops, &steps);
    let (gflop, gflops) = dense_products(task, &cfg, &graded, parts, steps.ms);
    let eval_ms = time_evaluation(model.as_ref(), &data, &graded, args.eval_repeats)?;
    if let Some(phases) = &steps.breakdown {
        println!("{phases}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ms_per_step": steps.ms,
                "eval_100_batches_ms": eval_ms,
                "mean_ms_per_step": steps.mean,
                "tokens_per_s": steps.tokens_per_s,
                "dense_gflop_per_step": gflop,
                "dense_gflops": gflops,
                "steps": args.steps,
                "threads": steps.threads,
                "op_threads": steps.op_threads,
                "parts": parts,
                "task": task.name,
                "ops": ops,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The task `bench train` times: `--task`, else the first in tasks.toml with a bench, if
/// tasks.toml gives it a bench.
fn bench_task<'a>(list: &'a TaskList, task: Option<&str>) -> anyhow::Result<&'a Task> {
    let task = match task {
        Some(name) => list.get(name).map_err(anyhow::Error::msg)?,
        None => list
            .default_bench()
            .context("no task in tasks.toml has a bench")?,
    };
    anyhow::ensure!(
        task.allows(ModelCommand::Bench),
        "{} has no bench in tasks.toml: its model is not one `bench train` times",
        task.name
    );
    Ok(task)
}

/// What the timed steps of `bench train` came to, and the threads they ran on.
struct StepTimes {
    /// The median and the mean milliseconds of a step.
    ms: f64,
    mean: f64,
    /// Tokens a second at the median step.
    tokens_per_s: f64,
    last_loss: f32,
    /// candle's threads, and kit's fused ops'.
    threads: usize,
    op_threads: usize,
    /// With `--breakdown`, the line of [`breakdown`].
    breakdown: Option<String>,
}

/// [`time_steps`] with `optimiser`, then, with `--breakdown`, [`breakdown`].
fn time_and_break_down<O: Optimizer + Send>(
    model: &dyn TextModel,
    mut optimiser: O,
    data: &Dataset,
    graded: &TrainConfig,
    args: &BenchTrainArgs,
) -> anyhow::Result<StepTimes> {
    let mut steps = time_steps(model, &mut optimiser, data, graded, args)?;
    if args.breakdown {
        steps.breakdown = Some(breakdown(model, &mut optimiser, data, graded, args.steps)?);
    }
    Ok(steps)
}

/// Times `args.steps` of kit's training steps after `args.warmup` untimed ones, each on a batch
/// of the graded size cut into `args.parts` parts, run as the training loop runs them.
fn time_steps<O: Optimizer + Send>(
    model: &dyn TextModel,
    optimiser: &mut O,
    data: &Dataset,
    graded: &TrainConfig,
    args: &BenchTrainArgs,
) -> anyhow::Result<StepTimes> {
    let (batch_size, block_size) = (graded.batch_size, graded.block_size);
    let parts = args.parts as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut times = Vec::with_capacity(args.steps as usize);
    let mut last_loss = 0.0;
    for i in 0..args.warmup + args.steps {
        let batch = Batch::sample(&mut rng, &data.train, batch_size, block_size)?;
        let start = Instant::now();
        let (x, y) = batch.to_tensors(&Device::Cpu)?;
        let step = || kit::train::step_in_parts(model, &mut *optimiser, &x, &y, parts);
        last_loss = kit::ops::on_pool(step)?;
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let ms = median(&mut times);
    Ok(StepTimes {
        ms,
        mean,
        tokens_per_s: (batch_size * block_size) as f64 / (ms / 1e3),
        last_loss,
        threads: candle_core::utils::get_num_threads(),
        op_threads: kit::ops::threads(),
        breakdown: None,
    })
}

/// What was timed, and how its steps went.
fn print_steps(
    title: &str,
    graded: &TrainConfig,
    args: &BenchTrainArgs,
    ops: &str,
    steps: &StepTimes,
) {
    let (batch_size, block_size, lr) = (graded.batch_size, graded.block_size, graded.learning_rate);
    let (threads, op_threads, parts) = (steps.threads, steps.op_threads, args.parts);
    println!(
        "{title} (4 layers, 4 heads, hidden 128), batch {batch_size}, block {block_size}, Adam {lr}: \
         {ops} ops, {threads} candle thread(s), {op_threads} fused-op thread(s), \
         batch in {parts} part(s)"
    );
    println!(
        "{} steps after {} warm-up: median {:.2} ms/step (mean {:.2}), {:.0} tokens/s, last loss {:.3}",
        args.steps, args.warmup, steps.ms, steps.mean, steps.tokens_per_s, steps.last_loss
    );
}

/// The dense products are most of a step's work: their GFLOP a step and, at the median step of
/// `ms`, their rate against `bench products`'. Printed, and returned where counted.
fn dense_products(
    task: &Task,
    cfg: &GptConfig,
    graded: &TrainConfig,
    parts: usize,
    ms: f64,
) -> (Option<f64>, Option<f64>) {
    let rows = graded.batch_size / parts * graded.block_size;
    let minigpt = task.model.as_ref().is_some_and(|m| m.minigpt_products);
    let gflop = minigpt.then(|| {
        products::of_a_step(cfg, rows)
            .iter()
            .map(products::Product::flops)
            .sum::<f64>()
            * parts as f64
            / 1e9
    });
    let gflops = gflop.map(|g| g / (ms / 1e3));
    match (gflop, gflops) {
        (Some(gflop), Some(gflops)) => println!(
            "dense products: {gflop:.2} GFLOP a step, {gflops:.1} GFLOP/s at the median step \
             (on all threads; `cargo xtask bench products` times them alone)"
        ),
        _ => println!("dense products: not counted (`bench products` lists MiniGPT's only)"),
    }
    (gflop, gflops)
}

/// The graded checks evaluate 100 batches every 250 steps: part of their time too. The median
/// ms of such an evaluation over `repeats` runs, printed and returned.
fn time_evaluation(
    model: &dyn TextModel,
    data: &Dataset,
    graded: &TrainConfig,
    repeats: u64,
) -> anyhow::Result<f64> {
    let evaluation = Evaluation::after_step(graded, &data.eval, graded.steps);
    let eval_ms = time_ms(repeats, || {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        evaluation.run(model, &mut rng, &Device::Cpu).map(|_| ())
    })?;
    println!(
        "evaluation of {} batches: median {eval_ms:.0} ms",
        graded.eval_batches
    );
    Ok(eval_ms)
}

/// Median ms of the three phases of kit's step, each timed alone, the whole batch in one
/// part: the forward pass with the loss (`kit::train::loss`), the backward pass, the update.
fn breakdown<O: Optimizer>(
    model: &dyn TextModel,
    optimiser: &mut O,
    data: &Dataset,
    graded: &TrainConfig,
    steps: u64,
) -> anyhow::Result<String> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let since = |start: Instant| start.elapsed().as_secs_f64() * 1e3;
    let (mut f, mut b, mut o) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..steps {
        let batch = Batch::sample(&mut rng, &data.train, graded.batch_size, graded.block_size)?;
        let (x, y) = batch.to_tensors(&Device::Cpu)?;
        let start = Instant::now();
        let loss = kit::train::loss(model, &x, &y)?;
        f.push(since(start));
        let start = Instant::now();
        let grads = loss.backward()?;
        b.push(since(start));
        let start = Instant::now();
        optimiser.step(&grads)?;
        o.push(since(start));
    }
    Ok(format!(
        "breakdown, whole batch in one part (median ms): forward+loss {:.2}, backward {:.2}, Adam {:.2}",
        median(&mut f),
        median(&mut b),
        median(&mut o)
    ))
}

/// Median milliseconds of `f` over `repeats` runs after one untimed run.
fn time_ms(repeats: u64, mut f: impl FnMut() -> candle_core::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(repeats as usize);
    for _ in 0..repeats {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut times))
}

fn attention(args: BenchAttentionArgs) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let (b, heads, d) = (16, 4, 32);
    let hidden = heads * d;
    let mut rows = Vec::new();
    let ops = if args.composed { "composed" } else { "fused" };
    println!(
        "Attention, batch {b}, {heads} heads of {d}, hidden {hidden}, {ops} ops; median of {} runs (ms)",
        args.repeats
    );
    println!(
        "  Task 2 heads: the challenge's per-head model (Task 2 attention per head, concatenated, dense)"
    );
    println!(
        "  Task 1 heads: kit's AttentionHead per head (one fused kernel each), as Task 1 uses"
    );
    println!(
        "{:<6} {:<16} {:>13} {:>13} {:>10} {:>16} {:>16}",
        "T", "pass", "Task 2 heads", "Task 1 heads", "einsum", "einsum speed-up", "vs Task 1 heads"
    );
    for t in [32usize, 256] {
        let params = SeededVarMap::new(0);
        let modules = models::attentions(hidden, heads, d, params.var_builder(&device))?;
        let x = Var::from_tensor(
            &Tensor::randn(0f32, 1.0, (b, t, hidden), &device)?.to_dtype(DType::F32)?,
        )?;
        let mut fwd = [0.0; 3];
        let mut bwd = [0.0; 3];
        for (i, m) in modules.iter().enumerate() {
            fwd[i] = time_ms(args.repeats, || m.forward(x.as_tensor()).map(|_| ()))?;
            bwd[i] = time_ms(args.repeats, || {
                let y = m.forward(x.as_tensor())?;
                y.sqr()?.sum_all()?.backward().map(|_| ())
            })?;
        }
        for (pass, [h2, h1, e]) in [("forward", fwd), ("forward+backward", bwd)] {
            println!(
                "{t:<6} {pass:<16} {h2:>13.3} {h1:>13.3} {e:>10.3} {:>15.2}x {:>15.2}x",
                h2 / e,
                h1 / e
            );
            rows.push(serde_json::json!({
                "t": t, "pass": pass,
                "task2_heads_ms": h2, "task1_heads_ms": h1, "einsum_ms": e,
                "speedup": h2 / e, "speedup_vs_task1_heads": h1 / e,
            }));
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(ExitCode::SUCCESS)
}
