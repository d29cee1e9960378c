//! `cargo xtask status`: where you are, from your last checks.

use std::process::ExitCode;
use xtask::style;
use xtask::tasks::{self, State};

pub fn run() -> anyhow::Result<ExitCode> {
    let state = State::load();
    println!("{:<8} {:<44} state", "task", "title");
    for task in tasks::all() {
        let line = match state.results.get(&task.name) {
            None => "not started".to_string(),
            Some(r) if r.passes() => style::ok(&format!("✓ pass ({} checks)", r.total)),
            Some(r) if !r.compiles => style::bad("✗ does not compile"),
            Some(r) => style::bad(&format!("✗ {} of {} checks pass", r.passed, r.total)),
        };
        println!("{:<8} {:<44} {line}", task.name, task.title);
    }
    match tasks::first_not_passing(&state) {
        Some(next) => println!("\nNext: cargo xtask check {}", next.name),
        None => println!("\nEvery task passes. Next: cargo xtask train task1"),
    }
    Ok(ExitCode::SUCCESS)
}
