//! The reference solutions' loss curves at the challenge's settings, over a few seeds: the band
//! every `cargo xtask train` is drawn against in `loss.svg` and compared with at each
//! evaluation. `cargo xtask reference-curves` trains them again and rewrites the file.

use crate::models::{self, TextModel};
use candle_nn::Optimizer;
use kit::train::{Control, EvalPoint, Run, TrainConfig, TrainReport};
use kit::{Dataset, GptConfig, SeededVarMap};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use workbook::cli::ReferenceCurvesArgs;
use workbook::tasks::{Task, TaskList};

/// Where the curves live, from the workbook's root.
const FILE: &str = "data/reference/curves.json";
/// The committed curves, built into the runner.
const COMMITTED: &str = include_str!("../../data/reference/curves.json");
/// The reference evaluations average this many batches: a steadier band than the one batch a
/// `train` evaluation takes by default.
const EVAL_BATCHES: usize = 10;

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

/// How far outside the band a training loss may lie and still count as within it: the band is
/// the spread of three seeds only, and other seeds of the same code stray a little beyond it
/// (the guide gives figures). A model that is wrong is usually far more than this behind.
pub const TOLERANCE: f32 = 0.1;

/// Where a run's training loss stands against the band at the same step, give or take
/// [`TOLERANCE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Below the band: learning faster than the reference.
    Ahead,
    Within,
    Behind,
}

impl Band {
    pub fn standing(&self, train_loss: f32) -> Standing {
        if train_loss < self.train.0 - TOLERANCE {
            Standing::Ahead
        } else if train_loss > self.train.1 + TOLERANCE {
            Standing::Behind
        } else {
            Standing::Within
        }
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
        let ours = TrainConfig {
            seed: self.train.seed,
            steps: self.train.steps,
            eval_batches: self.train.eval_batches,
            progress: self.train.progress,
            keep_best: self.train.keep_best,
            ..train.clone()
        };
        *model == self.model && ours == self.train
    }
}

/// The committed curves of `task`, if the file has them.
pub fn for_task(task: &str) -> Option<TaskCurves> {
    let curves: Curves = serde_json::from_str(COMMITTED).ok()?;
    curves.tasks.into_iter().find(|c| c.task == task)
}

/// The settings of `cargo xtask train` for `task`'s model, by default.
fn default_settings(task: &Task) -> Option<TrainConfig> {
    Some(TrainConfig::challenge(task.model.as_ref()?.steps))
}

/// `cargo xtask reference-curves`: trains each task's reference from `args.seeds` seeds at
/// the challenge's settings and writes the curves.
pub fn write(args: ReferenceCurvesArgs) -> anyhow::Result<ExitCode> {
    let data = Dataset::load()?;
    let list = TaskList::here()?;
    // Tasks not retrained keep their committed curves.
    let mut kept: Vec<TaskCurves> = match &args.task {
        Some(_) => serde_json::from_str::<Curves>(COMMITTED)?.tasks,
        None => Vec::new(),
    };
    let mut tasks = Vec::new();
    for task in list.with_model() {
        if args.task.as_ref().is_some_and(|t| t != &task.name) {
            tasks.extend(
                kept.iter()
                    .position(|c| c.task == task.name)
                    .map(|i| kept.remove(i)),
            );
            continue;
        }
        let Some(settings) = default_settings(task) else {
            continue;
        };
        tasks.push(curves_of(task, settings, args.seeds, &data)?);
    }
    let curves = Curves {
        made_by: format!(
            "cargo xtask reference-curves --seeds {}: the reference solutions at the challenge's \
             settings, each evaluation over {EVAL_BATCHES} eval batches",
            args.seeds
        ),
        tasks,
    };
    let path = workbook::workspace_root().join(FILE);
    let json = serde_json::to_string_pretty(&curves)?;
    workbook::files::write_atomically(&path, format!("{json}\n").as_bytes())?;
    println!("Wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The reference of `task` trained from `seeds` seeds with `settings`, each evaluation over
/// [`EVAL_BATCHES`] batches, with the task's own training step where it has one.
fn curves_of(
    task: &Task,
    settings: TrainConfig,
    seeds: u64,
    data: &Dataset,
) -> anyhow::Result<TaskCurves> {
    let device = candle_core::Device::Cpu;
    let model = GptConfig::graded(data.vocab_size());
    let train = TrainConfig {
        eval_batches: EVAL_BATCHES,
        progress: false,
        ..settings
    };
    let seeds: Vec<u64> = (0..seeds).collect();
    let mut runs = Vec::new();
    for &seed in &seeds {
        let train = TrainConfig {
            seed,
            ..train.clone()
        };
        let params = SeededVarMap::new(seed);
        let built = models::build(&task.name, true, model, params.var_builder(&device))?;
        let options = models::StepOptions {
            lr: train.learning_rate,
            steps: train.steps,
            schedule: false,
            clip: None,
        };
        let (varmap, name) = (params.varmap(), &task.name);
        let to_the_end = ToTheEnd;
        let report = models::start_run(
            name,
            true,
            built.as_ref(),
            varmap,
            data,
            &train,
            options,
            to_the_end,
        )?;
        let last = report.last_eval().map_or(f32::NAN, |p| p.eval_loss);
        println!(
            "{} seed {seed}: {} steps in {:.0} s, last eval loss {last:.3}",
            task.name,
            report.steps_run,
            report.elapsed.as_secs_f32()
        );
        runs.push(report.evals);
    }
    Ok(TaskCurves {
        task: task.name.clone(),
        model,
        train,
        seeds,
        runs,
    })
}

/// A run trained to its end, whichever its optimiser.
struct ToTheEnd;

impl<'a> models::WithRun<'a> for ToTheEnd {
    type Output = TrainReport;

    fn kit(self, run: Run<'a, dyn TextModel>) -> anyhow::Result<TrainReport> {
        self.own(run)
    }

    fn own<O: Optimizer + Send>(
        self,
        run: Run<'a, dyn TextModel, O>,
    ) -> anyhow::Result<TrainReport> {
        run.train_to_the_end(|_| Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_curves_cover_every_trainable_task_over_several_seeds() {
        let list = TaskList::here().unwrap();
        for task in list.with_model() {
            let curves = for_task(&task.name).unwrap_or_else(|| {
                panic!(
                    "{FILE} has no {}: run `cargo xtask reference-curves`",
                    task.name
                )
            });
            assert!(curves.seeds.len() >= 3, "{}: {:?}", task.name, curves.seeds);
            assert_eq!(curves.runs.len(), curves.seeds.len());
            let bands = curves.bands();
            assert_eq!(bands.len() * curves.train.eval_every, curves.train.steps);
            assert!(
                bands
                    .iter()
                    .all(|b| b.train.0 <= b.train.1 && b.eval.0 <= b.eval.1)
            );
            // The reference learns: its last band is well below its first.
            let (first, last) = (bands[0], bands[bands.len() - 1]);
            assert!(last.train.1 < first.train.0 - 0.2, "{first:?} {last:?}");
            // `train`'s defaults are what the curves were made with.
            let model = GptConfig::graded(curves.model.vocab_size);
            assert!(
                curves.compares_with(&model, &default_settings(task).unwrap()),
                "{}",
                task.name
            );
        }
    }

    #[test]
    fn a_run_is_ahead_within_or_behind_the_band() {
        let band = Band {
            step: 100,
            train: (2.0, 2.1),
            eval: (2.05, 2.2),
        };
        assert_eq!(band.standing(1.89), Standing::Ahead);
        assert_eq!(band.standing(1.91), Standing::Within);
        assert_eq!(band.standing(2.19), Standing::Within);
        assert_eq!(band.standing(2.21), Standing::Behind);
    }

    #[test]
    fn other_settings_are_not_compared() {
        let list = TaskList::here().unwrap();
        let task = list.with_model().next().expect("a task with a model");
        let curves = for_task(&task.name).expect("its curves");
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
        let small = GptConfig {
            hidden: 64,
            ..model
        };
        assert!(!curves.compares_with(&small, &ok));
    }
}
