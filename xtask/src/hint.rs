//! `cargo xtask hint <task> [part]`: the next hint for the part you are on, each time you ask.
//!
//! A task's parts are its `todo!()`s. Without a part, the hint is for the one your last check
//! stopped at: the `todo!()` it hit, else the part its first failing check grades. Each part's
//! hints escalate: a nudge, the concept, the candle calls and their docs, and last its code.

use std::process::ExitCode;
use workbook::cli::HintArgs;
use workbook::state::{State, TaskResult};
use workbook::style;
use workbook::tasks::{self, Part, Task, TaskList};

pub fn run(args: HintArgs) -> anyhow::Result<ExitCode> {
    let list = TaskList::here()?;
    let task = list.get(&args.task).map_err(anyhow::Error::msg)?;
    let mut state = State::load();
    let part = match &args.part {
        Some(id) => task.part(id).ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no part {id:?}: pick one of {}",
                task.name,
                tasks::or_list(task.parts.iter().map(|p| p.id.as_str()))
            )
        })?,
        None => current_part(task, state.results.get(&task.name)),
    };
    let name = &task.name;
    let shown = state
        .hints_shown
        .entry(format!("{name}/{}", part.id))
        .or_insert(0);
    let total = part.hint_count();
    let index = (*shown).min(total - 1);
    *shown = (*shown + 1).min(total);
    let hint = match part.hints.get(index) {
        Some(text) => text.trim_matches('\n').to_string(),
        None => code(task, part)?,
    };
    state.save()?;
    let which = if task.parts.len() > 1 {
        format!(", part {} ({})", part.id, part.todo)
    } else {
        String::new()
    };
    println!(
        "{} ({}){which}, hint {} of {total}:",
        style::bold(&task.title),
        task.exercise,
        index + 1
    );
    for line in hint.lines() {
        println!("  {line}");
    }
    let again = if args.part.is_some() || task.parts.len() > 1 {
        format!("cargo xtask hint {name} {}", part.id)
    } else {
        format!("cargo xtask hint {name}")
    };
    if index + 1 == total {
        println!(
            "\nThat was the last hint for this part: its code. The whole reference is {}; \
             `cargo xtask check {name}` tells you what still fails.",
            task.solution
        );
    } else {
        println!("\nNext: try it with `cargo xtask check {name}`, or `{again}` again for more.");
    }
    let others: Vec<&str> = task
        .parts
        .iter()
        .filter(|p| p.id != part.id)
        .map(|p| p.id.as_str())
        .collect();
    if !others.is_empty() {
        println!(
            "(Hints for another part: `cargo xtask hint {name} PART`, with PART one of {}.)",
            tasks::or_list(others.into_iter())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The part's code, read from the reference solution: its last hint.
fn code(task: &Task, part: &Part) -> anyhow::Result<String> {
    let path = workbook::workspace_root().join(&task.solution);
    let solution = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read the reference {}: {e}", path.display()))?;
    part.code(&solution).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; `git checkout -- {}` restores the reference",
            task.solution,
            task.solution
        )
    })
}

/// The part the last check of `task` stopped at: the part of the `todo!()` it hit, else the
/// part its first failing check grades, else the first part.
fn current_part<'a>(task: &'a Task, last: Option<&TaskResult>) -> &'a Part {
    let failure = last.and_then(|r| r.first_failure.as_ref());
    let by_todo = failure
        .and_then(|f| f.headline.strip_prefix("not yet implemented: "))
        .and_then(|what| task.parts.iter().find(|p| what.starts_with(&p.todo)));
    let by_check = || failure.and_then(|f| task.parts.iter().find(|p| p.checks.contains(&f.check)));
    by_todo.or_else(by_check).unwrap_or(&task.parts[0])
}
