//! A checkpoint, loaded for the model commands: `kit::checkpoint` reads the files; this builds
//! the model they describe, which needs the learner's code.

use crate::models::{self, TextModel};
use anyhow::Context as _;
use candle_core::Device;
use kit::checkpoint::{Meta, Saved};
use kit::{Codec, SeededVarMap, Tokenizer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A checkpoint, loaded: its description, tokenizer, parameters and model.
pub struct Loaded {
    pub meta: Meta,
    pub tokenizer: Arc<dyn Codec>,
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
    let dir = weights
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    // A model of characters records them; one of BPE tokens has its tokenizer's files beside it.
    let tokenizer: Arc<dyn Codec> = if meta.vocabulary.is_empty() {
        models::bpe(&meta.task, meta.solutions, None, &dir)?
    } else {
        Arc::new(Tokenizer::from_chars(meta.vocabulary.chars().collect()))
    };
    let params = SeededVarMap::new(0);
    let vb = params.var_builder(&Device::Cpu);
    let model = build(&meta, vb)?;
    Saved::read(&weights)?.load_weights(params.varmap())?;
    Ok(Loaded {
        meta,
        tokenizer,
        params,
        model,
        dir,
    })
}
