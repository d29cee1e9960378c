//! `cargo xtask check`: builds a task's checks, runs them and prints each verdict as it comes.
//!
//! The order of a grading: build (a compile error is the verdict), the quick checks side by
//! side, then, only if they all pass, the graded training with a live progress line. The first
//! failure is shown in full, later ones in a line each, and the closing "Next:" line reads the
//! recorded results of every task.

use crate::cargo::{self, Built, Diagnostic};
use crate::interrupt::{self, Interrupted};
use crate::verdict::{Outcome, Verdict, parse_libtest, readable};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Instant;
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
    kit::corpus::load()?;
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
        last = Some((task, grade));
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
    let mut build = vec![
        "test",
        "--no-run",
        "--package",
        "checks",
        "--test",
        task.name(),
    ];
    if solutions {
        build.extend(["--features", "solutions"]);
    }
    let graded_file = format!(
        "{}/src/{}.rs",
        if solutions { "solutions" } else { "exercises" },
        task.name()
    );
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
    let mut names = list(&executable)?;
    anyhow::ensure!(
        !names.is_empty(),
        "the {} checks list no test: is checks/tests/{}.rs complete?",
        task.name(),
        task.name()
    );
    // In the order the file has them.
    let source = std::fs::read_to_string(
        root.join("checks/tests")
            .join(format!("{}.rs", task.name())),
    )
    .unwrap_or_default();
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
    let mut files: Vec<String> = Vec::new();
    for e in errors {
        if !files.contains(&e.file) {
            files.push(e.file.clone());
        }
    }
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
            "  {} the checks could not be built: cargo's message is above",
            style::bad("✗")
        );
        files.push("the workbook".into());
    }
    files
}

/// The names of the checks in a test binary.
fn list(executable: &Path) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new(executable)
        .args(["--list", "--format", "terse"])
        .stdin(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

/// Runs the checks of one test binary, each in a process of its own.
struct Runner {
    executable: PathBuf,
    /// Where `cargo test` would run them: the checks package.
    dir: PathBuf,
}

impl Runner {
    fn command(&self, name: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.executable);
        cmd.args([name, "--exact", "--test-threads", "1"])
            .args(["--format", "pretty", "--color", "never", "--show-output"])
            .current_dir(&self.dir)
            .env("CARGO_MANIFEST_DIR", &self.dir)
            .env("RUST_BACKTRACE", "0")
            // A learner's output never becomes the reference snapshot.
            .env("INSTA_UPDATE", "no")
            .stdin(Stdio::null());
        // `cargo test` sets these from .cargo/config.toml; so must a check run without it.
        for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                cmd.env(var, "1");
            }
        }
        cmd
    }

    /// The verdict of a check run to its end.
    fn verdict(name: &str, status: std::process::ExitStatus, stdout: &str) -> Verdict {
        parse_libtest(stdout)
            .into_iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| Verdict {
                name: name.to_string(),
                outcome: Outcome::Failed,
                message: Some(format!(
                    "the check ended without a verdict ({status}): it crashed, perhaps from a \
                     stack overflow or an abort in your code"
                )),
            })
    }

    fn run_one(&self, name: &str) -> anyhow::Result<Verdict> {
        let out = self.command(name).stderr(Stdio::null()).output()?;
        interrupt::check()?;
        Ok(Self::verdict(
            name,
            out.status,
            &String::from_utf8_lossy(&out.stdout),
        ))
    }

    /// Runs `names`, one per core at a time, printing each verdict, in order, as soon as it
    /// and those before it are in.
    fn run_side_by_side(
        &self,
        names: &[String],
        printer: &mut Printer,
    ) -> anyhow::Result<Vec<Verdict>> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let queue = Mutex::new(names.iter().enumerate());
        let (tx, rx) = mpsc::channel();
        let mut done: Vec<Option<Verdict>> = vec![None; names.len()];
        let mut shown = 0;
        std::thread::scope(|s| -> anyhow::Result<()> {
            for _ in 0..workers.min(names.len()) {
                let (queue, tx) = (&queue, tx.clone());
                s.spawn(move || {
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some((i, name)) = next else { break };
                        if tx.send((i, self.run_one(name))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for (i, verdict) in rx {
                done[i] = Some(verdict?);
                while let Some(Some(v)) = done.get(shown) {
                    printer.print(v);
                    shown += 1;
                }
            }
            Ok(())
        })?;
        Ok(done.into_iter().flatten().collect())
    }

    /// Runs a graded training, showing on a terminal a line that follows its evaluations.
    fn run_with_progress(&self, name: &str) -> anyhow::Result<Verdict> {
        let mut child = self
            .command(name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        let live = std::io::stdout().is_terminal();
        let start = Instant::now();
        let label = readable(name);
        for line in BufReader::new(child.stderr.take().expect("piped"))
            .lines()
            .map_while(Result::ok)
        {
            if live && let Some(p) = Progress::parse(&line) {
                print!(
                    "\r\x1b[2K  {} {label}: {}",
                    style::dim("…"),
                    p.describe(start)
                );
                let _ = std::io::stdout().flush();
            }
        }
        let status = child.wait()?;
        let stdout = reader.join().unwrap_or_default();
        if live {
            print!("\r\x1b[2K");
        }
        if interrupt::requested() {
            return Err(Interrupted.into());
        }
        Ok(Self::verdict(name, status, &stdout))
    }
}

/// One line of a graded training's progress, as `checks::support` writes it to standard error:
/// "graded training: step 250 of at most 4000, eval loss 2.370 (bar 1.9)".
#[derive(Debug, PartialEq)]
struct Progress {
    step: usize,
    steps: usize,
    eval_loss: f32,
    bar: f32,
}

impl Progress {
    fn parse(line: &str) -> Option<Progress> {
        let rest = line.strip_prefix("graded training: step ")?;
        let (step, rest) = rest.split_once(" of at most ")?;
        let (steps, rest) = rest.split_once(", eval loss ")?;
        let (loss, rest) = rest.split_once(" (bar ")?;
        Some(Progress {
            step: step.parse().ok()?,
            steps: steps.parse().ok()?,
            eval_loss: loss.parse().ok()?,
            bar: rest.strip_suffix(')')?.parse().ok()?,
        })
    }

    /// "step 1250 of at most 4000, eval loss 2.012 (bar 1.9), 21 s so far, at most 47 s more".
    fn describe(&self, start: Instant) -> String {
        let elapsed = start.elapsed().as_secs_f64();
        let more = elapsed / self.step.max(1) as f64 * self.steps.saturating_sub(self.step) as f64;
        format!(
            "step {} of at most {}, eval loss {:.3} (bar {}), {elapsed:.0} s so far, at most {more:.0} s more",
            self.step, self.steps, self.eval_loss, self.bar
        )
    }
}

/// Prints verdicts: the first failure in full, each later one as its first line.
#[derive(Default)]
struct Printer {
    failed_before: bool,
}

impl Printer {
    fn print(&mut self, v: &Verdict) {
        let name = readable(&v.name);
        match v.outcome {
            Outcome::Passed => {
                println!("  {} {name}", style::ok("✓"));
                if let Some(note) = &v.message {
                    println!("      {note}");
                }
            }
            Outcome::Skipped => {
                println!("  {} {name}", style::dim("–"));
                if let Some(note) = &v.message {
                    println!("      {}", style::dim(note));
                }
            }
            Outcome::Failed if self.failed_before => {
                println!("  {} {name}", style::bad("✗"));
                if let Some(line) = v.headline() {
                    println!("      {line}");
                }
            }
            Outcome::Failed => {
                self.failed_before = true;
                println!("  {} {name}", style::bad("✗"));
                for line in v.message.as_deref().unwrap_or("").lines() {
                    println!("      {line}");
                }
            }
        }
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_read_and_others_ignored() {
        assert_eq!(
            Progress::parse("graded training: step 250 of at most 4000, eval loss 2.370 (bar 1.9)"),
            Some(Progress {
                step: 250,
                steps: 4000,
                eval_loss: 2.37,
                bar: 1.9
            })
        );
        assert_eq!(Progress::parse("step 250: train loss 2.4"), None);
    }
}
