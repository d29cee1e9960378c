//! The settings of a model and of a training run, their defaults, and the one check of them.
//!
//! Every setting is checked here and only here; [`SettingError`] says which one is wrong and
//! what would be right, in the workbook's words.

use serde::{Deserialize, Serialize};

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    #[error("{name} must be at least 1, got {value}")]
    Zero { name: &'static str, value: usize },
    #[error(
        "hidden ({hidden}) must be a multiple of num_heads ({num_heads}): each head gets \
         hidden / num_heads dimensions"
    )]
    HeadsDoNotDivide { hidden: usize, num_heads: usize },
    #[error("the learning rate must be a positive number, got {0}")]
    LearningRate(f64),
    #[error(
        "block_size {block_size} is too large for the {split} split ({len} tokens): a block \
         and the token after it must fit, so choose a block size below {len}"
    )]
    BlockTooLarge {
        block_size: usize,
        split: &'static str,
        len: usize,
    },
    #[error(
        "eval_screen.batches must be between 1 and eval_batches ({eval_batches}), got {batches}"
    )]
    Screen { batches: usize, eval_batches: usize },
}

/// Fails with [`SettingError::Zero`] for the first of `named` that is 0.
fn none_zero(named: &[(&'static str, usize)]) -> Result<(), SettingError> {
    match named.iter().find(|(_, v)| *v == 0) {
        Some(&(name, value)) => Err(SettingError::Zero { name, value }),
        None => Ok(()),
    }
}

/// Checks that windows of `block_size` tokens, each followed by its next token, can be drawn
/// `batch_size` at a time from a split of `len` tokens called `split`.
pub fn check_windows(
    batch_size: usize,
    block_size: usize,
    split: &'static str,
    len: usize,
) -> Result<(), SettingError> {
    none_zero(&[("batch_size", batch_size), ("block_size", block_size)])?;
    if len <= block_size {
        return Err(SettingError::BlockTooLarge {
            block_size,
            split,
            len,
        });
    }
    Ok(())
}

/// The sizes that define a MiniGPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Number of distinct tokens (65 for tiny Shakespeare).
    pub vocab_size: usize,
    /// Width of the residual stream, `C` in the shape comments.
    pub hidden: usize,
    /// Longest context the model sees, `T` at most; also the number of position embeddings.
    pub block_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Attention heads per block; each head has `hidden / num_heads` dimensions.
    pub num_heads: usize,
}

impl GptConfig {
    /// The model of the challenge's graded Task 1: 4 layers, 4 heads, hidden 128, and the
    /// challenge's block size.
    pub const fn graded(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden: 128,
            block_size: TrainConfig::CHALLENGE.block_size,
            num_layers: 4,
            num_heads: 4,
        }
    }

    /// Dimensions of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.num_heads
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<(), SettingError> {
        none_zero(&[
            ("vocab_size", self.vocab_size),
            ("hidden", self.hidden),
            ("block_size", self.block_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
        ])?;
        if !self.hidden.is_multiple_of(self.num_heads) {
            return Err(SettingError::HeadsDoNotDivide {
                hidden: self.hidden,
                num_heads: self.num_heads,
            });
        }
        Ok(())
    }
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
    /// Seeds the batches; parameters have their own seed (see kit's `SeededVarMap`).
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
    /// The challenge's training loop: plain Adam at 1e-3, batches of 16 windows of 32 tokens,
    /// an evaluation on one eval batch every 100 steps, the best weights kept. Its number of
    /// steps is each task's (`[task.model] steps` in tasks.toml).
    pub const CHALLENGE: TrainConfig = TrainConfig {
        steps: 4000,
        learning_rate: 1e-3,
        batch_size: 16,
        block_size: 32,
        eval_every: 100,
        eval_batches: 1,
        seed: 0,
        keep_best: true,
        progress: true,
        eval_screen: None,
    };

    /// The challenge's loop for `steps` steps.
    pub const fn challenge(steps: usize) -> Self {
        Self {
            steps,
            ..Self::CHALLENGE
        }
    }

    /// Checks the settings, and that a block (and the token after it) fits in splits of
    /// `train` and `eval` tokens.
    pub fn validate(&self, train: usize, eval: usize) -> Result<(), SettingError> {
        none_zero(&[
            ("steps", self.steps),
            ("eval_every", self.eval_every),
            ("eval_batches", self.eval_batches),
        ])?;
        check_windows(self.batch_size, self.block_size, "train", train)?;
        check_windows(self.batch_size, self.block_size, "eval", eval)?;
        if let Some(screen) = self.eval_screen
            && !(1..=self.eval_batches).contains(&screen.batches)
        {
            return Err(SettingError::Screen {
                batches: screen.batches,
                eval_batches: self.eval_batches,
            });
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(SettingError::LearningRate(self.learning_rate));
        }
        Ok(())
    }
}

/// A graded run of the challenge: the settings of the training and the bar its evaluation
/// loss must get below. A task's `[task.graded]` in tasks.toml gives its length, how often it
/// is evaluated and its bar; the rest is the challenge's protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct Graded {
    pub config: TrainConfig,
    /// Pass at the first complete evaluation below this.
    pub bar: f32,
}

impl Graded {
    /// Every graded evaluation averages this many random eval batches.
    pub const EVAL_BATCHES: usize = 100;

    /// At most `steps` steps of the challenge's loop, the mean loss over
    /// [`Graded::EVAL_BATCHES`] eval batches every `eval_every` steps, below `bar`.
    pub const fn new(steps: usize, eval_every: usize, bar: f32) -> Self {
        Self {
            config: TrainConfig {
                steps,
                eval_every,
                eval_batches: Self::EVAL_BATCHES,
                keep_best: false,
                progress: false,
                ..TrainConfig::CHALLENGE
            },
            bar,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_setting_is_named() {
        let ok = TrainConfig::challenge(10);
        assert_eq!(ok.validate(1000, 100), Ok(()));
        let zero = TrainConfig {
            eval_every: 0,
            ..ok.clone()
        };
        assert_eq!(
            zero.validate(1000, 100).unwrap_err().to_string(),
            "eval_every must be at least 1, got 0"
        );
        let long = TrainConfig {
            block_size: 100,
            ..ok.clone()
        };
        let msg = long.validate(1000, 100).unwrap_err().to_string();
        assert!(msg.contains("too large for the eval split"), "{msg}");
        let lr = TrainConfig {
            learning_rate: f64::NAN,
            ..ok
        };
        assert!(matches!(
            lr.validate(1000, 100),
            Err(SettingError::LearningRate(_))
        ));
        let heads = GptConfig {
            num_heads: 3,
            ..GptConfig::graded(65)
        };
        assert!(
            heads
                .validate()
                .unwrap_err()
                .to_string()
                .contains("multiple of num_heads")
        );
    }
}
