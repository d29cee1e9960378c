//! `cargo xtask mutants`: how many deliberately broken reference solutions the checks catch.
//!
//! `cargo-mutants` changes the reference solution of a task one small edit at a time (a `+`
//! made `-`, a function body replaced by a default value, ...) and runs that task's checks on
//! each such mutant. A mutant the checks pass is a hole in the grader, unless it behaves exactly
//! like the original. Results and the known equivalent mutants are in docs/mutants.md.
//!
//! It runs in a disposable copy of the workbook under `target/mutants/`, so your files are never
//! edited, and builds into this workspace's target directory, so candle is not compiled again.

use anyhow::Context;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use xtask::cli::{MutantsArgs, Task};
use xtask::style;
use xtask::tasks;
use xtask::workspace_root;

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
    /// Caught (a check failed or timed out) over viable (those that compiled); at least one
    /// mutant must have been viable.
    pub fn score(&self) -> f64 {
        let viable = self.caught + self.missed + self.timeout;
        (self.caught + self.timeout) as f64 / viable as f64
    }
}

/// `cargo test` of one task's checks against the copy's reference solution, without the
/// skipped graded training; more arguments for the test binary may follow.
fn checks_in_copy(tree: &Path, root: &Path, corpus: &Path, task: Task) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(tree)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env(kit::corpus::CORPUS_ENV, corpus)
        .env("RUST_BACKTRACE", "0")
        .env("INSTA_UPDATE", "no")
        .args([
            "test",
            "--quiet",
            "--package",
            "checks",
            "--features",
            "solutions",
        ])
        .args(["--test", tasks::info(task).checks_target(), "--"])
        .args(skipped(task).map_or(Vec::new(), |s| vec!["--skip", s]));
    cmd
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
    xtask::copy::workbook(&root, &tree)?;
    // The copy has no corpus of its own: every check reads this workspace's (fetched now if
    // need be), so that no check fails for want of data and counts a mutant as caught.
    kit::corpus::load()?;
    let (corpus, _) = kit::corpus::configured_path()?;
    let tasks: Vec<Task> = match args.task {
        Task::All => Task::ORDER.to_vec(),
        t => vec![t],
    };
    let mut results = Vec::new();
    for &task in &tasks {
        let info = tasks::info(task);
        let out = work.join(task.name());
        println!(
            "{} {} ({})",
            style::bold("Mutating"),
            task.name(),
            info.solution_file()
        );
        let skip: Vec<&str> = skipped(task).map_or(Vec::new(), |s| vec!["--", "--skip", s]);
        if !args.list {
            // cargo-mutants' own baseline would test the `solutions` package, which has no
            // tests: check instead that the unmutated reference passes the task's checks.
            let baseline = checks_in_copy(&tree, &root, &corpus, task)
                .status()
                .context("cannot run cargo test")?;
            anyhow::ensure!(
                baseline.success(),
                "the unmutated reference solution fails the {} checks: fix that first",
                task.name()
            );
        }
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&tree)
            .env("CARGO_TARGET_DIR", root.join("target"))
            .env(kit::corpus::CORPUS_ENV, &corpus)
            .args([
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
            .arg(info.solution_file())
            .arg("--output")
            .arg(&out);
        if args.list {
            cmd.arg("--list");
        }
        cmd.args(["--", "--test", info.checks_target()]).args(&skip);
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
        anyhow::ensure!(
            counts.caught + counts.missed + counts.timeout > 0,
            "no mutant of {} was tested ({status}); see {}",
            task.name(),
            out.join("mutants.out").display()
        );
        let missed =
            std::fs::read_to_string(out.join("mutants.out").join("missed.txt")).unwrap_or_default();
        results.push((task, counts, missed));
    }
    let mistakes: Vec<Mistake> = load_mistakes(&root)?
        .into_iter()
        .filter(|m| tasks.iter().any(|t| t.name() == m.task))
        .collect();
    if args.list {
        println!("\nHand-written mistakes (xtask/mutants.toml):");
        for m in &mistakes {
            println!("{}: {}", m.task, m.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "\n{} the hand-written mistakes of xtask/mutants.toml",
        style::bold("Trying")
    );
    let mut uncaught = 0;
    let mut mistake_rows = Vec::new();
    for m in &mistakes {
        let caught_by = try_mistake(&tree, &root, &corpus, m)?;
        if caught_by.is_empty() {
            uncaught += 1;
            println!(
                "  {} {}: {} — no check fails",
                style::bad("✗"),
                m.task,
                m.name
            );
        } else {
            println!("  {} {}: {}", style::ok("✓"), m.task, m.name);
            println!("      caught by: {}", caught_by.join(", "));
        }
        mistake_rows.push((m, caught_by));
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
    for task in &tasks {
        let rows: Vec<_> = mistake_rows
            .iter()
            .filter(|(m, _)| m.task == task.name())
            .collect();
        let caught = rows.iter().filter(|(_, by)| !by.is_empty()).count();
        println!(
            "{:<8} hand-written mistakes: {caught} of {} caught",
            task.name(),
            rows.len()
        );
    }
    println!("\nFull logs: target/mutants/<task>/mutants.out");
    Ok(if any_missed || uncaught > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One learner-like mistake from `xtask/mutants.toml`.
#[derive(Debug, serde::Deserialize)]
struct Mistake {
    task: String,
    name: String,
    edits: Vec<(String, String)>,
}

#[derive(serde::Deserialize)]
struct MistakeFile {
    mistake: Vec<Mistake>,
}

fn load_mistakes(root: &Path) -> anyhow::Result<Vec<Mistake>> {
    let path = root.join("xtask").join("mutants.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file: MistakeFile =
        toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    Ok(file.mistake)
}

/// Applies one mistake to the copy's reference solution, runs the task's checks, puts the file
/// back, and returns the names of the checks that failed.
fn try_mistake(
    tree: &Path,
    root: &Path,
    corpus: &Path,
    m: &Mistake,
) -> anyhow::Result<Vec<String>> {
    let task = <Task as clap::ValueEnum>::from_str(&m.task, false)
        .map_err(|_| anyhow::anyhow!("xtask/mutants.toml names an unknown task `{}`", m.task))?;
    let solution = tasks::info(task).solution_file();
    let file = tree.join(&solution);
    let original = std::fs::read_to_string(&file)?;
    let mut broken = original.clone();
    for (find, replace) in &m.edits {
        anyhow::ensure!(
            broken.contains(find.as_str()),
            "mistake `{}`: {solution} has no `{find}`; update xtask/mutants.toml",
            m.name,
        );
        broken = broken.replace(find.as_str(), replace);
    }
    std::fs::write(&file, &broken)?;
    let out = checks_in_copy(tree, root, corpus, task)
        .args(["--format", "pretty", "--color", "never"])
        .stdin(Stdio::null())
        .output();
    std::fs::write(&file, &original)?;
    let out = out.context("cannot run cargo test")?;
    let verdicts = crate::verdict::parse_libtest(&String::from_utf8_lossy(&out.stdout));
    anyhow::ensure!(
        !verdicts.is_empty(),
        "mistake `{}` does not compile, so it tests nothing; fix xtask/mutants.toml:\n{}",
        m.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(verdicts
        .into_iter()
        .filter(|v| !v.passed())
        .map(|v| v.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hand_written_mistake_applies_to_its_reference_solution() {
        let root = workspace_root();
        let mistakes = load_mistakes(&root).unwrap();
        for task in Task::ORDER {
            assert!(
                mistakes.iter().filter(|m| m.task == task.name()).count() >= 4,
                "{}: at least four mistakes",
                task.name()
            );
        }
        for m in &mistakes {
            let task = <Task as clap::ValueEnum>::from_str(&m.task, false)
                .unwrap_or_else(|_| panic!("`{}` names an unknown task {}", m.name, m.task));
            let file = root.join(tasks::info(task).solution_file());
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|_| panic!("`{}` names an unknown task {}", m.name, m.task));
            assert!(!m.edits.is_empty(), "`{}` changes nothing", m.name);
            for (find, replace) in &m.edits {
                assert!(
                    text.contains(find.as_str()),
                    "`{}`: no `{find}` in {}",
                    m.name,
                    m.task
                );
                assert_ne!(find, replace, "`{}` changes nothing", m.name);
            }
        }
    }

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
