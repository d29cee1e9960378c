//! `cargo xtask`: the workbook's command line. A thin dispatcher; each command is a module.

mod attention;
mod bench;
mod check;
mod cli;
mod data;
mod generate;
mod hint;
mod models;
mod mutants;
mod plot;
mod reset;
mod status;
mod style;
mod tasks;
mod train;
mod watch;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Check(args) => check::run(args),
        cli::Command::Data(args) => data::run(args),
        cli::Command::Train(args) => train::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Generate(args) => generate::run(args),
        cli::Command::Attention(args) => attention::run(args),
        cli::Command::Hint(args) => hint::run(args),
        cli::Command::Status => status::run(),
        cli::Command::Watch(args) => watch::run(args),
        cli::Command::Reset(args) => reset::reset(args),
        cli::Command::Solution(args) => reset::solution(args),
        cli::Command::Mutants(args) => mutants::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{} {e:#}", style::error("error:"));
            ExitCode::FAILURE
        }
    }
}
