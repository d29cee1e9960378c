//! The task metadata in `xtask/tasks.toml`, and what the workbook remembers between commands
//! (hints shown, last check results) under `target/minigpt/`.

use crate::check::workspace_root;
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

/// The task called `name`.
pub fn find(name: &str) -> Option<TaskInfo> {
    all().into_iter().find(|t| t.name == name)
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
}

/// `target/minigpt/state.json`, or `state.json` in the folder named by `MINIGPT_STATE_DIR`.
fn state_path() -> PathBuf {
    let dir = std::env::var_os("MINIGPT_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("minigpt"));
    dir.join("state.json")
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
        kit::corpus::write_atomically(&state_path(), &json)?;
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
