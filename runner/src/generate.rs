//! `cargo xtask generate`: text from a trained checkpoint.

use crate::models;
use crate::train::CheckpointMeta;
use anyhow::Context as _;
use candle_core::Device;
use kit::{Sampler, SeededVarMap, Tokenizer};
use std::path::PathBuf;
use std::process::ExitCode;
use xtask::cli::{GenerateArgs, TrainTask};

/// The weights file and its `model.json`, from a checkpoint folder or the weights' path.
fn locate(path: &std::path::Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (weights, meta) = if path.is_dir() {
        (path.join("model.safetensors"), path.join("model.json"))
    } else {
        (path.to_path_buf(), path.with_extension("json"))
    };
    for p in [&weights, &meta] {
        anyhow::ensure!(
            p.is_file(),
            "no checkpoint file at {}: train one with `cargo xtask train task1`, which writes runs/task1/",
            p.display()
        );
    }
    Ok((weights, meta))
}

/// A checkpoint, loaded: its description, tokenizer, parameters and model.
pub struct Loaded {
    pub meta: CheckpointMeta,
    pub tokenizer: Tokenizer,
    pub params: SeededVarMap,
    pub model: Box<dyn models::TextModel>,
    /// The folder the checkpoint is in.
    pub dir: PathBuf,
}

/// Reads `model.json`, rebuilds the model it describes and loads the weights into it.
pub fn load(path: &std::path::Path) -> anyhow::Result<Loaded> {
    let (weights, meta_path) = locate(path)?;
    let meta: CheckpointMeta = serde_json::from_slice(&std::fs::read(&meta_path)?)
        .with_context(|| format!("{} is not a checkpoint description", meta_path.display()))?;
    let task = match meta.task.as_str() {
        "warmup" => TrainTask::Warmup,
        "task1" => TrainTask::Task1,
        "task3" => TrainTask::Task3,
        other => anyhow::bail!("{} names an unknown task {other:?}", meta_path.display()),
    };
    let tokenizer = Tokenizer::from_chars(meta.vocabulary.chars().collect());
    let params = SeededVarMap::new(0);
    let model = models::build(
        task,
        meta.solutions,
        meta.model,
        params.var_builder(&Device::Cpu),
    )?;
    let mut varmap = params.varmap().clone();
    varmap.load(&weights).with_context(|| {
        format!(
            "{} does not hold this model's weights (is it corrupt, or from another model?)",
            weights.display()
        )
    })?;
    let dir = weights
        .parent()
        .map_or_else(|| PathBuf::from("."), |p| p.to_path_buf());
    Ok(Loaded {
        meta,
        tokenizer,
        params,
        model,
        dir,
    })
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.checkpoint)?;
    let prompt = loaded
        .tokenizer
        .encode(&args.prompt)
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
            "--top-k {k} is more than the {vocab} characters of the vocabulary: give 1 to {vocab}"
        );
        sampler = sampler.with_top_k(k as usize);
    }
    let tokens = loaded
        .model
        .generate(&mut sampler, &prompt, args.tokens as usize)?;
    println!("{}", loaded.tokenizer.decode(&tokens));
    Ok(ExitCode::SUCCESS)
}
