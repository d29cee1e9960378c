//! `cargo xtask mutants`: how many deliberately broken reference solutions the checks catch.
//!
//! `cargo-mutants` changes the reference solution of a task one small edit at a time (a `+`
//! made `-`, a function body replaced by a default value, ...) and runs that task's checks on
//! each such mutant. A mutant the checks pass is a hole in the grader, unless it behaves exactly
//! like the original. Results and the known equivalent mutants are in docs/mutants.md.
//!
//! It runs in a disposable copy of the workbook under `target/mutants/`, so your files are never
//! edited, and builds into this workspace's target directory, so candle is not compiled again.

use crate::check::workspace_root;
use crate::cli::{MutantsArgs, Task};
use crate::style;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// What the copy needs: the workspace without its build outputs, runs and corpus.
const PARTS: [&str; 9] = [
    "Cargo.toml",
    "Cargo.lock",
    ".cargo",
    "kit",
    "exercises",
    "solutions",
    "checks",
    "xtask",
    "data/fixtures",
];

/// The graded trainings of Task 1 and Task 3 take a minute or more each; run once per mutant,
/// they would make a run take a day. Their models are checked without training by the other
/// checks of the task (see docs/mutants.md). The warm-up's graded training takes a second and
/// stays.
fn skipped(task: Task) -> Option<&'static str> {
    match task {
        Task::Task1 | Task::Task3 => Some("graded_training"),
        _ => None,
    }
}

/// Counts of one task's run, read from cargo-mutants' `outcomes.json`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Counts {
    pub total_mutants: usize,
    pub caught: usize,
    pub missed: usize,
    pub timeout: usize,
    pub unviable: usize,
}

impl Counts {
    /// Caught (a check failed or timed out) over viable (those that compiled).
    pub fn score(&self) -> f64 {
        let viable = self.caught + self.missed + self.timeout;
        if viable == 0 {
            1.0
        } else {
            (self.caught + self.timeout) as f64 / viable as f64
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            if entry.file_name() != "target" {
                copy_tree(&entry.path(), &to.join(entry.file_name()))?;
            }
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub fn run(args: MutantsArgs) -> anyhow::Result<ExitCode> {
    let version = Command::new(cargo())
        .args(["mutants", "--version"])
        .stdin(Stdio::null())
        .output();
    if !version.is_ok_and(|o| o.status.success()) {
        anyhow::bail!(
            "cargo-mutants is not installed. Install it with `cargo install cargo-mutants --locked`, \
             then run `cargo xtask mutants` again."
        );
    }
    let root = workspace_root();
    let work = root.join("target").join("mutants");
    let tree = work.join("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)
            .with_context(|| format!("cannot clear the old copy at {}", tree.display()))?;
    }
    for part in PARTS {
        copy_tree(&root.join(part), &tree.join(part))
            .with_context(|| format!("cannot copy {part} to {}", tree.display()))?;
    }
    let tasks: Vec<Task> = match args.task {
        Task::All => Task::ORDER.to_vec(),
        t => vec![t],
    };
    let mut results = Vec::new();
    for task in tasks {
        let out = work.join(task.name());
        println!(
            "{} {} (solutions/src/{}.rs)",
            style::bold("Mutating"),
            task.name(),
            task.name()
        );
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&tree)
            .env("CARGO_TARGET_DIR", root.join("target"))
            .args([
                "mutants",
                "--in-place",
                "--no-shuffle",
                "--package",
                "solutions",
            ])
            .args(["--test-package", "checks", "--features", "solutions"])
            .arg("--file")
            .arg(format!("solutions/src/{}.rs", task.name()))
            .arg("--output")
            .arg(&out);
        if args.list {
            cmd.arg("--list");
        }
        cmd.args(["--", "--test", task.name()]);
        if let Some(skip) = skipped(task) {
            cmd.args(["--", "--skip", skip]);
        }
        let status = cmd.status().context("cannot run cargo mutants")?;
        if args.list {
            continue;
        }
        // cargo-mutants exits non-zero when a mutant is missed; that is a result, not an error.
        let outcomes = out.join("mutants.out").join("outcomes.json");
        let text = std::fs::read_to_string(&outcomes).with_context(|| {
            format!(
                "cargo mutants ended ({status}) without writing {}",
                outcomes.display()
            )
        })?;
        let counts: Counts = serde_json::from_str(&text)
            .with_context(|| format!("cannot read {}", outcomes.display()))?;
        let missed =
            std::fs::read_to_string(out.join("mutants.out").join("missed.txt")).unwrap_or_default();
        results.push((task, counts, missed));
    }
    if args.list {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "\n{:<8} {:>7} {:>7} {:>7} {:>8} {:>10} {:>7}",
        "task", "mutants", "caught", "missed", "timeout", "unviable", "score"
    );
    for (task, c, _) in &results {
        println!(
            "{:<8} {:>7} {:>7} {:>7} {:>8} {:>10} {:>6.1}%",
            task.name(),
            c.total_mutants,
            c.caught,
            c.missed,
            c.timeout,
            c.unviable,
            100.0 * c.score()
        );
    }
    let mut any_missed = false;
    for (task, _, missed) in &results {
        for line in missed.lines().filter(|l| !l.trim().is_empty()) {
            if !any_missed {
                println!(
                    "\nMissed (each must be a new check or an equivalent mutant in docs/mutants.md):"
                );
                any_missed = true;
            }
            println!("  {}: {line}", task.name());
        }
    }
    println!(
        "\nFull logs: {}",
        PathBuf::from("target/mutants/<task>/mutants.out").display()
    );
    Ok(ExitCode::SUCCESS)
}
