//! `cargo xtask train` as a learner runs it, in a copy of the workbook: stopped with Ctrl-C,
//! then resumed, a run ends exactly as one that never stopped.
#![cfg(unix)]

mod book;

use book::workbook;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// A small MiniGPT and many short steps: quick to train, long enough to interrupt.
const RUN: [&str; 15] = [
    "train",
    "task1",
    "--solutions",
    "--steps",
    "2000",
    "--eval-every",
    "20",
    "--hidden",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--sample",
    "0",
];

/// The evaluation lines a run printed.
fn curve(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("step ")).collect()
}

#[test]
fn a_run_stopped_by_ctrl_c_and_resumed_ends_as_one_that_never_stopped() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let (whole_dir, stopped_dir) = (runs.path().join("whole"), runs.path().join("stopped"));
    let (whole_out, stopped_out) = (whole_dir.to_str().unwrap(), stopped_dir.to_str().unwrap());

    let whole_args = [&RUN[..], &["--out", whole_out]].concat();
    let (code, whole) = book.run(state.path(), &whole_args);
    assert_eq!(code, 0, "{whole}");

    // Ctrl-C reaches every process of the terminal's foreground group: here, the group of
    // `cargo xtask` and the runner it starts.
    let stopped_args = [&RUN[..], &["--out", stopped_out]].concat();
    let mut child = book
        .xtask(state.path(), &stopped_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        before.push_str(&line);
        before.push('\n');
        if line.starts_with("step   100:") {
            break;
        }
    }
    let group = format!("-{}", child.id());
    let kill = Command::new("kill").args(["-INT", "--", &group]).status();
    assert!(kill.unwrap().success());
    for line in lines {
        before.push_str(&line.unwrap());
        before.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{before}");
    assert!(before.contains("Stopped at step "), "{before}");
    assert!(before.contains("--resume"), "{before}");

    let resume_args = [&RUN[..], &["--resume", stopped_out]].concat();
    let (code, after) = book.run(state.path(), &resume_args);
    assert_eq!(code, 0, "{after}");
    assert!(after.contains("Resuming from step "), "{after}");

    let both = [curve(&before), curve(&after)].concat();
    assert_eq!(both, curve(&whole), "the loss curve of the resumed run");
    let weights = |dir: &std::path::Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        weights(&stopped_dir) == weights(&whole_dir),
        "the resumed run's final weights differ from the uninterrupted run's"
    );
}
