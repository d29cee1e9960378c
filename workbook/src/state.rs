//! What the workbook remembers between commands, in `.minigpt/`: the last check of each task,
//! the hints shown, and the exercise files `reset` replaced.

use crate::tasks::{Task, TaskList};
use crate::workspace_root;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// State kept between commands.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// How many hints of each part were shown, by `task/part`.
    pub hints_shown: BTreeMap<String, usize>,
    /// The last check of your exercises, per task.
    pub results: BTreeMap<String, TaskResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskResult {
    pub passed: usize,
    pub total: usize,
    /// False when the code did not compile (and no check ran).
    #[serde(default = "yes")]
    pub compiles: bool,
    /// The first check that failed, and the start of what it said: `hint` gives the hints of
    /// the part it is about.
    #[serde(default)]
    pub first_failure: Option<Failure>,
}

/// The first failing check of a task's last grading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub check: String,
    /// The first line of its message.
    pub headline: String,
}

fn yes() -> bool {
    true
}

impl TaskResult {
    /// Every check ran and passed.
    pub fn passes(&self) -> bool {
        self.compiles && self.total > 0 && self.passed == self.total
    }
}

impl State {
    pub fn load() -> Self {
        std::fs::read(state_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        crate::files::write_atomically(&state_path(), &json)?;
        Ok(())
    }

    /// The first task, in order, that the record does not show passing.
    pub fn first_not_passing<'a>(&self, tasks: &'a TaskList) -> Option<&'a Task> {
        tasks
            .tasks
            .iter()
            .find(|t| !self.results.get(&t.name).is_some_and(TaskResult::passes))
    }

    /// How many hints of `task` were shown, all its parts together.
    pub fn hints_of(&self, task: &str) -> usize {
        let prefix = format!("{task}/");
        self.hints_shown
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Where the workbook keeps what it remembers: `.minigpt/` at the root of the workbook
/// (git-ignored, and outside `target/`, so `cargo clean` keeps it), or the folder named by
/// `MINIGPT_STATE_DIR`. Earlier versions kept it in `target/minigpt/`: that folder is moved
/// here on first use.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MINIGPT_STATE_DIR") {
        return PathBuf::from(dir);
    }
    let root = workspace_root();
    let dir = root.join(".minigpt");
    let old = root.join("target").join("minigpt");
    if !dir.exists() && old.is_dir() {
        // If it cannot be moved, the old record is simply not carried over.
        let _ = std::fs::rename(&old, &dir);
    }
    dir
}

fn state_path() -> PathBuf {
    state_dir().join("state.json")
}
