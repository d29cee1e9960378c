//! `cargo xtask mutants`: how many deliberately broken reference solutions the checks catch.
//!
//! `cargo-mutants` changes the reference solution of a task one small edit at a time (a `+`
//! made `-`, a function body replaced by a default value, ...) and runs that task's checks on
//! each such mutant. A mutant the checks pass is a hole in the grader, unless it behaves exactly
//! like the original. Results and the known equivalent mutants are in docs/mutants.md.
//!
//! It runs in a disposable copy of the workbook under `target/mutants/`, so your files are never
//! edited, and builds into this workspace's target directory, so candle is not compiled again.

use mistakes::{Mistake, load_mistakes, try_mistakes};
use std::process::ExitCode;
use workbench::{TaskOutcome, Workbench};
use workbook::cli::MutantsArgs;
use workbook::tasks::{self, Task, TaskList};
use workbook::workspace_root;

mod mistakes;
mod workbench;

pub fn run(args: MutantsArgs) -> anyhow::Result<ExitCode> {
    let bench = Workbench::prepare(workspace_root())?;
    let list = TaskList::load(&bench.root)?;
    let tasks: Vec<&Task> = if args.task == tasks::ALL {
        list.tasks.iter().collect()
    } else {
        vec![list.get(&args.task).map_err(anyhow::Error::msg)?]
    };
    let mistakes: Vec<Mistake> = load_mistakes(&bench.root)?
        .into_iter()
        .filter(|m| tasks.iter().any(|t| t.name == m.task))
        .collect();
    if args.list {
        for &task in &tasks {
            bench.mutate(task, true)?;
        }
        println!("\nHand-written mistakes (xtask/mutants.toml):");
        for m in &mistakes {
            println!("{}: {}", m.task, m.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut outcomes = Vec::new();
    for &task in &tasks {
        bench.baseline(task)?;
        outcomes.extend(bench.mutate(task, false)?);
    }
    let tried = try_mistakes(&bench, &list, &mistakes)?;
    let all_caught = report(&tasks, &outcomes, &tried);
    println!("\nFull logs: target/mutants/<task>/mutants.out");
    Ok(if all_caught {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the score of each task, the missed mutants and the mistakes caught; returns whether
/// every mutant and every mistake was caught.
fn report(tasks: &[&Task], outcomes: &[TaskOutcome], tried: &[(&Mistake, Vec<String>)]) -> bool {
    println!(
        "\n{:<8} {:>7} {:>7} {:>7} {:>8} {:>10} {:>7}",
        "task", "mutants", "caught", "missed", "timeout", "unviable", "score"
    );
    for TaskOutcome {
        task, counts: c, ..
    } in outcomes
    {
        println!(
            "{:<8} {:>7} {:>7} {:>7} {:>8} {:>10} {:>6.1}%",
            task,
            c.total_mutants,
            c.caught,
            c.missed,
            c.timeout,
            c.unviable,
            100.0 * c.score()
        );
    }
    let missed: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            let lines = o.missed.lines().filter(|l| !l.trim().is_empty());
            lines.map(|line| format!("  {}: {line}", o.task))
        })
        .collect();
    if !missed.is_empty() {
        println!("\nMissed (each must be a new check or an equivalent mutant in docs/mutants.md):");
        println!("{}", missed.join("\n"));
    }
    for task in tasks {
        let rows: Vec<_> = tried.iter().filter(|(m, _)| m.task == task.name).collect();
        let caught = rows.iter().filter(|(_, by)| !by.is_empty()).count();
        println!(
            "{:<8} hand-written mistakes: {caught} of {} caught",
            task.name,
            rows.len()
        );
    }
    missed.is_empty() && tried.iter().all(|(_, by)| !by.is_empty())
}
