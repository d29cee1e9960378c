//! The reference solutions' loss curves at the challenge's settings, over a few seeds, as
//! `cargo xtask reference-curves` writes them to `data/reference/curves.json`: the band every
//! `cargo xtask train` is drawn against and compared with at each evaluation, and the band a
//! graded check that misses its bar says its run stood against.

use kit::GptConfig;
use kit::train::{EvalPoint, TrainConfig};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where the curves live, from the workbook's root.
pub const FILE: &str = "data/reference/curves.json";
/// The committed curves, built in.
const COMMITTED: &str = include_str!("../../data/reference/curves.json");

/// The curves of every trainable task.
#[derive(Debug, Serialize, Deserialize)]
pub struct Curves {
    /// How the file was made, for whoever reads it.
    pub made_by: String,
    pub tasks: Vec<TaskCurves>,
}

/// The reference model of one task trained from several seeds with the same settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskCurves {
    pub task: String,
    pub model: GptConfig,
    pub train: TrainConfig,
    pub seeds: Vec<u64>,
    /// One run per seed, in the order of `seeds`: its evaluations.
    pub runs: Vec<Vec<EvalPoint>>,
}

/// The lowest and highest loss of the reference runs at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub step: usize,
    pub train: (f32, f32),
    pub eval: (f32, f32),
}

/// How far outside a band a loss may lie and still count as within it: the band is the spread
/// of three seeds only, and other seeds of the same code stray a little beyond it (the guide
/// gives figures). A model that is wrong is usually far more than this behind.
pub const TOLERANCE: f32 = 0.1;

/// Where a run's loss stands against the band at the same step, give or take [`TOLERANCE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Below the band: learning faster than the reference.
    Ahead,
    Within,
    Behind,
}

impl Standing {
    /// Where `loss` stands against the lowest and highest loss of the reference, `(lo, hi)`.
    pub fn of(loss: f32, (lo, hi): (f32, f32)) -> Self {
        if loss < lo - TOLERANCE {
            Self::Ahead
        } else if loss > hi + TOLERANCE {
            Self::Behind
        } else {
            Self::Within
        }
    }
}

impl fmt::Display for Standing {
    /// The words before "the reference": "ahead of", "within", "behind".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ahead => "ahead of",
            Self::Within => "within",
            Self::Behind => "behind",
        })
    }
}

impl Band {
    /// Where a run's mean training loss since its previous evaluation stands against the band.
    pub fn standing(&self, train_loss: f32) -> Standing {
        Standing::of(train_loss, self.train)
    }
}

impl TaskCurves {
    /// The band at each evaluation step of the reference runs.
    pub fn bands(&self) -> Vec<Band> {
        let Some(first) = self.runs.first() else {
            return Vec::new();
        };
        let spread = |values: &mut dyn Iterator<Item = f32>| {
            values.fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
        };
        (0..first.len())
            .map(|i| Band {
                step: first[i].step,
                train: spread(
                    &mut self
                        .runs
                        .iter()
                        .map(|r| r.get(i).map_or(f32::NAN, |p| p.train_loss)),
                ),
                eval: spread(
                    &mut self
                        .runs
                        .iter()
                        .map(|r| r.get(i).map_or(f32::NAN, |p| p.eval_loss)),
                ),
            })
            .collect()
    }

    /// Whether a run of `model` with `train` can be compared with these curves: the same
    /// model and settings, but for the seed, the length of the run and the eval batches.
    pub fn compares_with(&self, model: &GptConfig, train: &TrainConfig) -> bool {
        *model == self.model && self.trained_like(train)
    }

    /// Whether `train` trains as these curves' runs did: the same settings, but for the seed,
    /// the length of the run and the eval batches.
    pub fn trained_like(&self, train: &TrainConfig) -> bool {
        let ours = TrainConfig {
            seed: self.train.seed,
            steps: self.train.steps,
            eval_batches: self.train.eval_batches,
            progress: self.train.progress,
            keep_best: self.train.keep_best,
            ..train.clone()
        };
        ours == self.train
    }
}

/// The committed curves of every trainable task.
pub fn committed() -> serde_json::Result<Curves> {
    serde_json::from_str(COMMITTED)
}

/// The committed curves of `task`, if the file has them.
pub fn for_task(task: &str) -> Option<TaskCurves> {
    committed().ok()?.tasks.into_iter().find(|c| c.task == task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_ahead_within_or_behind_the_band() {
        let band = Band {
            step: 100,
            train: (2.0, 2.1),
            eval: (2.05, 2.2),
        };
        assert_eq!(band.standing(1.89), Standing::Ahead);
        assert_eq!(band.standing(1.91), Standing::Within);
        assert_eq!(band.standing(2.19), Standing::Within);
        assert_eq!(band.standing(2.21), Standing::Behind);
        assert_eq!(Standing::of(1.94, band.eval), Standing::Ahead);
        assert_eq!(Standing::of(2.31, band.eval), Standing::Behind);
        assert_eq!(
            format!(
                "{} / {} / {}",
                Standing::Ahead,
                Standing::Within,
                Standing::Behind
            ),
            "ahead of / within / behind"
        );
    }

    #[test]
    fn other_settings_are_not_compared() {
        let curves = committed().expect("the committed curves").tasks.remove(0);
        let model = curves.model;
        let ok = TrainConfig {
            seed: 7,
            steps: 500,
            ..curves.train.clone()
        };
        assert!(curves.compares_with(&model, &ok));
        let lr = TrainConfig {
            learning_rate: 3e-3,
            ..ok.clone()
        };
        assert!(!curves.compares_with(&model, &lr));
        assert!(!curves.trained_like(&lr));
        let small = GptConfig {
            hidden: 64,
            ..model
        };
        assert!(!curves.compares_with(&small, &ok));
        assert!(curves.trained_like(&ok));
    }
}
