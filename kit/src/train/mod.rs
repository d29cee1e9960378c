//! The training loop: a fresh random batch each step, its loss, the gradient, an Adam update;
//! an evaluation every `eval_every` steps; and at the end the weights of the best evaluation.
//!
//! This is the challenge's loop: plain Adam, softmax cross-entropy averaged over batch and
//! positions, evaluations on random batches of the eval split. [`train`] below is all of it;
//! behind it, [`Trainer::step`] differentiates a batch in parts side by side, and
//! [`Evaluation`] averages the eval batches.

mod config;
mod eval;
mod report;
mod step;

pub use config::{Graded, TrainConfig};
pub use eval::{EvalScreen, Evaluation};
pub use report::{Control, EvalPoint, TrainError, TrainReport};
pub use step::{Optimiser, StepTimes, Trainer, loss, loss_and_gradients};

use crate::data::{Batch, Dataset};
use anyhow::Context as _;
use candle_core::{Device, Module, Tensor, Var};
use candle_nn::VarMap;
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
    config.validate()?;
    config.fits(data)?;
    let start = Instant::now();
    let mut batch_rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut eval_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_e7a1);
    let mut trainer = Trainer::new(model, varmap, config.learning_rate, device)?;
    let bar = crate::progress::steps(config.steps as u64, "training", config.progress);
    let mut report = TrainReport::default();
    let mut best_weights = None;

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
            let learning_rate = config.learning_rate;
            let error = TrainError::NonFinite {
                step,
                learning_rate,
                loss,
            };
            return Err(error.into());
        }
        report.train_losses.push(loss);
        report.steps_run = step;
        bar.inc(1);

        if step % config.eval_every == 0 || step == config.steps {
            let evaluation = config.evaluation(&data.eval, step);
            let (eval_loss, eval_batches) = evaluation.run(model, &mut eval_rng, device)?;
            let point = EvalPoint {
                step,
                train_loss: report.train_loss_since_last_eval(),
                eval_loss,
                eval_batches,
            };
            bar.set_message(format!(
                "train {:.3}  eval {eval_loss:.3}",
                point.train_loss
            ));
            report.evals.push(point);
            let complete = eval_batches == config.eval_batches;
            if config.keep_best && complete && report.best.is_none_or(|b| eval_loss < b.eval_loss) {
                report.best = Some(point);
                best_weights = Some(copy_weights(varmap)?);
            }
            if on_eval(&point) == Control::Stop {
                report.stopped_early = step < config.steps;
                break;
            }
        }
    }
    for (var, value) in best_weights.unwrap_or_default() {
        var.set(&value)?;
    }
    bar.finish_and_clear();
    report.elapsed = start.elapsed();
    Ok(report)
}

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
