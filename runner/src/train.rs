//! `cargo xtask train`: the challenge's "play with the parameters" cell, as a command. It saves
//! a checkpoint that can go on at every evaluation and on Ctrl-C; `--resume` goes on.

use crate::models::{self, TextModel};
use anyhow::Context as _;
use candle_core::Device;
use candle_nn::Optimizer;
use candle_nn::VarMap;
use kit::checkpoint::{Meta, Saved};
use kit::train::{EvalPoint, Next, Run, RunState, TrainConfig, TrainReport};
use kit::{Dataset, GptConfig, Sampler, SeededVarMap};
use reference::curves::{self, Band};
use std::path::{Path, PathBuf};
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
    let task_name = args.task.as_str();
    let steps = task_steps(task_name)?;
    let dir = out_dir(&args);
    let data = models::dataset(task_name, args.solutions, &dir)?;
    let mut meta = settings(&args, steps, &data)?;

    let params = SeededVarMap::new(args.seed);
    let vb = params.var_builder(&device);
    let model =
        models::build(task_name, args.solutions, meta.model, vb).context("building the model")?;
    let options = models::StepOptions {
        lr: meta.train.learning_rate,
        steps: meta.train.steps,
        schedule: args.schedule,
        clip: args.clip,
    };
    // What the model writes before it has learned anything: the gibberish the samples after
    // training are to be read against.
    let prompt = data
        .tokenizer
        .encode_text("K")
        .expect("K is in tiny Shakespeare");
    let train_cfg = meta.train.clone();
    let training = Training {
        args: &args,
        meta: &mut meta,
        params: &params,
        data: &data,
        dir: &dir,
        prompt: &prompt,
    };
    let (model_ref, varmap, solutions) = (model.as_ref(), params.varmap(), args.solutions);
    let trained = models::start_run(
        task_name, solutions, model_ref, varmap, &data, &train_cfg, options, training,
    )?;
    let Some((report, bands)) = trained else {
        return Ok(ExitCode::from(130));
    };
    print_done(&report);
    let weights = save(&report, &mut meta, &params, &dir, None)?;
    let curve = plot(&report, task_name, &bands, &dir)?;
    println!("Checkpoint: {}", weights.display());
    println!("Loss curve: {}", curve.display());

    let chars = args.sample as usize;
    let text = sample(model.as_ref(), &data, &prompt, args.seed, chars)?;
    println!("\nSample:\n{text}\n");
    println!(
        "Next: cargo xtask generate --checkpoint {} --prompt \"ROMEO:\"",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The steps tasks.toml gives `task`'s model, which `--steps` overrides: an error for a task
/// with no model.
fn task_steps(task: &str) -> anyhow::Result<usize> {
    let list = TaskList::here()?;
    let task = list.get(task).map_err(anyhow::Error::msg)?;
    let no_model = || format!("{} has no model to train", task.name);
    Ok(task.model.as_ref().with_context(no_model)?.steps)
}

/// The run's settings from the command line's, `steps` unless `--steps`, as the checkpoint
/// records them.
fn settings(args: &TrainArgs, steps: usize, data: &Dataset) -> anyhow::Result<Meta> {
    let model = GptConfig {
        vocab_size: data.vocab_size(),
        hidden: args.hidden as usize,
        block_size: args.block as usize,
        num_layers: args.layers as usize,
        num_heads: args.heads as usize,
    };
    model.validate()?;
    let train = TrainConfig {
        steps: args.steps.map_or(steps, |s| s as usize),
        learning_rate: args.lr,
        batch_size: args.batch as usize,
        block_size: args.block as usize,
        eval_every: args.eval_every as usize,
        eval_batches: args.eval_batches as usize,
        seed: args.seed,
        ..TrainConfig::CHALLENGE
    };
    Ok(Meta {
        task: args.task.clone(),
        solutions: args.solutions,
        model,
        vocabulary: data.tokenizer.vocabulary().unwrap_or_default(),
        train,
        steps_run: 0,
        best_eval_loss: None,
    })
}

/// Where the run is saved: `--out`, else the `--resume` folder, else runs/<task>/.
fn out_dir(args: &TrainArgs) -> PathBuf {
    args.out
        .clone()
        .or(args.resume.clone())
        .unwrap_or_else(|| workspace_root().join("runs").join(&args.task))
}

/// `cargo xtask train`'s run once it has started, whichever step and optimiser it trains with.
struct Training<'r> {
    args: &'r TrainArgs,
    meta: &'r mut Meta,
    params: &'r SeededVarMap,
    data: &'r Dataset,
    dir: &'r Path,
    prompt: &'r [u32],
}

impl<'a> models::WithRun<'a> for Training<'_> {
    /// The report and the reference's bands, or nothing if Ctrl-C stopped the run.
    type Output = Option<(TrainReport, Vec<Band>)>;

    fn kit(self, run: Run<'a, dyn TextModel>) -> anyhow::Result<Self::Output> {
        let run = match self.args.resume.as_deref() {
            Some(from) => resume_from(from, self.meta, run.model(), run.varmap(), self.data)?,
            None => run,
        };
        self.train(run, |run| Ok(Some(run.state()?)))
    }

    fn own<O: Optimizer + Send>(
        self,
        run: Run<'a, dyn TextModel, O>,
    ) -> anyhow::Result<Self::Output> {
        anyhow::ensure!(
            self.args.resume.is_none(),
            "a run of {} trains with your own Adam, whose moments are not saved, so it cannot be \
             resumed: train it again without --resume",
            self.meta.task
        );
        self.train(run, |_| Ok(None))
    }
}

impl Training<'_> {
    /// The banner, the untrained sample of a fresh run, then the run to the end or to Ctrl-C,
    /// saved at every evaluation with the state `state` gives (none: the weights alone).
    fn train<'a, O: Optimizer + Send>(
        self,
        mut run: Run<'a, dyn TextModel, O>,
        state: impl Fn(&mut Run<'a, dyn TextModel, O>) -> anyhow::Result<Option<RunState>>,
    ) -> anyhow::Result<Option<(TrainReport, Vec<Band>)>> {
        let (meta, args) = (self.meta, self.args);
        print_banner(meta, self.params);
        if args.resume.is_none() {
            let untrained = UNTRAINED_SAMPLE;
            let text = sample(run.model(), self.data, self.prompt, args.seed, untrained)?;
            println!("Before training, from \"K\": {text:?}");
        }
        let bands = reference_bands(&meta.task, &meta.model, &meta.train);
        catch_ctrl_c()?;
        // Saves the weights, and the state where there is one; whether there was.
        let save = |run: &mut Run<'a, dyn TextModel, O>, meta: &mut Meta| {
            let state = state(run)?;
            let report = state.as_ref().map_or(run.report(), |s| &s.progress.report);
            save(report, meta, self.params, self.dir, state.as_ref())?;
            anyhow::Ok(state.is_some())
        };
        loop {
            match run.next(&|| STOP.load(Ordering::SeqCst))? {
                Next::Evaluated(p) => {
                    run.println(&eval_line(&p, &bands));
                    save(&mut run, meta)?;
                }
                Next::Interrupted => {
                    let resumable = save(&mut run, meta)?;
                    print_stopped(meta, self.dir, resumable);
                    return Ok(None);
                }
                Next::Finished => return Ok(Some((run.finish()?, bands))),
            }
        }
    }
}

/// The run saved in `from`, its weights loaded into `varmap`, if it has `meta`'s settings.
fn resume_from<'a>(
    from: &Path,
    meta: &Meta,
    model: &'a (dyn TextModel + 'static),
    varmap: &'a VarMap,
    data: &'a Dataset,
) -> anyhow::Result<Run<'a, dyn TextModel>> {
    let (saved_meta, weights) = kit::checkpoint::read_meta(from)?;
    saved_meta.same_run_as(meta, from)?;
    let saved = Saved::read(&weights)?;
    saved.load_weights(varmap)?;
    let state = saved.state(saved_meta.steps_run)?;
    let steps = state.progress.report.steps_run;
    println!("Resuming from step {steps} of {}", from.display());
    Run::resume(model, varmap, data, &meta.train, &Device::Cpu, &state)
}

/// The run's first line: whose model, its size and the training settings.
fn print_banner(meta: &Meta, params: &SeededVarMap) {
    let who = if meta.solutions { "reference" } else { "your" };
    println!(
        "Training {who} {} model: {} parameters, {} steps, lr {}, batch {}, block {}",
        meta.task,
        params
            .named_vars()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum::<usize>(),
        meta.train.steps,
        meta.train.learning_rate,
        meta.train.batch_size,
        meta.train.block_size
    );
}

/// `chars` characters the model writes after `prompt`, sampled with `seed`.
fn sample(
    model: &dyn TextModel,
    data: &Dataset,
    prompt: &[u32],
    seed: u64,
    chars: usize,
) -> anyhow::Result<String> {
    let tokens = model.write(&mut Sampler::new(seed), prompt, chars)?;
    Ok(data.tokenizer.decode_text(&tokens))
}

/// The reference's band at each evaluation, when this run has the settings the reference
/// curves were made with (the seed, the number of steps and the eval batches aside).
fn reference_bands(task: &str, model: &GptConfig, train: &TrainConfig) -> Vec<Band> {
    match curves::for_task(task) {
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

/// The first Ctrl-C stops the run after the current step, which then saves; a second one
/// leaves at once, with the checkpoint of the last evaluation.
fn catch_ctrl_c() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            println!("\nStopped at once: --resume goes on from the last evaluation.");
            std::process::exit(130);
        }
    })
    .context("cannot catch Ctrl-C")
}

/// An evaluation's line, with where its train loss stands against the reference's band at
/// that step, if there is one.
fn eval_line(p: &EvalPoint, bands: &[Band]) -> String {
    let mut line = p.to_string();
    if let Some(band) = bands.iter().find(|b| b.step == p.step) {
        let standing = band.standing(p.train_loss);
        let (lo, hi) = band.train;
        line += &format!("; {standing} the reference (train {lo:.3}–{hi:.3})");
    }
    line
}

/// Where a run stopped by Ctrl-C is saved, and how to go on from there if it can.
fn print_stopped(meta: &Meta, dir: &Path, resumable: bool) {
    println!(
        "\nStopped at step {} of {}; the run is saved in {}.",
        meta.steps_run,
        meta.train.steps,
        dir.display()
    );
    if resumable {
        println!(
            "Next: the same command with --resume {} goes on from there.",
            dir.display()
        );
    }
}

/// How long the run took, and the evaluation whose weights the model keeps.
fn print_done(report: &TrainReport) {
    if let Some(b) = report.best {
        println!(
            "Done in {:.1} s. Best eval loss {:.3} at step {} (train loss {:.3}); the model keeps those weights.",
            report.elapsed.as_secs_f32(),
            b.eval_loss,
            b.step,
            b.train_loss
        );
    }
}

/// Records in `meta` how far `report` got, and saves it with the weights, and `state` if given,
/// into `dir`. The weights' file.
fn save(
    report: &TrainReport,
    meta: &mut Meta,
    params: &SeededVarMap,
    dir: &Path,
    state: Option<&RunState>,
) -> anyhow::Result<PathBuf> {
    meta.steps_run = report.steps_run;
    meta.best_eval_loss = report.best.map(|b| b.eval_loss);
    Ok(kit::checkpoint::save(dir, params.varmap(), meta, state)?)
}

/// Writes the loss curve of `report` into `dir`, as loss.svg. Its file.
fn plot(report: &TrainReport, task: &str, bands: &[Band], dir: &Path) -> anyhow::Result<PathBuf> {
    let curve = dir.join("loss.svg");
    workbook::files::write_atomically(
        &curve,
        crate::plot::loss_curve_svg(report, task, bands).as_bytes(),
    )?;
    Ok(curve)
}
