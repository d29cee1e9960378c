//! `cargo xtask generate`: text from a trained checkpoint.

use crate::checkpoint;
use anyhow::Context as _;
use kit::Sampler;
use std::process::ExitCode;
use workbook::cli::GenerateArgs;

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let loaded = if args.cache {
        checkpoint::load_cached(&args.checkpoint)?
    } else {
        checkpoint::load(&args.checkpoint)?
    };
    let prompt = loaded
        .tokenizer
        .encode_text(&args.prompt)
        .context("the prompt cannot be encoded")?;
    anyhow::ensure!(
        !prompt.is_empty(),
        "the prompt is empty: give at least one character"
    );
    let mut sampler = Sampler::new(args.seed).with_temperature(args.temperature);
    if let Some(k) = args.top_k {
        let vocab = loaded.tokenizer.vocab_size();
        anyhow::ensure!(
            k as usize <= vocab,
            "--top-k {k} is more than the {vocab} tokens of the vocabulary: give 1 to {vocab}"
        );
        sampler = sampler.with_top_k(k as usize);
    }
    let tokens = loaded
        .model
        .write(&mut sampler, &prompt, args.tokens as usize)?;
    println!("{}", loaded.tokenizer.decode_text(&tokens));
    Ok(ExitCode::SUCCESS)
}
