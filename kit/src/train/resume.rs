//! A run's state between two steps, to save and to go on from: what a resumed run needs to
//! continue exactly as if it had not stopped.

use super::{EVAL_STREAM, Run, TrainConfig, TrainReport};
use crate::data::Dataset;
use candle_core::{Device, Module, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// The numbers of a run's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The losses and evaluations so far; its `steps_run` is where the run stands.
    pub report: TrainReport,
    /// How far each random stream has gone: ChaCha8's word position.
    pub batch_stream: u128,
    pub eval_stream: u128,
    /// Adam's update count.
    pub adam_steps: i32,
}

/// A run's state: its [`Progress`], and its tensors by name: Adam's moments (`adam.m.NAME`,
/// `adam.v.NAME`) and the weights of the best evaluation so far (`best.NAME`), where NAME is a
/// parameter's name in the varmap. The current weights are the varmap's own.
#[derive(Debug, Clone)]
pub struct RunState {
    pub progress: Progress,
    pub tensors: HashMap<String, Tensor>,
}

/// Only a run with kit's [`crate::adam::Adam`] can be saved: its state is kit's to read.
impl<'a, M: Module + Sync + ?Sized> Run<'a, M> {
    /// Where the run stands now, between two steps.
    pub fn state(&mut self) -> anyhow::Result<RunState> {
        let names = var_names(self.varmap);
        let mut tensors = HashMap::new();
        let adam = &self.optimiser;
        for (name, var) in &names {
            let (m, v) = adam
                .moments(var)
                .ok_or_else(|| anyhow::anyhow!("Adam has no moments for {name}"))?;
            let shape = var.shape();
            tensors.insert(
                format!("adam.m.{name}"),
                Tensor::from_slice(m, shape, &self.device)?,
            );
            tensors.insert(
                format!("adam.v.{name}"),
                Tensor::from_slice(v, shape, &self.device)?,
            );
        }
        let adam_steps = adam.steps();
        for (var, value) in self.best_weights.iter().flatten() {
            let name = names
                .iter()
                .find(|(_, v)| v.id() == var.id())
                .map(|(n, _)| n);
            if let Some(name) = name {
                tensors.insert(format!("best.{name}"), value.clone());
            }
        }
        let mut report = self.report.clone();
        report.elapsed += self.started.elapsed();
        let progress = Progress {
            report,
            batch_stream: self.batch_rng.get_word_pos(),
            eval_stream: self.eval_rng.get_word_pos(),
            adam_steps,
        };
        Ok(RunState { progress, tensors })
    }

    /// A run that goes on from `state`, saved by [`Run::state`] from a run with this `config`,
    /// with `varmap` already holding the weights it had then.
    pub fn resume(
        model: &'a M,
        varmap: &'a VarMap,
        data: &'a Dataset,
        config: &TrainConfig,
        device: &Device,
        state: &RunState,
    ) -> anyhow::Result<Self> {
        let mut run = Self::start(model, varmap, data, config, device)?;
        let names = var_names(varmap);
        let tensor = |key: String| -> anyhow::Result<Vec<f32>> {
            let t = state
                .tensors
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("the saved state has no {key}"))?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let mut moments = HashMap::new();
        for (name, var) in &names {
            let m = tensor(format!("adam.m.{name}"))?;
            let v = tensor(format!("adam.v.{name}"))?;
            moments.insert(var.id(), (m, v));
        }
        run.optimiser
            .restore(state.progress.adam_steps, |var| moments.remove(&var.id()))?;
        let best: Vec<_> = names
            .iter()
            .filter_map(|(name, var)| {
                let value = state.tensors.get(&format!("best.{name}"))?;
                Some((var.clone(), value.clone()))
            })
            .collect();
        run.best_weights = (!best.is_empty()).then_some(best);
        run.batch_rng = stream(config.seed, state.progress.batch_stream);
        run.eval_rng = stream(config.seed ^ EVAL_STREAM, state.progress.eval_stream);
        run.report = state.progress.report.clone();
        run.bar.set_position(run.report.steps_run as u64);
        run.started = Instant::now();
        Ok(run)
    }
}

/// The parameters of `varmap` by name, sorted.
fn var_names(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = varmap.data().lock().expect("the varmap's lock");
    let mut names: Vec<_> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    names
}

/// A ChaCha8 stream seeded with `seed`, `position` words in.
fn stream(seed: u64, position: u128) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_word_pos(position);
    rng
}
