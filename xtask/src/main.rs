//! `cargo xtask`: the workbook's command line. A thin dispatcher; each command is a module.
//!
//! This binary never links the learner's code, so `hint`, `status`, `reset`, `solution`,
//! `data`, `watch`, `doctor` and `help` work while an exercise does not compile. `check` builds the
//! checks with an inner cargo, and `train`, `generate`, `attention`, `gpt2` and `bench` run
//! in the `runner` binary (see `models`).

mod cargo;
mod check;
mod data;
mod doctor;
mod hint;
mod interrupt;
mod models;
mod mutants;
mod reset;
mod status;
mod verdict;
mod watch;

use clap::Parser;
use std::process::ExitCode;
use workbook::cli::{Cli, Command};
use workbook::style;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that wait on cargo or on checks turn Ctrl-C into a clean stop; the others (a
    // question from `reset`, say) keep the terminal's usual Ctrl-C.
    if matches!(
        cli.command,
        Command::Check(_)
            | Command::Watch(_)
            | Command::Train(_)
            | Command::Generate(_)
            | Command::Attention(_)
            | Command::Gpt2(_)
            | Command::Bench(_)
            | Command::ReferenceCurves(_)
    ) {
        interrupt::install();
    }
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Data(args) => data::run(args),
        Command::Train(_)
        | Command::Generate(_)
        | Command::Attention(_)
        | Command::Gpt2(_)
        | Command::ReferenceCurves(_) => models::run(false),
        Command::Bench(args) => models::run(args.composed()),
        Command::Hint(args) => hint::run(args),
        Command::Status => status::run(),
        Command::Watch(args) => watch::run(args),
        Command::Reset(args) => reset::reset(args),
        Command::Solution(args) => reset::solution(args),
        Command::Doctor => doctor::run(),
        Command::Mutants(args) => mutants::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.is::<interrupt::Interrupted>() => {
            println!("\nStopped (Ctrl-C); nothing was recorded. Next: run the same command again.");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("{} {e:#}", style::error("error:"));
            ExitCode::FAILURE
        }
    }
}
