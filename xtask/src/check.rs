//! `cargo xtask check`: builds a task's checks, runs them and prints each verdict as it comes.
//!
//! The order of a grading: build (a compile error is the verdict), the quick checks side by
//! side, then, only if they all pass, the graded training with a live progress line. The first
//! failure is shown in full, later ones in a line each, and the closing "Next:" line reads the
//! recorded results of every task.

mod processes;

use crate::cargo::{self, Built, Diagnostic};
use crate::verdict::{Outcome, Printer, Verdict};
use processes::Runner;
use std::path::Path;
use std::process::ExitCode;
use workbook::cli::CheckArgs;
use workbook::state::{Failure, State, TaskResult};
use workbook::style;
use workbook::tasks::{self, GRADED_TRAINING, Task, TaskList};

/// What grading one task gave.
pub enum Grade {
    /// The checks ran (some may have been skipped).
    Ran(Vec<Verdict>),
    /// The code did not compile: these files have errors.
    DoesNotCompile(Vec<String>),
}

impl Grade {
    fn result(&self) -> TaskResult {
        match self {
            Grade::Ran(verdicts) => TaskResult {
                passed: verdicts.iter().filter(|v| v.passed()).count(),
                total: verdicts.len(),
                compiles: true,
                first_failure: verdicts
                    .iter()
                    .find(|v| v.outcome == Outcome::Failed)
                    .map(|v| Failure {
                        check: v.name.clone(),
                        headline: v.headline().unwrap_or("").to_string(),
                    }),
            },
            Grade::DoesNotCompile(_) => TaskResult {
                compiles: false,
                ..TaskResult::default()
            },
        }
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let root = workbook::workspace_root();
    let list = TaskList::load(&root)?;
    let tasks: Vec<&Task> = if args.task == tasks::ALL {
        list.tasks.iter().collect()
    } else {
        vec![list.get(&args.task).map_err(anyhow::Error::msg)?]
    };
    // Fetch the corpus here, where its progress bar and any error reach the terminal, rather
    // than inside a check.
    workbook::corpus::ensure()
        .map_err(|e| anyhow::anyhow!("{e}\n(`cargo xtask doctor` checks this machine)"))?;
    let graded = if args.solutions {
        "the reference solutions"
    } else {
        "your exercises"
    };
    let mut all_passed = true;
    let mut last = None;
    for &task in &tasks {
        println!(
            "{} {} ({graded})",
            style::bold("Checking"),
            style::bold(&task.name)
        );
        let grade = grade(&root, task, args.solutions)?;
        let result = grade.result();
        let summary = match &grade {
            Grade::DoesNotCompile(_) => format!("{}: does not compile", task.name),
            Grade::Ran(_) => format!(
                "{}: {} of {} checks pass",
                task.name, result.passed, result.total
            ),
        };
        if result.passes() {
            println!("{}\n", style::ok(&summary));
        } else {
            println!("{}\n", style::bad(&summary));
            all_passed = false;
        }
        if !args.solutions {
            let mut state = State::load();
            state.results.insert(task.name.clone(), result);
            state.save()?;
        }
        let stop = matches!(grade, Grade::DoesNotCompile(_));
        last = Some((task, grade));
        if stop {
            // The exercises are one crate: the next tasks would not compile either.
            break;
        }
    }
    if let Some((task, grade)) = last {
        println!(
            "{}",
            next_line(&list, task, &grade, args.solutions, tasks.len() > 1)
        );
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The closing advice: what to fix in the task just graded, else the first task the record
/// shows as not passing, else training.
fn next_line(
    list: &TaskList,
    task: &Task,
    grade: &Grade,
    solutions: bool,
    several: bool,
) -> String {
    let name = &task.name;
    let verdicts = match grade {
        Grade::DoesNotCompile(files) => {
            return format!(
                "Next: fix the compile errors above in {}, then run `cargo xtask check {name}` again.",
                files.join(" and ")
            );
        }
        Grade::Ran(verdicts) => verdicts,
    };
    if solutions {
        return format!("Next: `cargo xtask check {name}` grades your own code the same way.");
    }
    if !several && verdicts.iter().any(|v| !v.passed()) {
        // The first ✗ decides: a later check that stops on a todo!() says nothing about it.
        let first = verdicts.iter().find(|v| v.outcome == Outcome::Failed);
        let todo = first
            .and_then(|v| v.message.as_deref())
            .is_some_and(|m| m.starts_with("not yet implemented"));
        let part = first.and_then(|v| task.parts.iter().find(|p| p.checks.contains(&v.name)));
        return match part {
            _ if todo => format!(
                "Next: fill in the todo!() named above, then run `cargo xtask check {name}` again."
            ),
            Some(part) => format!(
                "Next: the first ✗ grades {}: fix what it says, then run `cargo xtask check \
                 {name}` again (stuck? `cargo xtask hint {name} {}`).",
                part.todo, part.id
            ),
            None => format!(
                "Next: fix what the first ✗ says, then run `cargo xtask check {name}` again \
                 (stuck? `cargo xtask hint {name}`)."
            ),
        };
    }
    let state = State::load();
    match state.first_not_passing(list) {
        Some(next) => match state.results.get(next.name.as_str()) {
            Some(r) if r.compiles => format!(
                "Next: {} is not passing yet ({} of {} checks at your last check): cargo xtask check {}",
                style::bold(&next.name),
                r.passed,
                r.total,
                next.name
            ),
            Some(_) => format!(
                "Next: {} did not compile at your last check: cargo xtask check {}",
                style::bold(&next.name),
                next.name
            ),
            None => format!(
                "Next: {} (cargo xtask check {})",
                style::bold(&next.name),
                next.name
            ),
        },
        None => every_task_passes(list),
    }
}

/// The closing line once every task passes: train the last model of the list.
pub fn every_task_passes(list: &TaskList) -> String {
    match list.with_model().last() {
        Some(t) => format!(
            "Every task passes. Next: cargo xtask train {} to watch your model learn.",
            t.name
        ),
        None => "Every task passes.".to_string(),
    }
}

/// Builds one task's checks and runs them, printing each verdict as it comes.
pub fn grade(root: &Path, info: &Task, solutions: bool) -> anyhow::Result<Grade> {
    let mut build = vec![
        "test",
        "--no-run",
        "--package",
        "checks",
        "--test",
        info.checks_target(),
    ];
    if solutions {
        build.extend(["--features", "solutions"]);
    }
    let graded_file = if solutions {
        &info.solution
    } else {
        &info.exercise
    };
    let executable = match cargo::build(root, &build)? {
        Built::Program {
            executable,
            warnings,
        } => {
            for w in warnings.iter().filter(|w| &w.file == graded_file) {
                println!("{}\n", w.rendered);
            }
            executable
        }
        Built::Failed(errors) => return Ok(Grade::DoesNotCompile(report_errors(&errors))),
    };
    let mut names = processes::list(&executable)?;
    anyhow::ensure!(
        !names.is_empty(),
        "the {} checks list no test: is {} complete?",
        info.name,
        info.checks
    );
    // In the order the file has them.
    let source = std::fs::read_to_string(root.join(&info.checks)).unwrap_or_default();
    names.sort_by_key(|n| source.find(&format!("fn {n}(")).unwrap_or(usize::MAX));
    let (training, quick): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| n.starts_with(GRADED_TRAINING));
    let runner = Runner {
        executable,
        dir: root.join("checks"),
    };
    let mut printer = Printer::default();
    let mut verdicts = runner.run_side_by_side(&quick, &mut printer)?;
    let quick_pass = verdicts.iter().all(Verdict::passed);
    for name in training {
        let v = if quick_pass {
            runner.run_with_progress(&name)?
        } else {
            Verdict {
                name,
                outcome: Outcome::Skipped,
                message: Some("skipped: the checks above must pass first".into()),
            }
        };
        printer.print(&v);
        verdicts.push(v);
    }
    Ok(Grade::Ran(verdicts))
}

/// Prints a ✗ for each file with compile errors, followed by its errors; returns the files.
fn report_errors(errors: &[Diagnostic]) -> Vec<String> {
    let mut files = cargo::files_with_errors(errors);
    for file in &files {
        let mine: Vec<&Diagnostic> = errors.iter().filter(|e| &e.file == file).collect();
        println!(
            "  {} {file} does not compile (line {})",
            style::bad("✗"),
            mine[0].line
        );
        for e in mine {
            for line in e.rendered.lines() {
                println!("      {line}");
            }
            println!();
        }
    }
    if files.is_empty() {
        println!(
            "  {} the checks could not be built: cargo's message is above \
             (`cargo xtask doctor` checks this machine)",
            style::bad("✗")
        );
        files.push("the workbook".into());
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(name: &str, outcome: Outcome, message: &str) -> Verdict {
        Verdict {
            name: name.into(),
            outcome,
            message: Some(message.into()),
        }
    }

    #[test]
    fn the_next_line_names_the_part_of_the_first_failing_check() {
        let list = TaskList::load(&workbook::workspace_root()).unwrap();
        let task = list.get("warmup").unwrap();
        let line =
            |verdicts: Vec<Verdict>| next_line(&list, task, &Grade::Ran(verdicts), false, false);
        // A wrong value first, a todo!() only later: the wrong value's part.
        let wrong_then_todo = line(vec![
            verdict(
                "generate_is_greedy_from_the_start_token",
                Outcome::Failed,
                "after token 57 comes 38",
            ),
            verdict(
                "the_embedding_receives_a_gradient",
                Outcome::Failed,
                "not yet implemented: SimpleDecoder::forward",
            ),
        ]);
        assert_eq!(
            wrong_then_todo,
            "Next: the first ✗ grades SimpleDecoder::generate: fix what it says, then run \
             `cargo xtask check warmup` again (stuck? `cargo xtask hint warmup generate`)."
        );
        let todo_first = line(vec![verdict(
            "generate_is_greedy_from_the_start_token",
            Outcome::Failed,
            "not yet implemented: SimpleDecoder::generate",
        )]);
        assert!(todo_first.contains("fill in the todo!()"), "{todo_first}");
    }
}
