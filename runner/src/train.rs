//! `cargo xtask train`: the challenge's "play with the parameters" cell, as a command. It saves
//! a checkpoint that can go on at every evaluation and on Ctrl-C; `--resume` goes on.

use crate::models;
use crate::reference::{self, Band, Standing};
use anyhow::Context as _;
use candle_core::Device;
use kit::checkpoint::{Meta, Saved};
use kit::train::{Next, Run, TrainConfig};
use kit::{Dataset, GptConfig, Sampler, SeededVarMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use workbook::cli::TrainArgs;
use workbook::tasks::TaskList;
use workbook::workspace_root;

/// Characters sampled from the untrained model, before training starts.
const UNTRAINED_SAMPLE: usize = 40;

/// Set by Ctrl-C: the run stops before its next step and saves where it stands.
static STOP: AtomicBool = AtomicBool::new(false);

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let list = TaskList::here()?;
    let task = list.get(&args.task).map_err(anyhow::Error::msg)?;
    let task_name = task.name.as_str();
    let steps = task
        .model
        .as_ref()
        .with_context(|| format!("{task_name} has no model to train"))?
        .steps;
    let data = Dataset::load()?;
    let cfg = GptConfig {
        vocab_size: data.vocab_size(),
        hidden: args.hidden as usize,
        block_size: args.block as usize,
        num_layers: args.layers as usize,
        num_heads: args.heads as usize,
    };
    cfg.validate()?;
    let train_cfg = TrainConfig {
        steps: args.steps.map_or(steps, |s| s as usize),
        learning_rate: args.lr,
        batch_size: args.batch as usize,
        block_size: args.block as usize,
        eval_every: args.eval_every as usize,
        eval_batches: args.eval_batches as usize,
        seed: args.seed,
        ..TrainConfig::CHALLENGE
    };
    let mut meta = Meta {
        task: task_name.to_string(),
        solutions: args.solutions,
        model: cfg,
        vocabulary: data.tokenizer.chars().iter().collect(),
        train: train_cfg.clone(),
        steps_run: 0,
        best_eval_loss: None,
    };
    let dir = args
        .out
        .clone()
        .or(args.resume.clone())
        .unwrap_or_else(|| workspace_root().join("runs").join(task_name));

    let params = SeededVarMap::new(args.seed);
    let model = models::build(task_name, args.solutions, cfg, params.var_builder(&device))
        .context("building the model")?;
    let options = models::StepOptions {
        lr: train_cfg.learning_rate,
        steps: train_cfg.steps,
        schedule: args.schedule,
        clip: args.clip,
    };
    let vars = params.varmap().all_vars();
    let own = models::own_step(task_name, args.solutions, model.as_ref(), vars, options)?;
    anyhow::ensure!(
        own.is_some() || !(args.schedule || args.clip.is_some()),
        "--schedule and --clip change a training step of your own, and {task_name} trains with \
         kit's: use them with a task whose step you write"
    );
    let mut run = match &args.resume {
        None if own.is_some() => {
            let varmap = params.varmap();
            Run::start_with(model.as_ref(), varmap, &data, &train_cfg, &device, own)?
        }
        None => Run::start(model.as_ref(), params.varmap(), &data, &train_cfg, &device)?,
        Some(_) if own.is_some() => anyhow::bail!(
            "a run of {task_name} trains with your own Adam, whose moments are not saved, so it \
             cannot be resumed: train it again without --resume"
        ),
        Some(from) => {
            let (saved_meta, weights) = kit::checkpoint::read_meta(from)?;
            saved_meta.same_run_as(&meta, from)?;
            let saved = Saved::read(&weights)?;
            saved.load_weights(params.varmap())?;
            let state = saved.state(saved_meta.steps_run)?;
            let steps = state.progress.report.steps_run;
            println!("Resuming from step {steps} of {}", from.display());
            let varmap = params.varmap();
            Run::resume(model.as_ref(), varmap, &data, &train_cfg, &device, &state)?
        }
    };
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
    // What the model writes before it has learned anything: the gibberish the samples after
    // training are to be read against.
    let prompt = data
        .tokenizer
        .encode("K")
        .expect("K is in tiny Shakespeare");
    if args.resume.is_none() {
        let tokens = model.write(&mut Sampler::new(args.seed), &prompt, UNTRAINED_SAMPLE)?;
        println!(
            "Before training, from \"K\": {:?}",
            data.tokenizer.decode(&tokens)
        );
    }
    let bands = reference_bands(task_name, &cfg, &train_cfg);
    // The first Ctrl-C stops the run after the current step, which then saves; a second one
    // leaves at once, with the checkpoint of the last evaluation.
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            println!("\nStopped at once: --resume goes on from the last evaluation.");
            std::process::exit(130);
        }
    })
    .context("cannot catch Ctrl-C")?;
    loop {
        match run.next(&|| STOP.load(Ordering::SeqCst))? {
            Next::Evaluated(p) => {
                let mut line = p.to_string();
                if let Some(band) = bands.iter().find(|b| b.step == p.step) {
                    let standing = match band.standing(p.train_loss) {
                        Standing::Ahead => "ahead of",
                        Standing::Within => "within",
                        Standing::Behind => "behind",
                    };
                    let (lo, hi) = band.train;
                    line += &format!("; {standing} the reference (train {lo:.3}–{hi:.3})");
                }
                run.println(&line);
                save_resumable(&mut run, &mut meta, &params, &dir)?;
            }
            Next::Interrupted => {
                save_resumable(&mut run, &mut meta, &params, &dir)?;
                println!(
                    "\nStopped at step {} of {}; the run is saved in {}.",
                    meta.steps_run,
                    train_cfg.steps,
                    dir.display()
                );
                if run.resumable() {
                    println!(
                        "Next: the same command with --resume {} goes on from there.",
                        dir.display()
                    );
                }
                return Ok(ExitCode::from(130));
            }
            Next::Finished => break,
        }
    }
    let report = run.finish()?;
    if let Some(b) = report.best {
        println!(
            "Done in {:.1} s. Best eval loss {:.3} at step {} (train loss {:.3}); the model keeps those weights.",
            report.elapsed.as_secs_f32(),
            b.eval_loss,
            b.step,
            b.train_loss
        );
    }
    meta.steps_run = report.steps_run;
    meta.best_eval_loss = report.best.map(|b| b.eval_loss);
    let weights = kit::checkpoint::save(&dir, params.varmap(), &meta, None)?;
    let curve = dir.join("loss.svg");
    workbook::files::write_atomically(
        &curve,
        crate::plot::loss_curve_svg(&report, task_name, &bands).as_bytes(),
    )?;
    println!("Checkpoint: {}", weights.display());
    println!("Loss curve: {}", curve.display());

    let mut sampler = Sampler::new(args.seed);
    let tokens = model.write(&mut sampler, &prompt, args.sample as usize)?;
    println!("\nSample:\n{}\n", data.tokenizer.decode(&tokens));
    println!(
        "Next: cargo xtask generate --checkpoint {} --prompt \"ROMEO:\"",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The reference's band at each evaluation, when this run has the settings the reference
/// curves were made with (the seed, the number of steps and the eval batches aside).
fn reference_bands(task: &str, model: &GptConfig, train: &TrainConfig) -> Vec<Band> {
    match reference::for_task(task) {
        Some(curves) if curves.compares_with(model, train) => curves.bands(),
        Some(_) => {
            println!(
                "(Not compared with the reference curves: they are for the default model and \
                 settings.)"
            );
            Vec::new()
        }
        None => Vec::new(),
    }
}

/// Saves the weights and the state of `run` into `dir`: a checkpoint `--resume` can go on from,
/// or the weights alone for a run that trains with a step of its own.
fn save_resumable<M: candle_core::Module + Sync + ?Sized>(
    run: &mut Run<M>,
    meta: &mut Meta,
    params: &SeededVarMap,
    dir: &Path,
) -> anyhow::Result<()> {
    let state = if run.resumable() {
        Some(run.state()?)
    } else {
        None
    };
    let report = state.as_ref().map_or(run.report(), |s| &s.progress.report);
    meta.steps_run = report.steps_run;
    meta.best_eval_loss = report.best.map(|b| b.eval_loss);
    kit::checkpoint::save(dir, params.varmap(), meta, state.as_ref())?;
    Ok(())
}
