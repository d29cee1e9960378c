//! A training run on disk, in one folder:
//!
//! - `model.safetensors`: the weights; while the run can go on, also its state (Adam's moments,
//!   the best weights so far, and the [`Progress`] in the file's metadata), so that weights
//!   and state are always saved together;
//! - `model.json`: what the weights are: the task, the model's sizes, the vocabulary and the
//!   training settings;
//! - `vocab.json` and `merges.txt`, for a model trained on Task 8's BPE tokens: its tokenizer.
//!
//! `cargo xtask train` saves one at every evaluation and on Ctrl-C, and the finished run at
//! the end; `generate`, `attention` and `train --resume` read them. Each file is replaced
//! atomically.

use crate::GptConfig;
use crate::train::{Progress, RunState, TrainConfig};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use common::files::{WriteError, write_atomically, write_atomically_with};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const WEIGHTS: &str = "model.safetensors";
pub const META: &str = "model.json";
/// The key of the [`Progress`] in the weights file's metadata.
const PROGRESS: &str = "minigpt.progress";

/// What a checkpoint's weights are: enough to rebuild the model and its tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The name of the task whose model this is, as tasks.toml has it.
    pub task: String,
    /// Whether the reference solution (rather than your exercise) was trained.
    #[serde(default)]
    pub solutions: bool,
    pub model: GptConfig,
    /// The vocabulary of characters, in token-id order; empty when the tokens are Task 8's
    /// BPE, whose `vocab.json` and `merges.txt` are in the checkpoint's folder.
    pub vocabulary: String,
    pub train: TrainConfig,
    pub steps_run: usize,
    pub best_eval_loss: Option<f32>,
}

/// A checkpoint that cannot be read, or not for what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "no checkpoint file at {}: train one with `cargo xtask train TASK`, which writes \
         runs/TASK/",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("{} is not a checkpoint description: {reason}", path.display())]
    BadMeta { path: PathBuf, reason: String },
    #[error("{} is truncated or damaged ({reason}): it cannot be read", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("{} does not hold this model's weights: {reason}", path.display())]
    OtherWeights { path: PathBuf, reason: String },
    #[error(
        "{} holds a finished run (step {steps_run}): there is nothing to resume; train again \
         without --resume",
        path.display()
    )]
    Finished { path: PathBuf, steps_run: usize },
    #[error(
        "{} holds a run with {theirs}; this command asks for {ours}. Resume it with the command \
         that started it, plus --resume",
        dir.display()
    )]
    OtherRun {
        dir: PathBuf,
        theirs: String,
        ours: String,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The weights file and the description of the checkpoint at `path`: its folder, or its
/// weights' file.
pub fn files(path: &Path) -> (PathBuf, PathBuf) {
    if path.is_dir() {
        (path.join(WEIGHTS), path.join(META))
    } else {
        (path.to_path_buf(), path.with_extension("json"))
    }
}

/// Saves `varmap`'s weights and `meta` into `dir`, with `state` if the run can go on.
/// Returns the weights' path.
pub fn save(
    dir: &Path,
    varmap: &VarMap,
    meta: &Meta,
    state: Option<&RunState>,
) -> Result<PathBuf, CheckpointError> {
    let (weights, meta_path) = files(&dir.join(WEIGHTS));
    let mut tensors: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .expect("the varmap's lock")
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    let mut metadata = None;
    if let Some(state) = state {
        tensors.extend(state.tensors.iter().map(|(k, t)| (k.clone(), t.clone())));
        let progress = serde_json::to_string(&state.progress).expect("progress is plain data");
        metadata = Some(HashMap::from([(PROGRESS.to_string(), progress)]));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    write_atomically_with(&weights, |tmp| {
        safetensors::serialize_to_file(tensors, metadata, tmp).map_err(std::io::Error::other)
    })?;
    let json = serde_json::to_vec_pretty(meta).expect("the description is plain data");
    write_atomically(&meta_path, &json)?;
    Ok(weights)
}

/// Reads the description of the checkpoint at `path` (its folder or its weights' file);
/// returns it with the weights' path.
pub fn read_meta(path: &Path) -> Result<(Meta, PathBuf), CheckpointError> {
    let (weights, meta_path) = files(path);
    for p in [&weights, &meta_path] {
        if !p.is_file() {
            return Err(CheckpointError::Missing { path: p.clone() });
        }
    }
    let bad = |reason: String| CheckpointError::BadMeta {
        path: meta_path.clone(),
        reason,
    };
    let bytes = std::fs::read(&meta_path).map_err(|e| bad(e.to_string()))?;
    let meta = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    Ok((meta, weights))
}

/// A weights file, read whole and checked.
pub struct Saved {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    progress: Option<Progress>,
}

impl Saved {
    pub fn read(weights: &Path) -> Result<Self, CheckpointError> {
        let damaged = |reason: String| CheckpointError::Damaged {
            path: weights.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(weights).map_err(|e| damaged(e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| damaged(format!("{e:?}")))?;
        let progress = match header.metadata().as_ref().and_then(|m| m.get(PROGRESS)) {
            Some(json) => Some(serde_json::from_str(json).map_err(|e| damaged(e.to_string()))?),
            None => None,
        };
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| damaged(e.to_string()))?;
        Ok(Self {
            path: weights.to_path_buf(),
            tensors,
            progress,
        })
    }

    /// Puts the saved weights into `varmap`, each by name; a missing one or another shape is
    /// an error that names it.
    pub fn load_weights(&self, varmap: &VarMap) -> Result<(), CheckpointError> {
        let other = |reason: String| CheckpointError::OtherWeights {
            path: self.path.clone(),
            reason,
        };
        let vars = varmap.data().lock().expect("the varmap's lock");
        for (name, var) in vars.iter() {
            let saved = self
                .tensors
                .get(name)
                .ok_or_else(|| other(format!("it has no {name}")))?;
            if saved.dims() != var.dims() {
                let (s, v) = (saved.dims(), var.dims());
                return Err(other(format!("its {name} is {s:?}, this model's is {v:?}")));
            }
            var.set(saved).map_err(|e| other(e.to_string()))?;
        }
        Ok(())
    }

    /// The state of the run that saved these weights, if it can go on.
    pub fn state(&self, steps_run: usize) -> Result<RunState, CheckpointError> {
        let progress = self.progress.clone().ok_or(CheckpointError::Finished {
            path: self.path.clone(),
            steps_run,
        })?;
        let tensors = self
            .tensors
            .iter()
            .filter(|(k, _)| k.starts_with("adam.") || k.starts_with("best."))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        Ok(RunState { progress, tensors })
    }
}

impl Meta {
    /// Whether `self`, a saved run, is the run `ours` describes, for `--resume`: the same task,
    /// model and settings. The error says what differs.
    pub fn same_run_as(&self, ours: &Meta, dir: &Path) -> Result<(), CheckpointError> {
        let (t, o) = (&self.train, &ours.train);
        let (m, n) = (&self.model, &ours.model);
        let who = |solutions| {
            if solutions {
                "the reference"
            } else {
                "your exercise"
            }
        };
        let vocabulary = |m: &Meta| {
            if m.vocabulary == ours.vocabulary {
                "this corpus's vocabulary".to_string()
            } else {
                format!(
                    "another vocabulary ({} characters)",
                    m.vocabulary.chars().count()
                )
            }
        };
        let flag = |name, theirs: &dyn ToString, ours: &dyn ToString| {
            (name, theirs.to_string(), ours.to_string())
        };
        let differences = [
            ("the model of", self.task.clone(), ours.task.clone()),
            (
                "the model of",
                who(self.solutions).into(),
                who(ours.solutions).into(),
            ),
            flag("--layers", &m.num_layers, &n.num_layers),
            flag("--heads", &m.num_heads, &n.num_heads),
            flag("--hidden", &m.hidden, &n.hidden),
            flag("--block", &m.block_size, &n.block_size),
            ("", vocabulary(self), vocabulary(ours)),
            flag("--steps", &t.steps, &o.steps),
            flag("--lr", &t.learning_rate, &o.learning_rate),
            flag("--batch", &t.batch_size, &o.batch_size),
            flag("--eval-every", &t.eval_every, &o.eval_every),
            flag("--eval-batches", &t.eval_batches, &o.eval_batches),
            flag("--seed", &t.seed, &o.seed),
        ];
        match differences.into_iter().find(|(_, a, b)| a != b) {
            None => Ok(()),
            Some((what, theirs, ours)) => Err(CheckpointError::OtherRun {
                dir: dir.to_path_buf(),
                theirs: format!("{what} {theirs}").trim().to_string(),
                ours: format!("{what} {ours}").trim().to_string(),
            }),
        }
    }
}
