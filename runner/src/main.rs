//! The model commands of `cargo xtask`: `train`, `generate`, `attention`, `bench` and
//! `reference-curves`.
//!
//! They need a model, so this binary links the learner's exercises (and the reference
//! solutions). `cargo xtask` itself does not: it builds and starts this binary for these
//! commands, and turns a compile error in an exercise into a verdict, while every other
//! command keeps working. Its arguments are `cargo xtask`'s own.

mod attention;
mod bench;
mod checkpoint;
mod generate;
mod models;
mod plot;
mod reference;
mod train;

use clap::Parser;
use std::process::ExitCode;
use workbook::cli::{Cli, Command};
use workbook::style;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Attention(args) => attention::run(args),
        Command::ReferenceCurves(args) => reference::write(args),
        Command::Bench(args) => bench::run(args),
        _ => Err(anyhow::anyhow!(
            "this runner takes train, generate, attention, bench and reference-curves; run `cargo xtask` for the rest"
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{} {e:#}", style::error("error:"));
            ExitCode::FAILURE
        }
    }
}
