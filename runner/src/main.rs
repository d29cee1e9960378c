//! The model commands of `cargo xtask`: `train`, `generate`, `attention`, `gpt2`, `bench` and
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
mod gpt2;
mod models;
mod plot;
mod reference;
mod train;

use clap::Parser;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use workbook::cli::{BenchWhat, Cli, Command};
use workbook::style;

fn main() -> ExitCode {
    let cli = Cli::parse();
    std::panic::set_hook(Box::new(panicked));
    let result = match cli.command {
        Command::Train(args) => with_corpus().and_then(|()| train::run(args)),
        Command::Generate(args) => generate::run(args),
        Command::Attention(args) => attention::run(args),
        Command::Gpt2(args) => gpt2::run(args),
        Command::ReferenceCurves(args) => with_corpus().and_then(|()| reference::write(args)),
        // GPT-2's bench draws its weights and reads no corpus.
        Command::Bench(args) if matches!(args.what, BenchWhat::Gpt2(_)) => bench::run(args),
        Command::Bench(args) => with_corpus().and_then(|()| bench::run(args)),
        _ => Err(anyhow::anyhow!(
            "this runner takes train, generate, attention, gpt2, bench and reference-curves; run `cargo xtask` for the rest"
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

/// Downloads the corpus if it is nowhere to be found, before a command that reads it: kit only
/// reads it.
fn with_corpus() -> anyhow::Result<()> {
    workbook::corpus::ensure()?;
    Ok(())
}

/// A panic in the learner's code (a `todo!()` not yet filled in, an index out of range) said
/// in the workbook's words: what stopped, where, and which command grades that file. Said
/// once: work split over kit's threads (the parts of a batch, the blocks of rows of Task 5's
/// LayerNorm) may stop at the same `todo!()` on several threads at once.
fn panicked(info: &std::panic::PanicHookInfo) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if SAID.swap(true, Ordering::Relaxed) {
        return;
    }
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    let place = info
        .location()
        .map(|l| format!(" ({}:{})", l.file(), l.line()))
        .unwrap_or_default();
    eprintln!("{} {message}{place}", style::error("error:"));
    // The task whose file stopped: exercises/src/<task>.rs.
    let task = info
        .location()
        .map(|l| std::path::Path::new(l.file()))
        .filter(|f| f.starts_with("exercises"))
        .and_then(|f| f.file_stem())
        .and_then(|s| s.to_str());
    match task {
        Some(task) => eprintln!(
            "Next: this command runs your code, which stopped there; `cargo xtask check {task}` \
             grades it part by part."
        ),
        None => eprintln!(
            "Next: run the command again; if it stops the same way, `cargo xtask doctor`."
        ),
    }
}
