//! The task metadata in `xtask/tasks.toml`, and what the workbook remembers between commands
//! (hints shown, last check results, the exercise files `reset` replaced) in `.minigpt/`.

use crate::workspace_root;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One task, as `tasks.toml` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub title: String,
    /// The exercise file, relative to the workspace root.
    pub file: String,
    /// The checks that grade it, relative to the workspace root.
    pub checks: String,
    /// From a nudge to the concept to a documentation link.
    pub hints: Vec<String>,
}

#[derive(Deserialize)]
struct TaskFile {
    task: Vec<TaskInfo>,
}

/// Every task, in order.
pub fn all() -> Vec<TaskInfo> {
    let file: TaskFile = toml::from_str(include_str!("../tasks.toml"))
        .expect("xtask/tasks.toml is valid (a test checks it)");
    file.task
}

/// What `tasks.toml` says of `task` (one task, not `all`).
pub fn info(task: crate::cli::Task) -> TaskInfo {
    all()
        .into_iter()
        .find(|t| t.name == task.name())
        .expect("tasks.toml lists every task (a test checks it)")
}

impl TaskInfo {
    /// The reference solution's file, relative to the workspace root.
    pub fn solution_file(&self) -> String {
        self.file.replacen("exercises/", "solutions/", 1)
    }

    /// The name of the checks' test target (`cargo test --test NAME`).
    pub fn checks_target(&self) -> &str {
        std::path::Path::new(&self.checks)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a checks file name")
    }
}

/// State kept between commands.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// How many hints of each task were shown.
    pub hints_shown: BTreeMap<String, usize>,
    /// The last check of your exercises, per task.
    pub results: BTreeMap<String, TaskResult>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TaskResult {
    pub passed: usize,
    pub total: usize,
    /// False when the code did not compile (and no check ran).
    #[serde(default = "yes")]
    pub compiles: bool,
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

/// The first task, in order, that the record does not show passing.
pub fn first_not_passing(state: &State) -> Option<TaskInfo> {
    all()
        .into_iter()
        .find(|t| !state.results.get(&t.name).is_some_and(TaskResult::passes))
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

impl State {
    pub fn load() -> Self {
        std::fs::read(state_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        kit::files::write_atomically(&state_path(), &json)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Task;

    #[test]
    fn tasks_toml_lists_every_task_in_order_with_files_checks_and_three_hints() {
        let tasks = all();
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        let expected: Vec<&str> = Task::ORDER.iter().map(|t| t.name()).collect();
        assert_eq!(names, expected);
        let root = workspace_root();
        for t in &tasks {
            assert!(
                root.join(&t.file).is_file(),
                "{}: no file {}",
                t.name,
                t.file
            );
            assert!(
                root.join("solutions")
                    .join("src")
                    .join(format!("{}.rs", t.name))
                    .is_file()
            );
            assert!(
                root.join("checks")
                    .join("tests")
                    .join(format!("{}.rs", t.name))
                    .is_file()
            );
            assert!(t.hints.len() >= 3, "{} has {} hints", t.name, t.hints.len());
            assert!(
                t.hints.last().unwrap().contains("https://docs.rs/"),
                "{}: the last hint links the docs",
                t.name
            );
            assert!(!t.title.is_empty());
        }
    }
}
