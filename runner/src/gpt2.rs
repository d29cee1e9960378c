//! `cargo xtask gpt2`: text from a GPT-2 folder on the learner's Task 9 model and Task 8
//! tokenizer (the reference's with `--solutions`); with `--download`, OpenAI's GPT-2 fetched
//! first by the Hugging Face hub's own Rust client.

use crate::models::{self, Writing};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use workbook::cli::Gpt2Args;

/// OpenAI's smallest GPT-2, "124M", as the hub names it.
const REPO: &str = "openai-community/gpt2";
/// What a GPT-2 folder holds.
const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
];

pub fn run(args: Gpt2Args) -> anyhow::Result<ExitCode> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => download()?,
    };
    if let Some(missing) = FILES.iter().find(|f| !dir.join(f).is_file()) {
        anyhow::bail!(
            "{} has no {missing}: a GPT-2 folder holds {}",
            dir.display(),
            FILES.join(", ")
        );
    }
    let started = Instant::now();
    let (model, tokenizer) = models::gpt2_folder(args.solutions, &dir)
        .with_context(|| format!("cannot load the GPT-2 of {}", dir.display()))?;
    let loaded = started.elapsed();
    let prompt = tokenizer.encode_text(&args.prompt)?;
    anyhow::ensure!(
        !prompt.is_empty(),
        "the prompt is empty: give at least one character"
    );
    let cfg = model.config().clone();
    let how = Writing {
        temperature: args.temperature,
        top_k: Some(args.top_k as usize),
        top_p: args.top_p,
        seed: args.seed,
        use_cache: !args.no_cache,
        stop: cfg.eos_token_id,
    };
    let started = Instant::now();
    let tokens = model.write(&prompt, args.tokens as usize, how)?;
    let took = started.elapsed().as_secs_f64();
    println!("{}", tokenizer.decode_text(&tokens));
    let new_tokens = tokens.len() - prompt.len();
    let cache = if args.no_cache {
        "without the cache"
    } else {
        "with the KV cache"
    };
    let whose = if args.solutions {
        "the reference solution's Tasks 9 and 8"
    } else {
        "your Tasks 9 and 8 (exercises/src/task9.rs, task8.rs)"
    };
    let top_p = args.top_p.map_or("none".to_string(), |p| p.to_string());
    eprintln!(
        "\n{new_tokens} new tokens in {took:.2} s, {:.1} tokens/s {cache}; the model loaded in \
         {:.2} s. GPT-2 of {}: {} blocks of {} heads, width {}, {} tokens, {} parameters ({:.1} \
         MB in f32), on {whose}; temperature {}, top-k {}, top-p {top_p}, seed {}.",
        new_tokens as f64 / took.max(1e-9),
        loaded.as_secs_f64(),
        dir.display(),
        cfg.n_layer,
        cfg.n_head,
        cfg.n_embd,
        cfg.vocab_size,
        cfg.parameters(),
        cfg.parameters() as f64 * 4.0 / 1e6,
        args.temperature,
        args.top_k,
        args.seed
    );
    Ok(ExitCode::SUCCESS)
}

/// The folder of OpenAI's GPT-2 in the hub's cache, fetched first if it is not there.
fn download() -> anyhow::Result<PathBuf> {
    let offline = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "cannot fetch {REPO} from the Hugging Face hub: {e}\n\
             Without a network, get its four files ({}) by other means into one folder.\n\
             Next: cargo xtask gpt2 --dir PATH/TO/THAT/FOLDER --prompt \"…\"",
            FILES.join(", ")
        )
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .build()
        .map_err(|e| offline(&e))?;
    let repo = api.model(REPO.to_string());
    let mut dir = None;
    for file in FILES {
        let path = repo.get(file).map_err(|e| offline(&e))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    let dir = dir.context("the hub's cache gave no folder")?;
    eprintln!("{REPO} is in {}", dir.display());
    Ok(dir)
}
