//! # workbook: what the minigpt-candle command line needs, without candle
//!
//! - [`tasks`]: the task list, `tasks.toml`, the one place that names a task;
//! - [`answers`]: each part's code, its last hint, read from the reference solution;
//! - [`state`]: what the workbook remembers of you between commands;
//! - [`cli`]: the arguments of `cargo xtask` (and of the model runner, which takes the same);
//! - [`corpus`]: downloading or installing tiny Shakespeare, and reading it;
//! - [`style`]: colour on a terminal.
//!
//! The settings, the corpus reader, files written whole and progress display are the `common`
//! crate's, which `kit` builds on too; they are re-exported here. This crate compiles in
//! seconds: `cargo xtask hint` and `doctor` need nothing else, so they answer on a fresh clone
//! before candle is built. Nothing of the model code depends on it.

pub use common::{bars, config, files, progress_line};

pub mod answers;
pub mod cli;
pub mod corpus;
pub mod state;
pub mod style;
pub mod tasks;

use std::path::{Path, PathBuf};

/// The workbook being worked on: the nearest directory, from the current one upwards, that
/// holds `Cargo.toml`, `exercises/` and `checks/`; failing that, the one this crate was built in.
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
            let this = Path::new(env!("CARGO_MANIFEST_DIR"));
            this.parent().unwrap_or(this).to_path_buf()
        }
    }
}
