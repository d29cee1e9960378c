//! `cargo xtask data`: fetch or install the corpus.

use kit::corpus;
use std::process::ExitCode;
use xtask::cli::DataArgs;

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
    println!("Next: cargo xtask check warmup");
    Ok(ExitCode::SUCCESS)
}
