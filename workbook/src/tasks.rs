//! The task list, `tasks.toml` at the root of the workbook: the one place that names a task.
//!
//! Everything else reads it: which tasks exist and in which order, where each one's exercise,
//! solution and checks are, the parts of each exercise with their hints, whether a task ends in
//! a model and what the model commands may do with it, and the graded training of the tasks
//! that have one. It is read when a command runs, not when it is compiled, so a new entry works
//! at once.

use crate::config::Graded;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The name of the task list, at the root of the workbook.
pub const FILE: &str = "tasks.toml";

/// One task, as `tasks.toml` describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// What the commands call it: `cargo xtask check NAME`.
    pub name: String,
    pub title: String,
    /// The learner's file, relative to the workbook's root.
    pub exercise: String,
    /// The reference solution's file: the same path under `solutions/`.
    pub solution: String,
    /// The test file that grades it; its test target has the file's name.
    pub checks: String,
    /// Present when the task ends in a language model.
    #[serde(default)]
    pub model: Option<Model>,
    /// Present when a check trains the task's model to a bar.
    #[serde(default)]
    pub graded: Option<GradedRun>,
    /// What the learner writes, in the order of the file.
    #[serde(rename = "part")]
    pub parts: Vec<Part>,
}

/// What the model commands may do with a task's model. `runner/src/models.rs` builds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The steps of `cargo xtask train` unless `--steps` says otherwise.
    pub steps: usize,
    /// Besides `train` and `generate`: `attention` (draw its heads) and `bench` (time its
    /// training step).
    #[serde(default)]
    pub commands: Vec<ModelCommand>,
    /// Whether its dense layers are MiniGPT's, whose products `bench products` lists and
    /// `bench train` counts.
    #[serde(default)]
    pub minigpt_products: bool,
    /// The task whose model with a KV cache runs this task's checkpoints (`generate --cache`):
    /// Task 3's checkpoints run in Task 6's model.
    #[serde(default)]
    pub cache: Option<String>,
    /// The ids of the task's byte-level BPE (Task 8's), whose tokens the model reads in place
    /// of characters: the tokenizer is trained to this many before `<|endoftext|>`.
    #[serde(default)]
    pub bpe_vocab: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelCommand {
    Attention,
    Bench,
}

/// A task's graded training: its length, how often it is evaluated and the bar; the rest of
/// the settings are the challenge's (see [`Graded`]).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradedRun {
    pub steps: usize,
    pub eval_every: usize,
    pub bar: f32,
    /// Whether `cargo xtask mutants` runs it for every mutant: only a training of seconds can.
    #[serde(default)]
    pub every_mutant: bool,
}

impl GradedRun {
    pub fn graded(&self) -> Graded {
        Graded::new(self.steps, self.eval_every, self.bar)
    }
}

/// One part of an exercise: one `todo!()` the learner replaces, with its hints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// What `cargo xtask hint TASK PART` takes.
    pub id: String,
    /// The start of the part's `todo!()` message: a check that stops on it is about this part.
    /// It opens with the name of the function the part fills in (`Type::method`, or a free
    /// function's name), which is where [`crate::answers`] finds the part's code.
    pub todo: String,
    /// The checks that grade this part first: a failure of one of them is about this part.
    #[serde(default)]
    pub checks: Vec<String>,
    /// A nudge, the concept, the candle calls and their docs. The last hint, the code, is not
    /// written here: it is read from the solution (see [`Part::code`]).
    pub hints: Vec<String>,
}

impl Part {
    /// How many hints the part has, its code included.
    pub fn hint_count(&self) -> usize {
        self.hints.len() + 1
    }

    /// The part's code, its last hint: its function's body in the solution `solution`, the
    /// text of `task.solution`.
    pub fn code(&self, solution: &str) -> Result<String, String> {
        crate::answers::part_code(solution, &self.todo)
    }
}

impl Task {
    /// The name of the checks' test target (`cargo test --test NAME`).
    pub fn checks_target(&self) -> &str {
        Path::new(&self.checks)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(&self.checks)
    }

    /// Whether the model commands may do `command` with this task's model.
    pub fn allows(&self, command: ModelCommand) -> bool {
        self.model
            .as_ref()
            .is_some_and(|m| m.commands.contains(&command))
    }

    /// The part called `id`.
    pub fn part(&self, id: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.id == id)
    }
}

/// The task list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TaskListError {
    #[error("cannot read the task list {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the task list {} is not valid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Every task, in order.
#[derive(Debug, Clone)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    task: Vec<Task>,
}

impl TaskList {
    /// The list of the workbook at `root`.
    pub fn load(root: &Path) -> Result<Self, TaskListError> {
        let path = root.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| TaskListError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let invalid = |reason: String| TaskListError::Invalid {
            path: path.clone(),
            reason,
        };
        let file: TaskFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let list = TaskList { tasks: file.task };
        list.validate().map_err(invalid)?;
        Ok(list)
    }

    /// The list of the workbook being worked on (see [`crate::workspace_root`]).
    pub fn here() -> Result<Self, TaskListError> {
        Self::load(&crate::workspace_root())
    }

    /// What must hold for the commands to work: names distinct and not `all`, every task with
    /// a part, every part with hints.
    fn validate(&self) -> Result<(), String> {
        if self.tasks.is_empty() {
            return Err("it lists no task".into());
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if t.name == ALL || self.tasks[..i].iter().any(|u| u.name == t.name) {
                return Err(format!("the task name {:?} is taken", t.name));
            }
            if t.parts.is_empty() {
                return Err(format!("{} has no [[task.part]]", t.name));
            }
            if let Some(p) = t.parts.iter().find(|p| p.hints.is_empty()) {
                return Err(format!("{}: part {} has no hints", t.name, p.id));
            }
        }
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.iter().map(|t| t.name.as_str())
    }

    /// The task called `name`; the error lists the names there are.
    pub fn get(&self, name: &str) -> Result<&Task, String> {
        self.tasks
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("no such task: pick one of {}", or_list(self.names())))
    }

    /// The tasks whose model the model commands may train and sample.
    /// The task `bench train` times unless told otherwise: the first with a bench.
    pub fn default_bench(&self) -> Option<&Task> {
        self.tasks.iter().find(|t| t.allows(ModelCommand::Bench))
    }

    pub fn with_model(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(|t| t.model.is_some())
    }
}

/// The checks whose name starts with this train a model: they run last, and only when every
/// other check of the task passes.
pub const GRADED_TRAINING: &str = "graded_training";

/// What `cargo xtask check` and `mutants` take to mean every task.
pub const ALL: &str = "all";

/// "a, b, c or d".
pub fn or_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_the_way_a_person_writes_them() {
        assert_eq!(or_list(["a"].into_iter()), "a");
        assert_eq!(or_list(["a", "b", "c"].into_iter()), "a, b or c");
    }
}
