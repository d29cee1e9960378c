//! The training loop: a fresh random batch each step, its loss, the gradient, an Adam update;
//! an evaluation every `eval_every` steps; and at the end the weights of the best evaluation.
//!
//! This is the challenge's loop: plain Adam, softmax cross-entropy averaged over batch and
//! positions, evaluations on random batches of the eval split. Read it in this order:
//!
//! - [`step`] (`step.rs`): one step, forward → cross-entropy → backward → Adam; a run trains
//!   with it, or with another [`Step`] and optimiser it is given ([`Run::with_step`]: Task 4's);
//! - [`Run::next`] (below): the loop around it, with the evaluations;
//! - [`train`] (below): the loop from start to end. [`Run`] is the same loop one evaluation at a
//!   time, which can stop and, with [`Run::state`] and [`Run::resume`] (`resume.rs`), go on later
//!   exactly as if it had not stopped.
//!
//! Two speed-ups sit behind it: [`parallel`] differentiates each batch in two parts side by side,
//! and [`Evaluation`] (`eval.rs`) evaluates the eval batches side by side.

mod eval;
pub mod parallel;
mod report;
mod resume;
mod step;

pub use common::config::{EvalScreen, Graded, TrainConfig};
pub use eval::Evaluation;
pub use report::{Control, EvalPoint, TrainError, TrainReport};
pub use resume::{Progress, RunState};
pub use step::{Step, loss, step, step_in_parts};

use crate::adam::{Adam, ParamsAdam};
use crate::data::{Batch, Dataset};
use crate::ops::on_pool;
use anyhow::Context as _;
use candle_core::{Device, Module, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use common::bars::ProgressBar;
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
    on_eval: impl FnMut(&EvalPoint) -> Control,
) -> anyhow::Result<TrainReport> {
    Run::start(model, varmap, data, config, device)?.train_to_the_end(on_eval)
}

/// A learning rate for each step, counted from 0: a schedule, set on the optimiser before the
/// step.
pub type Schedule<'a> = Box<dyn Fn(usize) -> f64 + Send + 'a>;

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

/// A training run in progress: `model` trained by `step` with the optimiser `O`, kit's [`step`]
/// and [`Adam`] unless [`Run::with_step`] gives others.
pub struct Run<'a, M: Module + Sync + ?Sized, O: Optimizer + Send = Adam> {
    model: &'a M,
    varmap: &'a VarMap,
    data: &'a Dataset,
    config: TrainConfig,
    device: Device,
    optimiser: O,
    step: Step<M, O>,
    schedule: Option<Schedule<'a>>,
    batch_rng: ChaCha8Rng,
    eval_rng: ChaCha8Rng,
    report: TrainReport,
    best_weights: Option<Vec<(Var, Tensor)>>,
    bar: ProgressBar,
    started: Instant,
}

impl<'a, M: Module + Sync + ?Sized> Run<'a, M> {
    /// A run at step 0, its random streams seeded from `config.seed`: kit's [`step`] with plain
    /// Adam at the configured learning rate over every variable of `varmap`.
    pub fn start(
        model: &'a M,
        varmap: &'a VarMap,
        data: &'a Dataset,
        config: &TrainConfig,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let params = ParamsAdam {
            lr: config.learning_rate,
            ..ParamsAdam::default()
        };
        let adam = Adam::new(varmap.all_vars(), params)?;
        Self::with_step(model, varmap, data, config, device, adam, step)
    }
}

impl<'a, M: Module + Sync + ?Sized, O: Optimizer + Send> Run<'a, M, O> {
    /// [`Run::start`], with `step` and `optimiser` in place of kit's: Task 4 trains with the
    /// learner's. Only a run with kit's Adam can be saved to go on later (see [`Run::state`]).
    pub fn with_step(
        model: &'a M,
        varmap: &'a VarMap,
        data: &'a Dataset,
        config: &TrainConfig,
        device: &Device,
        optimiser: O,
        step: Step<M, O>,
    ) -> anyhow::Result<Self> {
        config.validate(data.train.len(), data.eval.len())?;
        Ok(Self {
            model,
            varmap,
            data,
            config: config.clone(),
            device: device.clone(),
            optimiser,
            step,
            schedule: None,
            batch_rng: ChaCha8Rng::seed_from_u64(config.seed),
            eval_rng: ChaCha8Rng::seed_from_u64(config.seed ^ EVAL_STREAM),
            report: TrainReport::default(),
            best_weights: None,
            bar: common::bars::steps(config.steps as u64, "training", config.progress),
            started: Instant::now(),
        })
    }

    /// The run, its optimiser's learning rate set by `schedule` before each step.
    pub fn with_schedule(mut self, schedule: Schedule<'a>) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// Trains up to the next evaluation, or until `interrupted()` is true at the start of a
    /// step, or to the end.
    pub fn next(&mut self, interrupted: &dyn Fn() -> bool) -> anyhow::Result<Next> {
        let config = &self.config;
        while self.report.steps_run < config.steps {
            if interrupted() {
                return Ok(Next::Interrupted);
            }
            let n = self.report.steps_run + 1;
            let (batch_size, block_size) = (config.batch_size, config.block_size);
            let batch = Batch::sample(
                &mut self.batch_rng,
                &self.data.train,
                batch_size,
                block_size,
            )?;
            let (x, y) = batch.to_tensors(&self.device)?;
            if let Some(schedule) = &self.schedule {
                self.optimiser.set_learning_rate(schedule(n - 1));
            }
            let (model, optimiser, step) = (self.model, &mut self.optimiser, self.step);
            // On kit's pool, where kit's ops start at once instead of handing their work over.
            let loss = on_pool(|| step(model, optimiser, &x, &y))
                .with_context(|| format!("training step {n} failed"))?;
            if !loss.is_finite() {
                self.bar.abandon();
                let learning_rate = self.optimiser.learning_rate();
                let error = TrainError::NonFinite {
                    step: n,
                    learning_rate,
                    loss,
                };
                return Err(error.into());
            }
            self.report.train_losses.push(loss);
            self.report.steps_run = n;
            self.bar.inc(1);

            if n.is_multiple_of(config.eval_every) || n == config.steps {
                let evaluation = Evaluation::after_step(config, &self.data.eval, n);
                let (eval_loss, eval_batches) =
                    evaluation.run(self.model, &mut self.eval_rng, &self.device)?;
                let point = EvalPoint {
                    step: n,
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

    /// Trains to the end, or until `on_eval` stops it after an evaluation.
    pub fn train_to_the_end(
        mut self,
        mut on_eval: impl FnMut(&EvalPoint) -> Control,
    ) -> anyhow::Result<TrainReport> {
        while let Next::Evaluated(point) = self.next(&|| false)? {
            if on_eval(&point) == Control::Stop {
                break;
            }
        }
        self.finish()
    }

    /// The model it trains.
    pub fn model(&self) -> &'a M {
        self.model
    }

    /// The model's variables.
    pub fn varmap(&self) -> &'a VarMap {
        self.varmap
    }

    /// The report so far.
    pub fn report(&self) -> &TrainReport {
        &self.report
    }

    /// Prints `line` above the progress bar, or on its own where there is no bar.
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
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
