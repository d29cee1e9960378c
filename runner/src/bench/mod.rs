//! `cargo xtask bench`: training-step, attention and matrix-product timings. Method and
//! figures live in BENCHMARKS.md.

use crate::models::{self, TextModel};
use candle_core::{DType, Device, Module, Tensor};
use kit::data::Batch;
use kit::train::{Evaluation, Graded, Optimiser, TrainConfig, Trainer};
use kit::{Dataset, GptConfig, SeededVarMap};
use rand::SeedableRng;
use std::process::ExitCode;
use std::time::Instant;
use xtask::cli::{Attention, BenchArgs, BenchAttentionArgs, BenchTrainArgs, BenchWhat, TrainTask};

mod products;

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchWhat::Train(a) => train(a),
        BenchWhat::Attention(a) => attention(a),
        BenchWhat::Products(a) => products::run(a),
    }
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

fn train(args: BenchTrainArgs) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let data = Dataset::load()?;
    let cfg = GptConfig::graded(data.vocab_size());
    let graded = Graded::task1().config;
    let (batch_size, block_size, lr) = (graded.batch_size, graded.block_size, graded.learning_rate);
    let params = SeededVarMap::new(0);
    let task = match args.attention {
        Attention::PerHead => TrainTask::Task1,
        Attention::Einsum => TrainTask::Task3,
    };
    let model = models::build(task, true, cfg, params.var_builder(&device))?;
    // The composed build is the "before" figure: candle's elementary ops and its AdamW.
    let optimiser = if args.composed {
        Optimiser::CandleAdamW
    } else {
        Optimiser::Fused
    };
    let mut trainer =
        Trainer::with_optimiser(model.as_ref(), params.varmap(), lr, &device, optimiser)?
            .with_parts(args.parts as usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut times = Vec::with_capacity(args.steps as usize);
    let mut last_loss = 0.0;
    for i in 0..args.warmup + args.steps {
        let batch = Batch::sample(&mut rng, &data.train, batch_size, block_size)?;
        let start = Instant::now();
        last_loss = trainer.step(&batch)?;
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let ms = median(&mut times);
    let tokens_per_s = (batch_size * block_size) as f64 / (ms / 1e3);
    let threads = candle_core::utils::get_num_threads();
    let op_threads = trainer.threads();
    let ops = if args.composed { "composed" } else { "fused" };
    let attn = match args.attention {
        Attention::PerHead => "per-head",
        Attention::Einsum => "einsum",
    };
    println!(
        "MiniGPT (4 layers, 4 heads, hidden 128), batch {batch_size}, block {block_size}, Adam {lr}: \
         {attn} attention, {ops} ops, {threads} candle thread(s), {op_threads} fused-op thread(s), \
         batch in {} part(s)",
        args.parts
    );
    println!(
        "{} steps after {} warm-up: median {ms:.2} ms/step (mean {mean:.2}), {tokens_per_s:.0} tokens/s, last loss {last_loss:.3}",
        args.steps, args.warmup
    );
    // The dense products are most of a step's work: their rate against `bench products`'.
    let rows = batch_size / args.parts as usize * block_size;
    let gflop: f64 = products::of_a_step(&cfg, rows)
        .iter()
        .map(products::Product::flops)
        .sum::<f64>()
        * args.parts as f64
        / 1e9;
    let gflops = gflop / (ms / 1e3);
    println!(
        "dense products: {gflop:.2} GFLOP a step, {gflops:.1} GFLOP/s at the median step \
         (on all threads; `cargo xtask bench products` times them alone)"
    );
    // The graded checks evaluate 100 batches every 250 steps: part of their time too.
    let evaluation = Evaluation {
        data: &data.eval,
        batches: graded.eval_batches,
        batch_size,
        block_size,
        screen: None,
    };
    let eval_ms = time_ms(args.eval_repeats, || {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        evaluation
            .run(model.as_ref(), &mut rng, &device)
            .map(|_| ())
    })?;
    println!(
        "evaluation of {} batches: median {eval_ms:.0} ms",
        graded.eval_batches
    );
    if args.breakdown {
        breakdown(&mut trainer.with_parts(1), &data, &graded, args.steps)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ms_per_step": ms,
                "eval_100_batches_ms": eval_ms,
                "mean_ms_per_step": mean,
                "tokens_per_s": tokens_per_s,
                "dense_gflop_per_step": gflop,
                "dense_gflops": gflops,
                "steps": args.steps,
                "threads": threads,
                "op_threads": op_threads,
                "parts": args.parts,
                "attention": attn,
                "ops": ops,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Median ms of the forward pass (with the loss), the backward pass and the Adam update, the
/// whole batch in one part.
fn breakdown(
    trainer: &mut Trainer<'_, dyn TextModel>,
    data: &Dataset,
    graded: &TrainConfig,
    steps: u64,
) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let (mut f, mut b, mut o) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..steps {
        let batch = Batch::sample(&mut rng, &data.train, graded.batch_size, graded.block_size)?;
        let (_, times) = trainer.step_timed(&batch)?;
        f.push(ms(times.forward));
        b.push(ms(times.backward));
        o.push(ms(times.update));
    }
    println!(
        "breakdown, whole batch in one part (median ms): forward+loss {:.2}, backward {:.2}, Adam {:.2}",
        median(&mut f),
        median(&mut b),
        median(&mut o)
    );
    Ok(())
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

/// The challenge's per-head model: Task 2 heads side by side, concatenated, then a dense layer.
struct Task2Heads {
    heads: Vec<solutions::task2::SelfAttention>,
    proj: kit::nn::Dense,
}

impl Module for Task2Heads {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let outs = self
            .heads
            .iter()
            .map(|h| h.forward(xs))
            .collect::<candle_core::Result<Vec<_>>>()?;
        self.proj
            .forward(&Tensor::cat(&outs, candle_core::D::Minus1)?)
    }
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
        let vb = params.var_builder(&device);
        let task2_heads = Task2Heads {
            heads: (0..heads)
                .map(|i| {
                    solutions::task2::SelfAttention::new(
                        hidden,
                        d,
                        vb.pp(format!("task2.heads.{i}")),
                    )
                })
                .collect::<candle_core::Result<Vec<_>>>()?,
            proj: kit::nn::dense(hidden, hidden, vb.pp("task2.proj"))?,
        };
        let per_head =
            solutions::task1::MultiHeadAttention::new(hidden, heads, d, vb.pp("per_head"))?;
        let einsum = solutions::task3::MultiHeadAttention::new(hidden, heads, d, vb.pp("einsum"))?;
        let x = candle_core::Var::from_tensor(
            &Tensor::randn(0f32, 1.0, (b, t, hidden), &device)?.to_dtype(DType::F32)?,
        )?;
        let modules: [&dyn Module; 3] = [&task2_heads, &per_head, &einsum];
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
