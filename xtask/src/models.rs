//! `train`, `generate`, `attention`, `gpt2` and `bench`: they need a model, so they run in the
//! `runner` binary, which links the learner's code. This builds it, turning a compile error
//! into a verdict, and runs it with the same arguments.

use crate::cargo::{self, Built};
use crate::interrupt;
use std::process::ExitCode;
use workbook::style;

/// Builds the runner, with kit's composed ops in place of the fused ones if `composed`, and
/// runs it.
pub fn run(composed: bool) -> anyhow::Result<ExitCode> {
    let root = workbook::workspace_root();
    let mut build = vec!["build", "--package", "runner"];
    if composed {
        build.extend(["--features", "kit/composed"]);
    }
    let executable = match cargo::build(&root, &build)? {
        Built::Program { executable, .. } => executable,
        Built::Failed(errors) => {
            for e in &errors {
                println!("{}\n", e.rendered);
            }
            let files = cargo::files_with_errors(&errors);
            let files = if files.is_empty() {
                "the workbook (cargo's message is above)".to_string()
            } else {
                files.join(" and ")
            };
            println!("{} {files} does not compile.", style::bad("✗"));
            println!(
                "Next: fix the errors above (`cargo xtask check <task>` grades the file), then run this command again."
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let status = std::process::Command::new(executable)
        .args(std::env::args_os().skip(1))
        .status()?;
    // A runner stopped by Ctrl-C without a word of its own: say so here. (`train` saves its
    // run and says how to go on, then exits with 130.)
    if status.code().is_none() {
        interrupt::check()?;
    }
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
