//! The settings of a training run, and the challenge's graded runs.

use super::eval::{EvalScreen, Evaluation};
use crate::data::Dataset;
use serde::{Deserialize, Serialize};

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

impl TrainConfig {
    /// The challenge's warm-up run: 7000 steps, Adam 1e-3, batch 16, block 32.
    pub const fn warmup() -> Self {
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
    pub const fn task1() -> Self {
        Self {
            steps: 4000,
            ..Self::warmup()
        }
    }

    /// The evaluation after step `step`: the eval split, `eval_batches` batches, screened
    /// except after the last step (the evaluation a run ends with is always complete).
    pub fn evaluation<'a>(&self, eval: &'a [u32], step: usize) -> Evaluation<'a> {
        Evaluation {
            data: eval,
            batches: self.eval_batches,
            batch_size: self.batch_size,
            block_size: self.block_size,
            screen: self.eval_screen.filter(|_| step < self.steps),
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

/// A graded run of the challenge: the settings of the training and the bar its evaluation
/// loss must get below. The checks, the benchmarks and the command line all start from these.
#[derive(Debug, Clone, PartialEq)]
pub struct Graded {
    pub config: TrainConfig,
    /// Pass at the first complete evaluation below this.
    pub bar: f32,
}

impl Graded {
    /// The warm-up's bigram: at most 7000 steps, the mean loss over 100 eval batches every
    /// 500 steps, below 2.6.
    pub const fn warmup() -> Self {
        Self::from(TrainConfig::warmup(), 500, 2.6)
    }

    /// Task 1's MiniGPT (and Task 3's, with einsum attention): at most 4000 steps, the mean
    /// loss over 100 eval batches every 250 steps, below 1.9.
    pub const fn task1() -> Self {
        Self::from(TrainConfig::task1(), 250, 1.9)
    }

    const fn from(base: TrainConfig, eval_every: usize, bar: f32) -> Self {
        Self {
            config: TrainConfig {
                eval_every,
                eval_batches: 100,
                keep_best: false,
                progress: false,
                ..base
            },
            bar,
        }
    }
}
