//! Running the checks of a test binary, each in a process of its own: side by side for the
//! quick ones, with a live progress line for a graded training. A check that stops making
//! progress is stopped and fails, so a loop that never ends in the learner's code is a verdict,
//! not a hang.

use crate::interrupt::{self, Interrupted};
use crate::verdict::{Outcome, Printer, Verdict, parse_libtest, readable};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use workbook::progress_line::GradedProgress;
use workbook::style;

/// How long a quick check may run, in all, before it counts as stuck.
const QUICK_LIMIT_S: u64 = 60;
/// How long a graded training may go without a line of progress (it writes one at every
/// evaluation, a few seconds apart) before it counts as stuck.
const SILENCE_LIMIT_S: u64 = 300;

/// `default_s` seconds, unless `MINIGPT_CHECK_LIMIT` gives another number of seconds (the
/// workbook's own tests shorten the wait with it).
fn limit(default_s: u64) -> Duration {
    let seconds = std::env::var("MINIGPT_CHECK_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_s);
    Duration::from_secs(seconds)
}

/// The verdict of a check stopped for running too long.
fn stuck(name: &str, what: String) -> Verdict {
    Verdict {
        name: name.to_string(),
        outcome: Outcome::Failed,
        message: Some(format!(
            "{what}, so it was stopped: look for a loop in your code that never ends (a `while` \
             whose condition never changes, an index that never moves)"
        )),
    }
}

/// Reads all of `pipe` on a thread of its own, so that the child never blocks on a full pipe.
fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// The names of the checks in a test binary.
pub fn list(executable: &Path) -> anyhow::Result<Vec<String>> {
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
pub struct Runner {
    pub executable: PathBuf,
    /// Where `cargo test` would run them: the checks package.
    pub dir: PathBuf,
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

    /// Starts check `name` with its standard error going to `stderr`; its standard output is
    /// read on a thread of its own.
    fn spawn(&self, name: &str, stderr: Stdio) -> std::io::Result<(Child, JoinHandle<String>)> {
        let mut child = self
            .command(name)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = read_all(child.stdout.take().expect("piped"));
        Ok((child, stdout))
    }

    fn run_one(&self, name: &str) -> anyhow::Result<Verdict> {
        let (mut child, stdout) = self.spawn(name, Stdio::null())?;
        let (limit, start) = (limit(QUICK_LIMIT_S), Instant::now());
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        interrupt::check()?;
        let stdout = stdout.join().unwrap_or_default();
        Ok(match status {
            Some(status) => Self::verdict(name, status, &stdout),
            None => stuck(
                name,
                format!("it did not finish within {} s", limit.as_secs()),
            ),
        })
    }

    /// Runs `names`, one per core at a time, printing each verdict, in order, as soon as it
    /// and those before it are in.
    pub fn run_side_by_side(
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
    pub fn run_with_progress(&self, name: &str) -> anyhow::Result<Verdict> {
        let (mut child, reader) = self.spawn(name, Stdio::piped())?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let live = std::io::stdout().is_terminal();
        let (limit, start) = (limit(SILENCE_LIMIT_S), Instant::now());
        let label = readable(name);
        let mut last: Option<GradedProgress> = None;
        let silent = loop {
            match lines.recv_timeout(limit) {
                Ok(line) => {
                    let Some(p) = GradedProgress::parse(&line) else {
                        continue;
                    };
                    if live {
                        print!(
                            "\r\x1b[2K  {} {label}: {}",
                            style::dim("…"),
                            describe(&p, start)
                        );
                        let _ = std::io::stdout().flush();
                    }
                    last = Some(p);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break false,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    break true;
                }
            }
        };
        let status = child.wait()?;
        let stdout = reader.join().unwrap_or_default();
        if live {
            print!("\r\x1b[2K");
        }
        if interrupt::requested() {
            return Err(Interrupted.into());
        }
        if silent {
            let since = last.map_or("its start".to_string(), |p| format!("step {}", p.step));
            let what = format!(
                "the training made no progress for {} s after {since}",
                limit.as_secs()
            );
            return Ok(stuck(name, what));
        }
        Ok(Self::verdict(name, status, &stdout))
    }
}

/// "step 1250 of at most 4000, eval loss 2.012 (bar 1.9), 21 s so far, at most 47 s more".
fn describe(p: &GradedProgress, start: Instant) -> String {
    let elapsed = start.elapsed().as_secs_f64();
    let more = elapsed / p.step.max(1) as f64 * p.steps.saturating_sub(p.step) as f64;
    format!(
        "step {} of at most {}, eval loss {:.3} (bar {}), {elapsed:.0} s so far, at most {more:.0} s more",
        p.step, p.steps, p.eval_loss, p.bar
    )
}
