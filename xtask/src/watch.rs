//! `cargo xtask watch [task]`: grade again every time you save a file under `exercises/`.

use crate::check::{self, workspace_root};
use crate::cli::{CheckArgs, Task, WatchArgs};
use crate::tasks::State;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer, notify::RecursiveMode};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

/// The first task that does not pass yet, from the last checks.
fn current_task() -> Task {
    let state = State::load();
    Task::ORDER
        .into_iter()
        .find(|t| {
            !state
                .results
                .get(t.name())
                .is_some_and(|r| r.total > 0 && r.passed == r.total)
        })
        .unwrap_or(Task::Task3)
}

pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let dir = workspace_root().join("exercises");
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(Duration::from_millis(300), tx)?;
    debouncer.watcher().watch(&dir, RecursiveMode::Recursive)?;
    loop {
        let task = args.task.unwrap_or_else(current_task);
        if std::io::stdout().is_terminal() {
            // Clear the screen and go home, so each run starts on a clean page.
            print!("\x1b[2J\x1b[H");
        }
        // A failing check is the normal state while you work: keep watching.
        if let Err(e) = check::run(CheckArgs {
            task,
            solutions: false,
        }) {
            eprintln!("error: {e:#}");
        }
        println!("Watching {} for changes (Ctrl-C to stop)…", dir.display());
        // Wait for a save of a Rust file, then drain whatever else arrived meanwhile.
        loop {
            match rx.recv() {
                Ok(Ok(events))
                    if events
                        .iter()
                        .any(|e| e.path.extension().is_some_and(|x| x == "rs")) =>
                {
                    break;
                }
                Ok(_) => continue,
                Err(_) => return Ok(ExitCode::FAILURE),
            }
        }
        while rx.try_recv().is_ok() {}
    }
}
