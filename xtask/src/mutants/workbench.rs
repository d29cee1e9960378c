//! The disposable copy of the workbook that `cargo xtask mutants` works in, and the cargo
//! commands it runs there.

use anyhow::Context;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use workbook::style;
use workbook::tasks::{GRADED_TRAINING, Task};

/// Most graded trainings take a minute or more; run once per mutant, they would make a run take
/// a day. Their models are checked without training by the other checks of the task (see
/// docs/mutants.md). A graded training of seconds (`every_mutant` in tasks.toml) stays.
fn skipped(task: &Task) -> Option<&'static str> {
    match task.graded {
        Some(g) if g.every_mutant => None,
        _ => Some(GRADED_TRAINING),
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
    /// Caught (a check failed or timed out) over viable (those that compiled); at least one
    /// mutant must have been viable.
    pub fn score(&self) -> f64 {
        let viable = self.caught + self.missed + self.timeout;
        (self.caught + self.timeout) as f64 / viable as f64
    }
}

/// What cargo-mutants found for one task.
pub(super) struct TaskOutcome {
    pub task: String,
    pub counts: Counts,
    /// cargo-mutants' `missed.txt`: one line per missed mutant.
    pub missed: String,
}

/// The disposable copy of the workbook the mutants are made in, and what its commands need.
pub(super) struct Workbench {
    /// The workbook's root: the copy builds into its target directory.
    pub root: PathBuf,
    /// `target/mutants/`: the copy is `tree/`, each task's results `<task>/`.
    work: PathBuf,
    pub tree: PathBuf,
    corpus: PathBuf,
}

impl Workbench {
    /// A fresh copy of the workbook at `root` in `target/mutants/tree/`.
    pub fn prepare(root: PathBuf) -> anyhow::Result<Self> {
        ensure_installed()?;
        let work = root.join("target").join("mutants");
        let tree = work.join("tree");
        if tree.exists() {
            std::fs::remove_dir_all(&tree)
                .with_context(|| format!("cannot clear the old copy at {}", tree.display()))?;
        }
        xtask::copy::workbook(&root, &tree, xtask::copy::Purpose::Mutants)?;
        // The copy has no corpus of its own: every check reads this workspace's (fetched now if
        // need be), so that no check fails for want of data and counts a mutant as caught.
        workbook::corpus::ensure()?;
        let (corpus, _) = workbook::corpus::configured_path()?;
        Ok(Self {
            root,
            work,
            tree,
            corpus,
        })
    }

    /// A command run in the copy, building into the workbook's target directory.
    fn cargo(&self) -> Command {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&self.tree)
            .env("CARGO_TARGET_DIR", self.root.join("target"))
            .env(workbook::corpus::CORPUS_ENV, &self.corpus);
        cmd
    }

    /// `cargo test` of one task's checks against the copy's reference solution, without the
    /// skipped graded training; more arguments for the test binary may follow.
    pub fn checks(&self, task: &Task) -> Command {
        let mut cmd = self.cargo();
        cmd.env("RUST_BACKTRACE", "0")
            .env("INSTA_UPDATE", "no")
            .args(["test", "--quiet", "--package", "checks"])
            .args(["--features", "solutions"])
            .args(["--test", task.checks_target(), "--"])
            .args(skipped(task).map_or(Vec::new(), |s| vec!["--skip", s]));
        cmd
    }

    /// cargo-mutants' own baseline would test the `solutions` package, which has no tests:
    /// this checks instead that the unmutated reference passes the task's checks.
    pub fn baseline(&self, task: &Task) -> anyhow::Result<()> {
        let status = self
            .checks(task)
            .status()
            .context("cannot run cargo test")?;
        anyhow::ensure!(
            status.success(),
            "the unmutated reference solution fails the {} checks: fix that first",
            task.name
        );
        Ok(())
    }

    /// Runs cargo-mutants on the task's reference solution (or lists its mutants), and reads
    /// what it found.
    pub fn mutate(&self, task: &Task, list: bool) -> anyhow::Result<Option<TaskOutcome>> {
        let out = self.work.join(&task.name);
        println!(
            "{} {} ({})",
            style::bold("Mutating"),
            task.name,
            task.solution
        );
        let mut cmd = self.cargo();
        cmd.args([
            "mutants",
            "--in-place",
            "--no-shuffle",
            "--baseline",
            "skip",
        ])
        // Without a baseline there is no measured test time: a mutant that makes a check
        // loop is stopped by the checks' own time limits first, and by these at worst.
        .args(["--timeout", "600", "--build-timeout", "900"])
        .args(["--package", "solutions"])
        .args(["--test-package", "checks", "--features", "solutions"])
        .arg("--file")
        .arg(&task.solution)
        .arg("--output")
        .arg(&out);
        if list {
            cmd.arg("--list");
        }
        cmd.args(["--", "--test", task.checks_target()]);
        if let Some(s) = skipped(task) {
            cmd.args(["--", "--skip", s]);
        }
        let status = cmd.status().context("cannot run cargo mutants")?;
        if list {
            return Ok(None);
        }
        // cargo-mutants exits non-zero when a mutant is missed; that is a result, not an error.
        let results = out.join("mutants.out");
        let outcomes = results.join("outcomes.json");
        let text = std::fs::read_to_string(&outcomes).with_context(|| {
            format!(
                "cargo mutants ended ({status}) without writing {}",
                outcomes.display()
            )
        })?;
        let counts: Counts = serde_json::from_str(&text)
            .with_context(|| format!("cannot read {}", outcomes.display()))?;
        anyhow::ensure!(
            counts.caught + counts.missed + counts.timeout > 0,
            "no mutant of {} was tested ({status}); see {}",
            task.name,
            results.display()
        );
        let missed = std::fs::read_to_string(results.join("missed.txt")).unwrap_or_default();
        Ok(Some(TaskOutcome {
            task: task.name.clone(),
            counts,
            missed,
        }))
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ensure_installed() -> anyhow::Result<()> {
    let version = Command::new(cargo())
        .args(["mutants", "--version"])
        .stdin(Stdio::null())
        .output();
    anyhow::ensure!(
        version.is_ok_and(|o| o.status.success()),
        "cargo-mutants is not installed. Install it with `cargo install cargo-mutants --locked`, \
         then run `cargo xtask mutants` again."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_counts_timeouts_as_caught_and_ignores_unviable_mutants() {
        let c = Counts {
            total_mutants: 10,
            caught: 6,
            missed: 1,
            timeout: 1,
            unviable: 2,
        };
        assert_eq!(c.score(), 7.0 / 8.0);
    }
}
