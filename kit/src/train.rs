//! The training loop: Adam, a fresh random batch each step, a periodic evaluation, and the best
//! weights kept.
//!
//! This is the challenge's loop: plain Adam (candle's AdamW with weight decay 0), softmax
//! cross-entropy averaged over batch and positions, an evaluation every `eval_every` steps,
//! and at the end the weights that had the best evaluation loss.

use crate::adam::{Adam, ParamsAdam, summed_gradient};
use crate::data::{Batch, Dataset};
use crate::ops;
use anyhow::Context as _;
use candle_core::backprop::GradStore;
use candle_core::{Device, Module, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Settings of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Number of optimisation steps, at most.
    pub steps: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub block_size: usize,
    /// Evaluate every this many steps (and after the last one).
    pub eval_every: usize,
    /// How many random eval batches each evaluation averages.
    pub eval_batches: usize,
    /// Seeds the batches; parameters have their own seed (see [`crate::SeededVarMap`]).
    pub seed: u64,
    /// Restore the weights with the best evaluation loss at the end.
    pub keep_best: bool,
    /// Draw a progress bar (only ever on a terminal).
    pub progress: bool,
    /// A quick look at the first few eval batches that can cut an evaluation short, except
    /// the one after the last step. `None`: every evaluation averages all `eval_batches`.
    #[serde(default)]
    pub eval_screen: Option<EvalScreen>,
}

/// The first `batches` of an evaluation's batches are evaluated first; when their mean loss
/// is above `above`, the evaluation stops there and reports that mean.
///
/// The full set of batches is drawn either way, so an evaluation that goes on to the end
/// averages the same batches, in the same order, as one without a screen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalScreen {
    pub batches: usize,
    pub above: f32,
}

impl TrainConfig {
    /// The challenge's warm-up run: 7000 steps, Adam 1e-3, batch 16, block 32.
    pub fn warmup() -> Self {
        Self {
            steps: 7000,
            learning_rate: 1e-3,
            batch_size: 16,
            block_size: 32,
            eval_every: 100,
            eval_batches: 1,
            seed: 0,
            keep_best: true,
            progress: true,
            eval_screen: None,
        }
    }

    /// The challenge's Task 1 run: 4000 steps, Adam 1e-3, batch 16, block 32.
    pub fn task1() -> Self {
        Self {
            steps: 4000,
            ..Self::warmup()
        }
    }

    /// Checks that a block (and the token after it) fits in both splits of `data`.
    pub fn fits(&self, data: &Dataset) -> anyhow::Result<()> {
        for (split, tokens) in [("train", &data.train), ("eval", &data.eval)] {
            anyhow::ensure!(
                tokens.len() > self.block_size,
                "block_size {} is too large for the {split} split ({} tokens): choose a block \
                 size below {}",
                self.block_size,
                tokens.len(),
                tokens.len()
            );
        }
        Ok(())
    }

    /// Checks the settings, with a message naming the bad one.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("block_size", self.block_size),
            ("eval_every", self.eval_every),
            ("eval_batches", self.eval_batches),
        ] {
            anyhow::ensure!(v > 0, "{name} must be at least 1, got {v}");
        }
        if let Some(screen) = self.eval_screen {
            anyhow::ensure!(
                (1..=self.eval_batches).contains(&screen.batches),
                "eval_screen.batches must be between 1 and eval_batches ({}), got {}",
                self.eval_batches,
                screen.batches
            );
            anyhow::ensure!(!screen.above.is_nan(), "eval_screen.above must be a number");
        }
        anyhow::ensure!(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            "the learning rate must be a positive number, got {}",
            self.learning_rate
        );
        Ok(())
    }
}

/// One evaluation during training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    /// Steps done so far.
    pub step: usize,
    /// Mean training loss over the steps since the previous evaluation.
    pub train_loss: f32,
    /// Mean loss over `eval_batches` random eval batches.
    pub eval_loss: f32,
    /// How many batches `eval_loss` averages: the configured number, or the screen's when the
    /// screen cut the evaluation short (see [`EvalScreen`]).
    pub eval_batches: usize,
}

/// What a callback wants after an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// What a training run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Loss of every step, in order.
    pub train_losses: Vec<f32>,
    pub evals: Vec<EvalPoint>,
    /// The evaluation whose weights the model holds now, if `keep_best`: the best of those
    /// that averaged all `eval_batches`.
    pub best: Option<EvalPoint>,
    pub steps_run: usize,
    /// A callback asked to stop before `steps`.
    pub stopped_early: bool,
    pub elapsed: Duration,
}

impl TrainReport {
    pub fn last_eval(&self) -> Option<EvalPoint> {
        self.evals.last().copied()
    }
}

/// Training failed in a way the learner should hear about.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "the loss became {loss} at step {step} (learning rate {learning_rate}): training stopped. \
         Look for a division by zero or a log of zero in the model, or try a smaller learning rate"
    )]
    NonFinite {
        step: usize,
        learning_rate: f64,
        loss: f32,
    },
}

/// The loss of a model on one batch: mean cross-entropy of the logits against the targets.
pub fn loss<M: Module + ?Sized>(model: &M, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let logits = model.forward(x)?; // (B, T, V)
    ops::cross_entropy(&logits, y)
}

/// Mean loss over `batches` random batches of `data`.
pub fn eval_loss<M: Module + Sync + ?Sized>(
    model: &M,
    data: &[u32],
    rng: &mut ChaCha8Rng,
    batches: usize,
    batch_size: usize,
    block_size: usize,
    device: &Device,
) -> Result<f32> {
    let screen = None;
    screened_eval_loss(
        model, data, rng, batches, screen, batch_size, block_size, device,
    )
    .map(|(loss, _)| loss)
}

/// `batches` random batches of `data`, drawn in order.
fn draw_batches(
    data: &[u32],
    rng: &mut ChaCha8Rng,
    batches: usize,
    batch_size: usize,
    block_size: usize,
) -> Result<Vec<Batch>> {
    (0..batches)
        .map(|_| Batch::sample(rng, data, batch_size, block_size))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(candle_core::Error::wrap)
}

/// The loss of each batch, in order, computed side by side on kit's pool: the same figures
/// whatever the number of threads.
fn batch_losses<M: Module + Sync + ?Sized>(
    model: &M,
    batches: &[Batch],
    device: &Device,
) -> Result<Vec<f32>> {
    ops::on_pool(|| {
        batches
            .par_iter()
            .map(|batch| {
                let (x, y) = batch.to_tensors(device)?;
                loss(model, &x, &y)?.to_scalar::<f32>()
            })
            .collect::<Result<Vec<_>>>()
    })
}

/// The mean of `losses`, summed in order in f64.
fn mean(losses: &[f32]) -> f32 {
    let total: f64 = losses.iter().map(|&l| l as f64).sum();
    (total / losses.len().max(1) as f64) as f32
}

/// [`eval_loss`] with an optional [`EvalScreen`]: the mean loss and how many batches it
/// averages.
#[allow(clippy::too_many_arguments)]
fn screened_eval_loss<M: Module + Sync + ?Sized>(
    model: &M,
    data: &[u32],
    rng: &mut ChaCha8Rng,
    batches: usize,
    screen: Option<EvalScreen>,
    batch_size: usize,
    block_size: usize,
    device: &Device,
) -> Result<(f32, usize)> {
    let drawn = draw_batches(data, rng, batches, batch_size, block_size)?;
    let first = screen.map_or(0, |s| s.batches.min(batches));
    let mut losses = batch_losses(model, &drawn[..first], device)?;
    if let Some(screen) = screen
        && mean(&losses) > screen.above
    {
        return Ok((mean(&losses), first));
    }
    losses.extend(batch_losses(model, &drawn[first..], device)?);
    Ok((mean(&losses), batches))
}

/// A parameter update from the gradients of the parts of a batch (summed).
type Update = Box<dyn FnMut(&[GradStore]) -> Result<()>>;

/// One optimiser and the model it updates: a training step at a time.
///
/// Each step cuts the batch in [`Trainer::PARTS`] parts and runs the forward and backward pass
/// of each on its own thread of kit's pool ([`ops::on_pool`]), its loss weighted by its share
/// of the rows. The gradients of the parts add up to the gradient of the whole batch's mean
/// loss (up to float rounding), and the update uses their sum. On a small model this keeps
/// every core busy for the whole step, where splitting each operation would leave them
/// waiting for each other between operations. The parts do not depend on the number of cores,
/// so a seed gives the same run everywhere.
pub struct Trainer<'a, M: Module + Sync + ?Sized> {
    model: &'a M,
    update: Update,
    device: Device,
    parts: usize,
}

impl<'a, M: Module + Sync + ?Sized> Trainer<'a, M> {
    /// Parts per batch (fewer when the batch has fewer rows).
    pub const PARTS: usize = 2;

    /// Adam at `learning_rate` over every variable of `varmap`.
    ///
    /// The fused [`Adam`] by default; candle-nn's `AdamW` with weight decay 0 (the same maths,
    /// slower) when [`ops::fused`] is off.
    pub fn new(model: &'a M, varmap: &VarMap, learning_rate: f64, device: &Device) -> Result<Self> {
        let update: Update = if ops::fused() {
            let params = ParamsAdam {
                lr: learning_rate,
                ..ParamsAdam::default()
            };
            let mut adam = Adam::new(varmap.all_vars(), params)?;
            Box::new(move |grads| adam.step_sum(grads))
        } else {
            let params = ParamsAdamW {
                lr: learning_rate,
                // The challenge uses plain Adam; candle's default has weight decay 0.01.
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            };
            let vars = varmap.all_vars();
            let mut adamw = AdamW::new(vars.clone(), params)?;
            Box::new(move |grads| adamw.step(&sum_grads(&vars, grads)?))
        };
        Ok(Self {
            model,
            update,
            device: device.clone(),
            parts: Self::PARTS,
        })
    }

    /// Cuts each batch in `parts` parts instead of [`Trainer::PARTS`] (benchmarks compare).
    pub fn with_parts(mut self, parts: usize) -> Self {
        self.parts = parts.max(1);
        self
    }

    /// Forward, backward and one Adam update on `batch`; returns the batch's mean loss.
    pub fn step(&mut self, batch: &Batch) -> Result<f32> {
        let (loss, grads) = loss_and_gradients(self.model, batch, self.parts, &self.device)?;
        (self.update)(&grads)?;
        Ok(loss)
    }
}

/// The mean loss of `model` on `batch`, and its gradient as one store per part: the batch is
/// cut in `parts` parts, differentiated side by side on kit's pool, each part's loss weighted
/// by its share of the rows. The gradient of the whole batch's loss is the sum of the stores.
pub fn loss_and_gradients<M: Module + Sync + ?Sized>(
    model: &M,
    batch: &Batch,
    parts: usize,
    device: &Device,
) -> Result<(f32, Vec<GradStore>)> {
    let parts = batch.split(parts);
    let rows = batch.batch_size as f64;
    ops::on_pool(|| {
        let done = parts
            .par_iter()
            .map(|part| {
                let (x, y) = part.to_tensors(device)?;
                let share = part.batch_size as f64 / rows;
                let loss = loss(model, &x, &y)?;
                let grads = if parts.len() == 1 {
                    loss.backward()?
                } else {
                    loss.affine(share, 0.0)?.backward()?
                };
                Ok((loss.to_scalar::<f32>()? as f64 * share, grads))
            })
            .collect::<Result<Vec<_>>>()?;
        let (losses, grads): (Vec<f64>, Vec<GradStore>) = done.into_iter().unzip();
        Ok((losses.iter().sum::<f64>() as f32, grads))
    })
}

/// One gradient store holding, for each of `vars`, the sum of its gradients in `grads`.
fn sum_grads(vars: &[Var], grads: &[GradStore]) -> Result<GradStore> {
    let mut sum = GradStore::default();
    for var in vars {
        if let Some(g) = summed_gradient(var, grads)? {
            sum.insert(var, g);
        }
    }
    Ok(sum)
}

/// Trains `model`, whose variables live in `varmap`, on `data` with `config`.
///
/// After every evaluation `on_eval` may stop the run. With `keep_best`, the model ends with the
/// weights of its best evaluation.
pub fn train<M: Module + Sync + ?Sized>(
    model: &M,
    varmap: &VarMap,
    data: &Dataset,
    config: &TrainConfig,
    device: &Device,
    mut on_eval: impl FnMut(&EvalPoint) -> Control,
) -> anyhow::Result<TrainReport> {
    config.validate()?;
    config.fits(data)?;
    let start = Instant::now();
    let mut batch_rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut eval_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_e7a1);
    let mut trainer = Trainer::new(model, varmap, config.learning_rate, device)?;
    let bar = progress_bar(config.steps as u64, "training", config.progress);

    let mut report = TrainReport {
        train_losses: Vec::with_capacity(config.steps),
        evals: Vec::new(),
        best: None,
        steps_run: 0,
        stopped_early: false,
        elapsed: Duration::ZERO,
    };
    let mut best_weights: Option<Vec<(Var, Tensor)>> = None;
    let mut since_eval = 0f64;
    let mut steps_since_eval = 0usize;

    for step in 1..=config.steps {
        let batch = Batch::sample(
            &mut batch_rng,
            &data.train,
            config.batch_size,
            config.block_size,
        )?;
        let loss = trainer
            .step(&batch)
            .with_context(|| format!("training step {step} failed"))?;
        if !loss.is_finite() {
            bar.abandon();
            return Err(TrainError::NonFinite {
                step,
                learning_rate: config.learning_rate,
                loss,
            }
            .into());
        }
        report.train_losses.push(loss);
        report.steps_run = step;
        since_eval += loss as f64;
        steps_since_eval += 1;
        bar.inc(1);

        if step % config.eval_every == 0 || step == config.steps {
            // The evaluation after the last step is always a full one.
            let screen = config.eval_screen.filter(|_| step < config.steps);
            let (eval_loss, eval_batches) = screened_eval_loss(
                model,
                &data.eval,
                &mut eval_rng,
                config.eval_batches,
                screen,
                config.batch_size,
                config.block_size,
                device,
            )?;
            let point = EvalPoint {
                step,
                train_loss: (since_eval / steps_since_eval as f64) as f32,
                eval_loss,
                eval_batches,
            };
            since_eval = 0.0;
            steps_since_eval = 0;
            bar.set_message(format!(
                "train {:.3}  eval {:.3}",
                point.train_loss, point.eval_loss
            ));
            report.evals.push(point);
            let full = eval_batches == config.eval_batches;
            if config.keep_best && full && report.best.is_none_or(|b| eval_loss < b.eval_loss) {
                report.best = Some(point);
                best_weights = Some(snapshot(varmap)?);
            }
            if on_eval(&point) == Control::Stop {
                report.stopped_early = step < config.steps;
                break;
            }
        }
    }
    if let Some(weights) = best_weights {
        for (var, value) in weights {
            var.set(&value)?;
        }
    }
    bar.finish_and_clear();
    report.elapsed = start.elapsed();
    Ok(report)
}

fn snapshot(varmap: &VarMap) -> Result<Vec<(Var, Tensor)>> {
    varmap
        .all_vars()
        .into_iter()
        .map(|v| {
            let copy = v.as_tensor().copy()?;
            Ok((v, copy))
        })
        .collect()
}

/// A progress bar on standard error that draws only on a terminal.
pub fn progress_bar(len: u64, label: &str, enabled: bool) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>11} [{bar:30.cyan/blue}] {pos:>5}/{len} steps  {msg}  {elapsed} (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// The style of a byte-counting progress bar (downloads).
pub fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>11} [{bar:30.cyan/blue}] {bytes}/{total_bytes} ({eta})")
        .expect("valid template")
        .progress_chars("=> ")
}
