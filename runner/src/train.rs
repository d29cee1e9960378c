//! `cargo xtask train`: the challenge's "play with the parameters" cell, as a command.

use crate::checkpoint::{self, CheckpointMeta};
use crate::models;
use anyhow::Context as _;
use candle_core::Device;
use kit::train::{Control, TrainConfig};
use kit::{Dataset, GptConfig, Sampler, SeededVarMap};
use std::process::ExitCode;
use xtask::cli::{TrainArgs, TrainTask};
use xtask::workspace_root;

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let data = Dataset::load()?;
    let task_name = args.task.name();
    let cfg = GptConfig {
        vocab_size: data.vocab_size(),
        hidden: args.hidden as usize,
        block_size: args.block as usize,
        num_layers: args.layers as usize,
        num_heads: args.heads as usize,
    };
    if args.task != TrainTask::Warmup {
        cfg.validate().map_err(anyhow::Error::msg)?;
    }
    let base = args.task.train_config();
    let train_cfg = TrainConfig {
        steps: args.steps.map_or(base.steps, |s| s as usize),
        learning_rate: args.lr,
        batch_size: args.batch as usize,
        block_size: args.block as usize,
        eval_every: args.eval_every as usize,
        eval_batches: args.eval_batches as usize,
        seed: args.seed,
        ..base
    };
    train_cfg.validate()?;
    train_cfg.fits(&data)?;

    let params = SeededVarMap::new(args.seed);
    let model = models::build(args.task, args.solutions, cfg, params.var_builder(&device))
        .context("building the model")?;
    let who = if args.solutions { "reference" } else { "your" };
    println!(
        "Training {who} {task_name} model: {} parameters, {} steps, lr {}, batch {}, block {}",
        params
            .named_vars()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum::<usize>(),
        train_cfg.steps,
        train_cfg.learning_rate,
        train_cfg.batch_size,
        train_cfg.block_size
    );
    let report = kit::train::train(
        model.as_ref(),
        params.varmap(),
        &data,
        &train_cfg,
        &device,
        |p| {
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                println!(
                    "step {:>5}: train loss {:.3}, eval loss {:.3}",
                    p.step, p.train_loss, p.eval_loss
                );
            }
            Control::Continue
        },
    )?;
    let best = report.best;
    if let Some(b) = best {
        println!(
            "Done in {:.1} s. Best eval loss {:.3} at step {} (train loss {:.3}); the model keeps those weights.",
            report.elapsed.as_secs_f32(),
            b.eval_loss,
            b.step,
            b.train_loss
        );
    }

    let dir = args
        .out
        .unwrap_or_else(|| workspace_root().join("runs").join(task_name));
    let meta = CheckpointMeta {
        task: task_name.to_string(),
        solutions: args.solutions,
        model: cfg,
        vocabulary: data.tokenizer.chars().iter().collect(),
        train: train_cfg,
        steps_run: report.steps_run,
        best_eval_loss: best.map(|b| b.eval_loss),
    };
    let weights = checkpoint::save(&params, &meta, &dir)?;
    let curve = dir.join("loss.svg");
    kit::files::write_atomically(
        &curve,
        crate::plot::loss_curve_svg(&report, task_name).as_bytes(),
    )?;
    println!("Checkpoint: {}", weights.display());
    println!("Loss curve: {}", curve.display());

    let prompt = data
        .tokenizer
        .encode("K")
        .expect("K is in tiny Shakespeare");
    let mut sampler = Sampler::new(args.seed);
    let tokens = model.generate(&mut sampler, &prompt, args.sample as usize)?;
    println!("\nSample:\n{}\n", data.tokenizer.decode(&tokens));
    println!(
        "Next: cargo xtask generate --checkpoint {} --prompt \"ROMEO:\"",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
