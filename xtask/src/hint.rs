//! `cargo xtask hint <task>`: the next hint, each time you ask.

use std::process::ExitCode;
use xtask::cli::HintArgs;
use xtask::style;
use xtask::tasks::{self, State};

pub fn run(args: HintArgs) -> anyhow::Result<ExitCode> {
    let task = tasks::info(args.task);
    let name = task.name.as_str();
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
            "\nThat was the last hint. The reference is {}; `cargo xtask check {name}` tells you what still fails.",
            task.solution_file()
        );
    } else {
        println!(
            "\nNext: try it with `cargo xtask check {name}`, or `cargo xtask hint {name}` again for more."
        );
    }
    Ok(ExitCode::SUCCESS)
}
