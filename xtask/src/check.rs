//! `cargo xtask check`: runs a task's graded tests and prints one verdict per check.

use crate::cli::{CheckArgs, Task};
use crate::style;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The verdict of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    /// Why it failed, in a few lines; for a pass, the last line the check printed (a graded
    /// check prints the loss and the step it reached).
    pub message: Option<String>,
}

/// The workbook being worked on: the nearest directory, from the current one upwards, that
/// holds `Cargo.toml`, `exercises/` and `checks/`; failing that, the one this binary was built in.
pub fn workspace_root() -> PathBuf {
    let here = std::env::current_dir().ok();
    let found = here.as_deref().and_then(|dir| {
        dir.ancestors().find(|d| {
            d.join("Cargo.toml").is_file()
                && d.join("exercises").is_dir()
                && d.join("checks").is_dir()
        })
    });
    match found {
        Some(dir) => dir.to_path_buf(),
        None => {
            let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
            xtask.parent().unwrap_or(xtask).to_path_buf()
        }
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let tasks: Vec<Task> = if args.task == Task::All {
        Task::ORDER.to_vec()
    } else {
        vec![args.task]
    };
    let root = workspace_root();
    // Fetch the corpus here, where its progress bar and any error reach the terminal, rather
    // than inside a test.
    kit::corpus::load()?;
    let graded = if args.solutions {
        "the reference solutions"
    } else {
        "your exercises"
    };
    let mut all_passed = true;
    let mut ran_any = false;
    for task in &tasks {
        if !root
            .join("checks")
            .join("tests")
            .join(format!("{}.rs", task.name()))
            .exists()
        {
            println!("{}: its checks do not exist yet.", style::bold(task.name()));
            all_passed = false;
            continue;
        }
        ran_any = true;
        println!(
            "{} {} ({graded})",
            style::bold("Checking"),
            style::bold(task.name())
        );
        let verdicts = run_task(&root, *task, args.solutions)?;
        let passed = verdicts.iter().filter(|v| v.passed).count();
        for v in &verdicts {
            if v.passed {
                println!("  {} {}", style::ok("✓"), readable(&v.name));
                if let Some(note) = &v.message {
                    println!("      {note}");
                }
            } else {
                println!("  {} {}", style::bad("✗"), readable(&v.name));
                if let Some(msg) = &v.message {
                    for line in msg.lines() {
                        println!("      {}", line);
                    }
                }
            }
        }
        let total = verdicts.len();
        let ok = total > 0 && passed == total;
        if !args.solutions {
            let mut state = crate::tasks::State::load();
            state.results.insert(
                task.name().to_string(),
                crate::tasks::TaskResult { passed, total },
            );
            state.save()?;
        }
        all_passed &= ok;
        let line = format!("{}: {passed} of {total} checks pass", task.name());
        println!(
            "{}\n",
            if ok {
                style::ok(&line)
            } else {
                style::bad(&line)
            }
        );
        if !ok {
            if verdicts.iter().any(|v| {
                v.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("not yet implemented"))
            }) {
                println!(
                    "Next: fill in the todo!() named above, then run `cargo xtask check {}` again.\n",
                    task.name()
                );
            } else {
                println!(
                    "Next: fix what the first ✗ says, then run `cargo xtask check {name}` again \
                     (stuck? `cargo xtask hint {name}`).\n",
                    name = task.name()
                );
            }
            if tasks.len() > 1 {
                continue;
            }
        } else if tasks.len() == 1 {
            match next_task(*task) {
                Some(next) => println!(
                    "Next: {} (cargo xtask check {})",
                    style::bold(next.name()),
                    next.name()
                ),
                None => println!(
                    "Every task passes. Next: cargo xtask train task1 to watch your model learn."
                ),
            }
        }
    }
    Ok(if all_passed && ran_any {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn next_task(task: Task) -> Option<Task> {
    let i = Task::ORDER.iter().position(|t| *t == task)?;
    Task::ORDER.get(i + 1).copied()
}

/// Builds and runs one task's test binary and turns its output into verdicts.
fn run_task(root: &Path, task: Task, solutions: bool) -> anyhow::Result<Vec<Verdict>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // `cargo run` gave this process the package variables of xtask (CARGO_PKG_NAME, ...);
    // passed on, they would make cargo rebuild the checks and everything under them.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_BIN_NAME",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.current_dir(root).args([
        "test",
        "--quiet",
        "--package",
        "checks",
        "--test",
        task.name(),
    ]);
    if solutions {
        cmd.args(["--features", "solutions"]);
    }
    // cargo's --quiet would make libtest terse; ask for one line per test.
    cmd.args([
        "--",
        "--format",
        "pretty",
        "--color",
        "never",
        "--show-output",
    ])
    .env("RUST_BACKTRACE", "0")
    // A learner's output never becomes the reference snapshot.
    .env("INSTA_UPDATE", "no")
    .stdin(Stdio::null());
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts = parse_libtest(&stdout);
    // Compiler errors and warnings matter; cargo's "test failed" summary is what we print better.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("error: test failed, to rerun pass"))
        .collect();
    if !stderr.join("").trim().is_empty() {
        eprintln!("{}", stderr.join("\n"));
    }
    let mut verdicts = verdicts;
    // libtest reports in the order the checks finish; show them in the order the file has them.
    let source = std::fs::read_to_string(
        root.join("checks")
            .join("tests")
            .join(format!("{}.rs", task.name())),
    )
    .unwrap_or_default();
    verdicts.sort_by_key(|v| {
        let at = source
            .find(&format!("fn {}(", v.name))
            .unwrap_or(usize::MAX);
        (v.passed, at)
    });
    if verdicts.is_empty() {
        anyhow::bail!(
            "the {} checks did not run (cargo test exited with {}). If the compiler printed errors \
             above, fix those first: every exercise file must compile.",
            task.name(),
            out.status
        );
    }
    Ok(verdicts)
}

/// Reads libtest's plain output: the `test NAME ... ok|FAILED` lines and each failure's
/// captured output.
pub fn parse_libtest(stdout: &str) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("test ")?;
            let (name, result) = rest.rsplit_once(" ... ")?;
            let passed = match result.trim() {
                "ok" => true,
                r if r.starts_with("FAILED") => false,
                _ => return None,
            };
            Some(Verdict {
                name: name.to_string(),
                passed,
                message: None,
            })
        })
        .collect();
    // Output sections: "---- NAME stdout ----" up to the next section or the list that ends
    // them ("failures:" or "successes:").
    let mut current: Option<(String, Vec<&str>)> = None;
    let mut sections = Vec::new();
    for line in stdout.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            sections.extend(current.take());
            current = Some((name.to_string(), Vec::new()));
        } else if line == "failures:" || line == "successes:" {
            sections.extend(current.take());
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    sections.extend(current);
    for (name, lines) in sections {
        if let Some(v) = verdicts.iter_mut().find(|v| v.name == name) {
            v.message = if v.passed {
                lines
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_string())
            } else {
                Some(failure_message(&lines))
            };
        }
    }
    verdicts.sort_by_key(|v| v.passed);
    verdicts
}

/// The panic message of a failed check, with a `todo!()` shown as
/// "not yet implemented: WHAT (FILE:LINE)". A property test panics once per case it tries;
/// its verdict is the last panic, with the first one's place.
fn failure_message(lines: &[&str]) -> String {
    let panics: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("thread '") && l.contains(" panicked at "))
        .map(|(i, _)| i)
        .collect();
    let (Some(&first), Some(&last)) = (panics.first(), panics.last()) else {
        let text = lines.iter().map(|l| l.trim_end()).collect::<Vec<_>>();
        return text.join("\n").trim().to_string();
    };
    let body: Vec<&str> = lines[last + 1..]
        .iter()
        .take_while(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .copied()
        .collect();
    let mut body = body.join("\n").trim().to_string();
    if let Some(rest) = body.strip_prefix("Test failed: ") {
        // proptest: "Test failed: MESSAGE; minimal failing input: INPUT\n\tsuccesses: ..."
        body = match rest.split_once("; minimal failing input: ") {
            Some((msg, input)) => {
                let input = input.lines().next().unwrap_or("");
                format!("{msg}\nsmallest failing input: {input}")
            }
            None => rest.to_string(),
        };
    }
    let output: Vec<&str> = lines[..first]
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut message = if body.starts_with("not yet implemented") {
        let what = body.lines().next().unwrap_or("");
        format!("{what} ({})", panic_place(lines[first]))
    } else {
        format!("{body}\n(at {})", panic_place(lines[last]))
    };
    if !output.is_empty() {
        message = format!("{}\n{message}", output.join("\n"));
    }
    message
}

/// "thread 'NAME' (ID) panicked at FILE:LINE:COL:" → "FILE:LINE".
fn panic_place(line: &str) -> String {
    let location = line
        .split_once(" panicked at ")
        .map(|(_, loc)| loc.trim_end_matches(':'))
        .unwrap_or("");
    match location.rsplitn(3, ':').collect::<Vec<_>>().as_slice() {
        [_col, line, file] => format!("{file}:{line}"),
        _ => location.to_string(),
    }
}

/// `graded_training_reaches_eval_loss_below_2_6` → "graded training reaches eval loss below 2.6".
pub fn readable(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if c != '_' {
                c
            } else if i > 0
                && chars[i - 1].is_ascii_digit()
                && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())
            {
                '.'
            } else {
                ' '
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\nrunning 3 tests\ntest a_passes ... ok\ntest stub_is_hit ... FAILED\ntest wrong_shape ... FAILED\n\nfailures:\n\n---- stub_is_hit stdout ----\n\nthread 'stub_is_hit' (1234) panicked at exercises/src/warmup.rs:52:9:\nnot yet implemented: SimpleDecoder::forward: look up rows\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n---- wrong_shape stdout ----\nstep 1\n\nthread 'wrong_shape' panicked at checks/src/support.rs:30:5:\nassertion `left == right` failed: forward returned shape [2]\n  left: [2]\n right: [2, 3]\n\n\nfailures:\n    stub_is_hit\n    wrong_shape\n\ntest result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n";

    #[test]
    fn todo_panics_read_as_not_yet_implemented_with_their_place() {
        let v = parse_libtest(OUTPUT);
        assert_eq!(v.len(), 3);
        let stub = v.iter().find(|v| v.name == "stub_is_hit").unwrap();
        assert_eq!(
            stub.message.as_deref(),
            Some(
                "not yet implemented: SimpleDecoder::forward: look up rows (exercises/src/warmup.rs:52)"
            )
        );
        let shape = v.iter().find(|v| v.name == "wrong_shape").unwrap();
        let msg = shape.message.as_deref().unwrap();
        assert!(
            msg.starts_with("step 1\nassertion `left == right` failed: forward returned shape [2]"),
            "{msg}"
        );
        assert!(msg.ends_with("(at checks/src/support.rs:30)"), "{msg}");
        assert!(v.iter().find(|v| v.name == "a_passes").unwrap().passed);
    }

    #[test]
    fn a_property_test_reads_as_its_last_panic_with_the_smallest_input() {
        let out = "test prop ... FAILED\ntest graded ... ok\n\nsuccesses:\n\n---- graded stdout ----\nstep 250: loss 2.0\ntask1: eval loss 1.891 at step 1750\n\n\nfailures:\n\n---- prop stdout ----\nthread 'prop' (1) panicked at exercises/src/task2.rs:53:9:\nnot yet implemented: forward\nthread 'prop' (1) panicked at exercises/src/task2.rs:53:9:\nnot yet implemented: forward\nthread 'prop' (1) panicked at checks/tests/task2.rs:170:1:\nTest failed: not yet implemented: forward; minimal failing input: (b, t) = (1, 1)\n\tsuccesses: 0\n\nfailures:\n    prop\n";
        let v = parse_libtest(out);
        let prop = v.iter().find(|v| v.name == "prop").unwrap();
        assert_eq!(
            prop.message.as_deref(),
            Some("not yet implemented: forward (exercises/src/task2.rs:53)")
        );
        let graded = v.iter().find(|v| v.name == "graded").unwrap();
        assert_eq!(
            graded.message.as_deref(),
            Some("task1: eval loss 1.891 at step 1750")
        );
    }

    #[test]
    fn names_read_as_sentences() {
        assert_eq!(
            readable("graded_training_reaches_eval_loss_below_2_6"),
            "graded training reaches eval loss below 2.6"
        );
    }
}
