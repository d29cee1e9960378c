//! `cargo xtask reset <task>`: put back the exercise file as the repository has it, after
//! keeping a copy of yours; and `cargo xtask solution <task>`: your file against the reference.

use anyhow::Context as _;
use std::io::{BufRead, IsTerminal, Write};
use std::process::{Command, ExitCode};
use workbook::cli::{ResetArgs, SolutionArgs};
use workbook::state::state_dir;
use workbook::tasks::TaskList;
use workbook::workspace_root;

fn git(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new("git")
        .current_dir(workspace_root())
        .args(args)
        .output()
        .context("running git (reset and solution need git on your PATH)")
}

pub fn reset(args: ResetArgs) -> anyhow::Result<ExitCode> {
    let list = TaskList::here()?;
    let task = list.get(&args.task).map_err(anyhow::Error::msg)?;
    let (name, rel) = (&task.name, &task.exercise);
    let file = workspace_root().join(rel);
    let spec = format!("{}:{rel}", args.from);
    let out = git(&["show", &spec])?;
    anyhow::ensure!(
        out.status.success(),
        "git cannot show {spec}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let pristine = out.stdout;
    let current = std::fs::read(&file).unwrap_or_default();
    if current == pristine {
        println!("{rel} is already as {} has it; nothing to do.", args.from);
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "reset replaces your {rel}: run it in a terminal to confirm, or pass --yes"
        );
        print!(
            "Replace your {rel} with the version in {}? A copy of yours is kept. [y/N] ",
            args.from
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing changed.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let backup = state_dir()
        .join("backups")
        .join(format!("{name}-{stamp}.rs"));
    workbook::files::write_atomically(&backup, &current)?;
    workbook::files::write_atomically(&file, &pristine)?;
    println!(
        "Restored {rel} from {}. Your version is in {}.",
        args.from,
        backup.display()
    );
    println!("Next: cargo xtask check {name}");
    Ok(ExitCode::SUCCESS)
}

pub fn solution(args: SolutionArgs) -> anyhow::Result<ExitCode> {
    let list = TaskList::here()?;
    let task = list.get(&args.task).map_err(anyhow::Error::msg)?;
    let (mine, theirs) = (&task.exercise, &task.solution);
    let color = if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        "--color=always"
    } else {
        "--color=never"
    };
    let out = git(&["diff", "--no-index", color, mine, theirs])?;
    match out.status.code() {
        Some(0) => println!("{mine} is the same as the reference."),
        Some(1) => {
            std::io::stdout().write_all(&out.stdout)?;
            println!("\n(lines with - are yours, lines with + the reference's)");
        }
        _ => anyhow::bail!(
            "git diff failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
