//! `cargo xtask status`: where you are, from your last checks.

use crate::style;
use crate::tasks::{self, State};
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    let state = State::load();
    println!("{:<8} {:<44} state", "task", "title");
    let mut next = None;
    for task in tasks::all() {
        let line = match state.results.get(&task.name) {
            None => "not started".to_string(),
            Some(r) if r.total > 0 && r.passed == r.total => {
                style::ok(&format!("✓ pass ({} checks)", r.total))
            }
            Some(r) => style::bad(&format!("✗ {} of {} checks pass", r.passed, r.total)),
        };
        let done = state
            .results
            .get(&task.name)
            .is_some_and(|r| r.total > 0 && r.passed == r.total);
        if !done && next.is_none() {
            next = Some(task.name.clone());
        }
        println!("{:<8} {:<44} {line}", task.name, task.title);
    }
    match next {
        Some(name) => println!("\nNext: cargo xtask check {name}"),
        None => println!("\nEvery task passes. Next: cargo xtask train task1"),
    }
    Ok(ExitCode::SUCCESS)
}
