//! A checkpoint, loaded for the model commands: `kit::checkpoint` reads the files; this builds
//! the model they describe, which needs the learner's code.

use crate::models::{self, TextModel};
use anyhow::Context as _;
use candle_core::Device;
use kit::checkpoint::{Meta, Saved};
use kit::{SeededVarMap, Tokenizer};
use std::path::{Path, PathBuf};
use xtask::cli::TrainTask;

/// A checkpoint, loaded: its description, tokenizer, parameters and model.
pub struct Loaded {
    pub task: TrainTask,
    pub meta: Meta,
    pub tokenizer: Tokenizer,
    pub params: SeededVarMap,
    pub model: Box<dyn TextModel>,
    /// The folder the checkpoint is in.
    pub dir: PathBuf,
}

/// Reads the checkpoint at `path` (its folder or its weights' file), rebuilds the model it
/// describes and loads the weights into it.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let (meta, weights) = kit::checkpoint::read_meta(path)?;
    let task = TrainTask::from_name(&meta.task).with_context(|| {
        format!(
            "the checkpoint at {} names an unknown task {:?}",
            path.display(),
            meta.task
        )
    })?;
    let tokenizer = Tokenizer::from_chars(meta.vocabulary.chars().collect());
    let params = SeededVarMap::new(0);
    let vb = params.var_builder(&Device::Cpu);
    let model = models::build(task, meta.solutions, meta.model, vb)?;
    Saved::read(&weights)?.load_weights(params.varmap())?;
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
