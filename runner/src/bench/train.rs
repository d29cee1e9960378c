//! `bench train`: the training step, its dense products' rate and an evaluation.

use super::{median, time_ms};
use crate::models::{self, TextModel};
use anyhow::Context as _;
use candle_core::Device;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use kit::adam::{Adam, ParamsAdam};
use kit::data::Batch;
use kit::train::{Evaluation, TrainConfig};
use kit::{Dataset, GptConfig, SeededVarMap};
use rand::SeedableRng;
use std::process::ExitCode;
use std::time::Instant;
use workbook::cli::BenchTrainArgs;
use workbook::tasks::{ModelCommand, Task, TaskList};

/// `bench train`: the median training step of a task's reference model at its graded
/// settings, its dense products' rate and an evaluation's time, as text and, with `--json`, as
/// one JSON object.
pub(super) fn run(args: BenchTrainArgs, json: bool) -> anyhow::Result<ExitCode> {
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
    if json {
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
        super::products::of_a_step(cfg, rows)
            .iter()
            .map(super::products::Product::flops)
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
