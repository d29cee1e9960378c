//! The training loop: a fresh random batch each step, its loss, the gradient, an Adam update;
//! an evaluation every `eval_every` steps; and at the end the weights of the best evaluation.
//!
//! This is the challenge's loop: plain Adam, softmax cross-entropy averaged over batch and
//! positions, evaluations on random batches of the eval split. [`train`] runs it from start to
//! end; [`Run`] is the same loop one evaluation at a time, which can stop and, with
//! [`Run::state`] and [`Run::resume`], go on later exactly as if it had not stopped. Behind
//! it, [`Trainer::step`] differentiates a batch in parts side by side, and [`Evaluation`]
//! averages the eval batches.

mod config;
mod eval;
mod report;
mod resume;
mod step;

pub use config::{Graded, TrainConfig};
pub use eval::{EvalScreen, Evaluation};
pub use report::{Control, EvalPoint, TrainError, TrainReport};
pub use resume::{Progress, RunState};
pub use step::{Optimiser, StepTimes, Trainer, loss, loss_and_gradients};

use crate::data::{Batch, Dataset};
use anyhow::Context as _;
use candle_core::{Device, Module, Tensor, Var};
use candle_nn::VarMap;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Trains `model`, whose variables live in `varmap`, on `data` with `config`.
///
/// After every evaluation `on_eval` may stop the run. With `keep_best`, the model ends with the
/// weights of its best complete evaluation.
pub fn train<M: Module + Sync + ?Sized>(
    model: &M,
    varmap: &VarMap,
    data: &Dataset,
    config: &TrainConfig,
    device: &Device,
    mut on_eval: impl FnMut(&EvalPoint) -> Control,
) -> anyhow::Result<TrainReport> {
    let mut run = Run::start(model, varmap, data, config, device)?;
    while let Next::Evaluated(point) = run.next(&|| false)? {
        if on_eval(&point) == Control::Stop {
            break;
        }
    }
    run.finish()
}

/// What [`Run::next`] came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// An evaluation, after the step it follows.
    Evaluated(EvalPoint),
    /// `interrupted` said so, between two steps.
    Interrupted,
    /// The last step and its evaluation are done.
    Finished,
}

/// A training run in progress.
pub struct Run<'a, M: Module + Sync + ?Sized> {
    model: &'a M,
    varmap: &'a VarMap,
    data: &'a Dataset,
    config: TrainConfig,
    device: Device,
    trainer: Trainer<'a, M>,
    batch_rng: ChaCha8Rng,
    eval_rng: ChaCha8Rng,
    report: TrainReport,
    best_weights: Option<Vec<(Var, Tensor)>>,
    bar: ProgressBar,
    started: Instant,
}

impl<'a, M: Module + Sync + ?Sized> Run<'a, M> {
    /// A run at step 0, its random streams seeded from `config.seed`.
    pub fn start(
        model: &'a M,
        varmap: &'a VarMap,
        data: &'a Dataset,
        config: &TrainConfig,
        device: &Device,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        config.fits(data)?;
        Ok(Self {
            model,
            varmap,
            data,
            config: config.clone(),
            device: device.clone(),
            trainer: Trainer::new(model, varmap, config.learning_rate, device)?,
            batch_rng: ChaCha8Rng::seed_from_u64(config.seed),
            eval_rng: ChaCha8Rng::seed_from_u64(config.seed ^ EVAL_STREAM),
            report: TrainReport::default(),
            best_weights: None,
            bar: crate::progress::steps(config.steps as u64, "training", config.progress),
            started: Instant::now(),
        })
    }

    /// Trains up to the next evaluation, or until `interrupted()` is true at the start of a
    /// step, or to the end.
    pub fn next(&mut self, interrupted: &dyn Fn() -> bool) -> anyhow::Result<Next> {
        let config = &self.config;
        while self.report.steps_run < config.steps {
            if interrupted() {
                return Ok(Next::Interrupted);
            }
            let step = self.report.steps_run + 1;
            let (batch_size, block_size) = (config.batch_size, config.block_size);
            let batch = Batch::sample(
                &mut self.batch_rng,
                &self.data.train,
                batch_size,
                block_size,
            )?;
            let loss = self
                .trainer
                .step(&batch)
                .with_context(|| format!("training step {step} failed"))?;
            if !loss.is_finite() {
                self.bar.abandon();
                let learning_rate = config.learning_rate;
                let error = TrainError::NonFinite {
                    step,
                    learning_rate,
                    loss,
                };
                return Err(error.into());
            }
            self.report.train_losses.push(loss);
            self.report.steps_run = step;
            self.bar.inc(1);

            if step.is_multiple_of(config.eval_every) || step == config.steps {
                let evaluation = config.evaluation(&self.data.eval, step);
                let (eval_loss, eval_batches) =
                    evaluation.run(self.model, &mut self.eval_rng, &self.device)?;
                let point = EvalPoint {
                    step,
                    train_loss: self.report.train_loss_since_last_eval(),
                    eval_loss,
                    eval_batches,
                };
                let message = format!("train {:.3}  eval {eval_loss:.3}", point.train_loss);
                self.bar.set_message(message);
                self.report.evals.push(point);
                let complete = eval_batches == config.eval_batches;
                let best = self.report.best;
                if config.keep_best && complete && best.is_none_or(|b| eval_loss < b.eval_loss) {
                    self.report.best = Some(point);
                    self.best_weights = Some(copy_weights(self.varmap)?);
                }
                return Ok(Next::Evaluated(point));
            }
        }
        Ok(Next::Finished)
    }

    /// Prints `line` above the progress bar, or on its own where there is no bar.
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// The report so far.
    pub fn report(&self) -> &TrainReport {
        &self.report
    }

    /// Ends the run where it stands: with `keep_best`, the model takes the weights of its
    /// best complete evaluation.
    pub fn finish(mut self) -> anyhow::Result<TrainReport> {
        for (var, value) in self.best_weights.take().unwrap_or_default() {
            var.set(&value)?;
        }
        self.bar.finish_and_clear();
        self.report.stopped_early = self.report.steps_run < self.config.steps;
        self.report.elapsed += self.started.elapsed();
        Ok(self.report)
    }
}

/// The evaluation batches' stream is seeded with the run's seed XOR this.
const EVAL_STREAM: u64 = 0x5eed_e7a1;

/// A copy of every variable's value, to put back later.
fn copy_weights(varmap: &VarMap) -> candle_core::Result<Vec<(Var, Tensor)>> {
    varmap
        .all_vars()
        .into_iter()
        .map(|v| {
            let value = v.as_tensor().copy()?;
            Ok((v, value))
        })
        .collect()
}
