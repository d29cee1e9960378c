//! # workbook: what the minigpt-candle command line needs, without candle
//!
//! - [`tasks`]: the task list, `tasks.toml`, the one place that names a task;
//! - [`state`]: what the workbook remembers of you between commands;
//! - [`cli`]: the arguments of `cargo xtask` (and of the model runner, which takes the same);
//! - [`config`]: the settings of a model and of a training run, checked in one place;
//! - [`corpus`]: finding, downloading and verifying tiny Shakespeare;
//! - [`files`]: files written whole or not at all;
//! - [`bars`], [`progress_line`] and [`style`]: progress bars, the graded training's progress
//!   line, and colour on a terminal.
//!
//! It compiles in seconds: `cargo xtask hint` and `doctor` need nothing else, so they answer on
//! a fresh clone before candle is built. `kit` builds on it.

pub mod bars;
pub mod cli;
pub mod config;
pub mod corpus;
pub mod files;
pub mod progress_line;
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
