//! What `cargo xtask` and the model runner share: the command line, the tasks, the learner's
//! saved progress, the workbook's root, its copies and its colours.
//!
//! This library links none of the learner's code, so the commands built on it work while an
//! exercise does not compile.

pub mod cli;
pub mod copy;
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
            let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
            xtask.parent().unwrap_or(xtask).to_path_buf()
        }
    }
}
