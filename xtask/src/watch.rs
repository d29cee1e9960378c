//! `cargo xtask watch [task]`: grade again every time you save a file under `exercises/`.
//!
//! A save is a change of content: reading a file, or a build touching it, grades nothing, and
//! a file that does not compile gives one verdict, then waits for the next save.

use crate::check;
use crate::interrupt;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer, notify::RecursiveMode};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;
use workbook::cli::{CheckArgs, WatchArgs};
use workbook::state::State;
use workbook::tasks::TaskList;

/// The first task that does not pass yet, from the last checks; the last task once all pass.
fn current_task() -> anyhow::Result<String> {
    let list = TaskList::here()?;
    let task = match State::load().first_not_passing(&list) {
        Some(t) => t,
        None => list.tasks.last().expect("the task list is not empty"),
    };
    Ok(task.name.clone())
}

/// The content of every Rust file under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "rs")
                && let Ok(bytes) = std::fs::read(&path)
            {
                files.insert(path, bytes);
            }
        }
    }
    files
}

pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let dir = workbook::workspace_root().join("exercises");
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(Duration::from_millis(300), tx)?;
    debouncer.watcher().watch(&dir, RecursiveMode::Recursive)?;
    let mut graded = snapshot(&dir);
    loop {
        let task = match &args.task {
            Some(t) => t.clone(),
            None => current_task()?,
        };
        if std::io::stdout().is_terminal() {
            // Clear the screen and go home, so each run starts on a clean page.
            print!("\x1b[2J\x1b[H");
        }
        // A failing check is the normal state while you work: keep watching.
        if let Err(e) = check::run(CheckArgs {
            task,
            solutions: false,
        }) {
            if e.is::<interrupt::Interrupted>() {
                return Err(e);
            }
            eprintln!("error: {e:#}");
        }
        println!("Watching {} for changes (Ctrl-C to stop)…", dir.display());
        // Wait for a file whose content differs from what was graded.
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(_) => {
                    let now = snapshot(&dir);
                    if now != graded {
                        graded = now;
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(ExitCode::FAILURE),
            }
            if interrupt::requested() {
                println!("Stopped watching.");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}
