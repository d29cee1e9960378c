//! `train`, `generate`, `attention` and `bench`: they need a model, so they run in the
//! `runner` binary, which links the learner's code. This builds it, turning a compile error
//! into a verdict, and runs it with the same arguments.

use crate::cargo::{self, Built};
use crate::interrupt;
use std::process::ExitCode;
use xtask::style;

pub fn run() -> anyhow::Result<ExitCode> {
    let root = xtask::workspace_root();
    let executable = match cargo::build(&root, &["build", "--package", "runner"])? {
        Built::Program { executable, .. } => executable,
        Built::Failed(errors) => {
            let mut files: Vec<&str> = Vec::new();
            for e in &errors {
                if !files.contains(&e.file.as_str()) {
                    files.push(&e.file);
                }
                println!("{}\n", e.rendered);
            }
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
    interrupt::check()?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
