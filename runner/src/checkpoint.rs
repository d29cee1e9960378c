//! A trained model on disk: `model.safetensors` (the weights) and `model.json` (what model they
//! belong to), both in one folder. `train` writes them; `generate` and `attention` read them.

use crate::models::{self, TextModel};
use anyhow::Context as _;
use candle_core::Device;
use kit::train::TrainConfig;
use kit::{GptConfig, SeededVarMap, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use xtask::cli::TrainTask;

const WEIGHTS: &str = "model.safetensors";
const META: &str = "model.json";

/// What is saved beside the weights: enough to rebuild the model and its tokenizer.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The task's name (`warmup`, `task1`, `task3`).
    pub task: String,
    /// Whether the reference solution (rather than your exercise) was trained.
    #[serde(default)]
    pub solutions: bool,
    pub model: GptConfig,
    /// The vocabulary, in token-id order.
    pub vocabulary: String,
    pub train: TrainConfig,
    pub steps_run: usize,
    pub best_eval_loss: Option<f32>,
}

/// Writes the weights of `params` and `meta` into `dir`, each atomically: an interrupted save
/// leaves the previous checkpoint whole. Returns the weights' path.
pub fn save(params: &SeededVarMap, meta: &CheckpointMeta, dir: &Path) -> anyhow::Result<PathBuf> {
    let weights = dir.join(WEIGHTS);
    kit::files::write_atomically_with(&weights, |tmp| {
        params
            .varmap()
            .save(tmp)
            .map_err(|e| std::io::Error::other(format!("writing the weights: {e}")))
    })?;
    kit::files::write_atomically(&dir.join(META), &serde_json::to_vec_pretty(meta)?)?;
    Ok(weights)
}

/// A checkpoint, loaded: its description, tokenizer, parameters and model.
pub struct Loaded {
    pub task: TrainTask,
    pub meta: CheckpointMeta,
    pub tokenizer: Tokenizer,
    pub params: SeededVarMap,
    pub model: Box<dyn TextModel>,
    /// The folder the checkpoint is in.
    pub dir: PathBuf,
}

/// Reads a checkpoint from its folder (or its weights' path), rebuilds the model it describes
/// and loads the weights into it.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let (weights, meta_path) = if path.is_dir() {
        (path.join(WEIGHTS), path.join(META))
    } else {
        (path.to_path_buf(), path.with_extension("json"))
    };
    for p in [&weights, &meta_path] {
        anyhow::ensure!(
            p.is_file(),
            "no checkpoint file at {}: train one with `cargo xtask train task1`, which writes runs/task1/",
            p.display()
        );
    }
    let meta: CheckpointMeta = serde_json::from_slice(&std::fs::read(&meta_path)?)
        .with_context(|| format!("{} is not a checkpoint description", meta_path.display()))?;
    let task = TrainTask::from_name(&meta.task).with_context(|| {
        format!(
            "{} names an unknown task {:?}",
            meta_path.display(),
            meta.task
        )
    })?;
    let tokenizer = Tokenizer::from_chars(meta.vocabulary.chars().collect());
    let params = SeededVarMap::new(0);
    let vb = params.var_builder(&Device::Cpu);
    let model = models::build(task, meta.solutions, meta.model, vb)?;
    let mut varmap = params.varmap().clone();
    varmap.load(&weights).with_context(|| {
        format!(
            "{} does not hold this model's weights (is it corrupt, or from another model?)",
            weights.display()
        )
    })?;
    let dir = weights
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok(Loaded {
        task,
        meta,
        tokenizer,
        params,
        model,
        dir,
    })
}
