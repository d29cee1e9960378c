//! `cargo xtask data`: fetch or install the corpus.

use std::process::ExitCode;
use workbook::cli::DataArgs;
use workbook::corpus;

pub fn run(args: DataArgs) -> anyhow::Result<ExitCode> {
    let dest = corpus::default_path();
    if let Some(src) = args.from {
        corpus::install_from(&src, &dest, corpus::CORPUS_SHA256)?;
        println!(
            "Installed a verified copy of tiny Shakespeare at {}.",
            dest.display()
        );
    } else if dest.exists() && corpus::read_verified(&dest, corpus::CORPUS_SHA256).is_ok() {
        println!(
            "tiny Shakespeare is already in {} (sha256 verified).",
            dest.display()
        );
    } else {
        let url = args.url.as_deref().unwrap_or(corpus::CORPUS_URL);
        corpus::download(url, &dest, corpus::CORPUS_SHA256)?;
        println!(
            "Downloaded tiny Shakespeare to {} (sha256 verified).",
            dest.display()
        );
    }
    let list = workbook::tasks::TaskList::here()?;
    println!("Next: cargo xtask check {}", list.tasks[0].name);
    Ok(ExitCode::SUCCESS)
}
