//! A copy of the workbook for the tests that play a learner, so that the real `exercises/`
//! are never touched. It builds into this workspace's target directory, so candle is not
//! compiled again, and after the first run only the exercises and what links them are. The
//! tests of a file share one copy and take turns; each test file uses part of what is here
//! (the command-line tests only [`says`], the check of a command's answer).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;
pub use xtask::copy::Purpose;

/// How long a test waits for what it expects before it calls the run hung. Every wait is for an
/// event (a line on the screen, a read of a file), never for time to pass, so this only has
/// to lie far beyond the slowest machine: reaching it means the event never came.
pub const HUNG: Duration = Duration::from_secs(30 * 60);

/// What a copy needs to build and grade; the corpus is shared through `MINIGPT_CORPUS`.
pub struct Workbook {
    pub dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=learner",
            "-c",
            "user.email=learner@example.com",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(status.status.success(), "git {args:?}: {status:?}");
}

/// The one copy for a learner, made on first use; each test holds the lock while it uses it.
pub fn workbook() -> MutexGuard<'static, Workbook> {
    static BOOK: OnceLock<Mutex<Workbook>> = OnceLock::new();
    BOOK.get_or_init(|| Mutex::new(Workbook::new(Purpose::Learner)))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Workbook {
    /// A copy of the workbook for `purpose`, in a git repository of its own, as a clone is:
    /// `reset` takes the stub from git.
    pub fn new(purpose: Purpose) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A version of its own: the copy cannot overwrite the workbook's build outputs.
        xtask::copy::workbook(root, dir.path(), purpose).unwrap();
        git(dir.path(), &["init", "--quiet"]);
        let book = Workbook { dir };
        book.commit("workbook");
        book
    }
}

/// `command` run to its end: the exit code, and its output and errors.
pub fn output(command: &mut Command) -> (i32, String) {
    let out = command.output().expect("run xtask");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Asserts that a command's answer, its exit code and output, has exit code `code` and says each
/// of `phrases`; returns the output.
#[track_caller]
pub fn says((got, out): (i32, String), code: i32, phrases: &[&str]) -> String {
    assert_eq!(got, code, "exit code {got}, not {code}:\n{out}");
    for phrase in phrases {
        assert!(out.contains(phrase), "{phrase:?} is not said:\n{out}");
    }
    out
}

impl Workbook {
    /// `cargo xtask ARGS` as typed at the root of the copy, remembering results in `state`.
    pub fn xtask(&self, state: &Path, args: &[&str]) -> Command {
        let target: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let (corpus, _) = workbook::corpus::configured_path().expect("the corpus");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("CARGO_TARGET_DIR", target)
            .env("MINIGPT_CORPUS", corpus)
            .env("MINIGPT_STATE_DIR", state)
            .env("NO_COLOR", "1");
        cmd
    }

    /// `cargo xtask ARGS`, run to its end: the exit code, and its output and errors.
    pub fn run(&self, state: &Path, args: &[&str]) -> (i32, String) {
        output(&mut self.xtask(state, args))
    }

    /// Commits every change of the copy, as a new version of the workbook would.
    pub fn commit(&self, message: &str) {
        git(self.dir.path(), &["add", "--all"]);
        git(
            self.dir.path(),
            &["commit", "--quiet", "--message", message],
        );
    }

    /// `cargo xtask check TASK` with `source` as the learner's file, which is the stub again
    /// after.
    pub fn check_with(&self, state: &Path, task: &str, source: &str) -> (i32, String) {
        self.write_exercise(task, source);
        let graded = self.run(state, &["check", task]);
        self.write_exercise(task, &self.stub(task));
        graded
    }

    pub fn exercise(&self, task: &str) -> PathBuf {
        self.dir
            .path()
            .join("exercises")
            .join("src")
            .join(format!("{task}.rs"))
    }

    pub fn write_exercise(&self, task: &str, text: &str) {
        std::fs::write(self.exercise(task), text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap()
    }

    pub fn solution(&self, task: &str) -> String {
        self.read(&format!("solutions/src/{task}.rs"))
    }

    pub fn stub(&self, task: &str) -> String {
        let out = Command::new("git")
            .current_dir(self.dir.path())
            .args(["show", &format!("HEAD:exercises/src/{task}.rs")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }
}
