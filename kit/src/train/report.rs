//! What a training run reports: its evaluations, its losses, and how it can fail.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

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

impl fmt::Display for EvalPoint {
    /// "step   250: train loss 2.370, eval loss 2.412", the line `cargo xtask train` and the
    /// graded checks print after each evaluation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {:>5}: train loss {:.3}, eval loss {:.3}",
            self.step, self.train_loss, self.eval_loss
        )
    }
}

/// What a callback wants after an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// What a training run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

    /// The mean training loss of the steps since the previous evaluation, summed in f64.
    pub fn train_loss_since_last_eval(&self) -> f32 {
        let from = self.last_eval().map_or(0, |e| e.step);
        let losses = &self.train_losses[from..];
        let total: f64 = losses.iter().map(|&l| l as f64).sum();
        (total / losses.len().max(1) as f64) as f32
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
