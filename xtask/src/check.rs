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
use xtask::cli::{CheckArgs, Task};
use xtask::style;
use xtask::tasks::{self, State, TaskResult};

/// The checks whose name starts with this train a model; they run last, and only when every
/// other check of the task passes.
const GRADED_TRAINING: &str = "graded_training";

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
            },
            Grade::DoesNotCompile(_) => TaskResult {
                passed: 0,
                total: 0,
                compiles: false,
            },
        }
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let tasks: Vec<Task> = if args.task == Task::All {
        Task::ORDER.to_vec()
    } else {
        vec![args.task]
    };
    let root = xtask::workspace_root();
    // Fetch the corpus here, where its progress bar and any error reach the terminal, rather
    // than inside a check.
    kit::corpus::load()
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
            style::bold(task.name())
        );
        let grade = grade(&root, task, args.solutions)?;
        let result = grade.result();
        if !args.solutions {
            let mut state = State::load();
            state.results.insert(task.name().to_string(), result);
            state.save()?;
        }
        let summary = match &grade {
            Grade::DoesNotCompile(_) => format!("{}: does not compile", task.name()),
            Grade::Ran(_) => format!(
                "{}: {} of {} checks pass",
                task.name(),
                result.passed,
                result.total
            ),
        };
        if result.passes() {
            println!("{}\n", style::ok(&summary));
        } else {
            println!("{}\n", style::bad(&summary));
            all_passed = false;
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
            next_line(task, &grade, args.solutions, tasks.len() > 1)
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
fn next_line(task: Task, grade: &Grade, solutions: bool, several: bool) -> String {
    let name = task.name();
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
        let todo = verdicts.iter().any(|v| {
            v.message
                .as_deref()
                .is_some_and(|m| m.starts_with("not yet implemented"))
        });
        return if todo {
            format!(
                "Next: fill in the todo!() named above, then run `cargo xtask check {name}` again."
            )
        } else {
            format!(
                "Next: fix what the first ✗ says, then run `cargo xtask check {name}` again \
                 (stuck? `cargo xtask hint {name}`)."
            )
        };
    }
    let state = State::load();
    match tasks::first_not_passing(&state) {
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
        None => "Every task passes. Next: cargo xtask train task1 to watch your model learn."
            .to_string(),
    }
}

/// Builds one task's checks and runs them, printing each verdict as it comes.
pub fn grade(root: &Path, task: Task, solutions: bool) -> anyhow::Result<Grade> {
    let info = tasks::info(task);
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
        info.solution_file()
    } else {
        info.file.clone()
    };
    let executable = match cargo::build(root, &build)? {
        Built::Program {
            executable,
            warnings,
        } => {
            for w in warnings.iter().filter(|w| w.file == graded_file) {
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
