//! `cargo xtask status`: where you are, from your last checks.

use crate::check::every_task_passes;
use std::process::ExitCode;
use workbook::state::State;
use workbook::style;
use workbook::tasks::TaskList;

pub fn run() -> anyhow::Result<ExitCode> {
    let list = TaskList::here()?;
    let state = State::load();
    // As wide as the longest title: `{:<w$}` pads by characters, as the screen counts them.
    let w = list
        .tasks
        .iter()
        .map(|t| t.title.chars().count())
        .max()
        .unwrap_or(0);
    println!("{:<8} {:<w$} {:<24} hints seen", "task", "title", "state");
    for task in &list.tasks {
        let line = match state.results.get(&task.name) {
            None => "not started".to_string(),
            Some(r) if r.passes() => format!("✓ pass ({} checks)", r.total),
            Some(r) if !r.compiles => "✗ does not compile".to_string(),
            Some(r) => format!("✗ {} of {} checks pass", r.passed, r.total),
        };
        // Padded before it is coloured: the colour codes take no room on the screen.
        let line = format!("{line:<24}");
        let line = match state.results.get(&task.name) {
            Some(r) if r.passes() => style::ok(&line),
            Some(_) => style::bad(&line),
            None => line,
        };
        let hints = task.parts.iter().map(|p| p.hint_count()).sum::<usize>();
        let seen = state.hints_of(&task.name);
        println!(
            "{:<8} {:<w$} {line} {seen} of {hints}",
            task.name, task.title
        );
    }
    match state.first_not_passing(&list) {
        Some(next) => println!("\nNext: cargo xtask check {}", next.name),
        None => println!("\n{}", every_task_passes(&list)),
    }
    Ok(ExitCode::SUCCESS)
}
