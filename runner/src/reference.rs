//! `cargo xtask reference-curves`: trains the reference solutions at the challenge's settings
//! from a few seeds and rewrites the curves that `reference::curves` reads.

use crate::models::{self, TextModel};
use candle_nn::Optimizer;
use kit::train::{Control, Run, TrainConfig, TrainReport};
use kit::{Dataset, GptConfig, SeededVarMap};
use reference::curves::{self, Curves, FILE, TaskCurves};
use std::process::ExitCode;
use workbook::cli::ReferenceCurvesArgs;
use workbook::tasks::{Task, TaskList};

/// The reference evaluations average this many batches: a steadier band than the one batch a
/// `train` evaluation takes by default.
const EVAL_BATCHES: usize = 10;

/// The settings of `cargo xtask train` for `task`'s model, by default.
fn default_settings(task: &Task) -> Option<TrainConfig> {
    Some(TrainConfig::challenge(task.model.as_ref()?.steps))
}

/// `cargo xtask reference-curves`: trains each task's reference from `args.seeds` seeds at
/// the challenge's settings and writes the curves.
pub fn write(args: ReferenceCurvesArgs) -> anyhow::Result<ExitCode> {
    let list = TaskList::here()?;
    // Tasks not retrained keep their committed curves.
    let mut kept: Vec<TaskCurves> = match &args.task {
        Some(_) => curves::committed()?.tasks,
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
        // A task that reads BPE tokens trains the reference's tokenizer, whose files go to a
        // folder of their own.
        let dir = std::env::temp_dir().join(format!("minigpt-reference-{}", task.name));
        let data = models::dataset(&task.name, true, &dir)?;
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
            let curves = curves::for_task(&task.name).unwrap_or_else(|| {
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
}
