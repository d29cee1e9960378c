//! A checkpoint, loaded for the model commands: `kit::checkpoint` reads the files; this builds
//! the model they describe, which needs the learner's code.

use crate::models::{self, TextModel};
use anyhow::Context as _;
use candle_core::Device;
use kit::checkpoint::{Meta, Saved};
use kit::{SeededVarMap, Tokenizer};
use std::path::{Path, PathBuf};

/// A checkpoint, loaded: its description, tokenizer, parameters and model.
pub struct Loaded {
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
    load_with(path, |meta, vb| {
        models::build(&meta.task, meta.solutions, meta.model, vb).with_context(|| {
            format!(
                "the checkpoint at {} is of task {:?}, whose model cannot be built",
                path.display(),
                meta.task
            )
        })
    })
}

/// [`load`], with the model that generates with a KV cache (`generate --cache`).
pub fn load_cached(path: &Path) -> anyhow::Result<Loaded> {
    load_with(path, |meta, vb| {
        let list = workbook::tasks::TaskList::here()?;
        let task = list.get(&meta.task).map_err(anyhow::Error::msg)?;
        let cache = task.model.as_ref().and_then(|m| m.cache.as_deref());
        models::cached(&meta.task, cache, meta.solutions, meta.model, vb)?.with_context(|| {
            format!(
                "--cache: the {} model has no KV cache; Task 3's model has one, your Task 6 \
                 cache (cargo xtask train task3), and Task 7's MiniLlama its own",
                meta.task
            )
        })
    })
}

fn load_with(
    path: &Path,
    build: impl FnOnce(&Meta, candle_nn::VarBuilder) -> anyhow::Result<Box<dyn TextModel>>,
) -> anyhow::Result<Loaded> {
    let (meta, weights) = kit::checkpoint::read_meta(path)?;
    let tokenizer = Tokenizer::from_chars(meta.vocabulary.chars().collect());
    let params = SeededVarMap::new(0);
    let vb = params.var_builder(&Device::Cpu);
    let model = build(&meta, vb)?;
    Saved::read(&weights)?.load_weights(params.varmap())?;
    let dir = weights
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok(Loaded {
        meta,
        tokenizer,
        params,
        model,
        dir,
    })
}
