//! `cargo xtask hint <task>`: the next hint, each time you ask.

use crate::cli::HintArgs;
use crate::style;
use crate::tasks::{self, State};
use std::process::ExitCode;

pub fn run(args: HintArgs) -> anyhow::Result<ExitCode> {
    let name = args.task.name();
    let task = tasks::find(name)
        .ok_or_else(|| anyhow::anyhow!("no task named {name} in xtask/tasks.toml"))?;
    let mut state = State::load();
    let shown = state.hints_shown.entry(name.to_string()).or_insert(0);
    let total = task.hints.len();
    let index = (*shown).min(total - 1);
    *shown = (*shown + 1).min(total);
    let last = index + 1 == total;
    println!(
        "{} ({}), hint {} of {total}:",
        style::bold(&task.title),
        task.file,
        index + 1
    );
    println!("  {}", task.hints[index]);
    state.save()?;
    if last {
        println!(
            "\nThat was the last hint. The reference is solutions/src/{name}.rs; `cargo xtask check {name}` tells you what still fails."
        );
    } else {
        println!(
            "\nNext: try it with `cargo xtask check {name}`, or `cargo xtask hint {name}` again for more."
        );
    }
    Ok(ExitCode::SUCCESS)
}
