//! One training step: the loss of a batch, its gradient, and an Adam update.
//!
//! The batch is cut in parts that are differentiated side by side, each on its own thread of
//! kit's pool; see [`Trainer`].

use crate::adam::{Adam, ParamsAdam, summed_gradient};
use crate::data::Batch;
use crate::ops::{self, pool};
use candle_core::backprop::GradStore;
use candle_core::{Device, Module, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW, VarMap};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// The loss of a model on one batch: mean cross-entropy of the logits against the targets.
pub fn loss<M: Module + ?Sized>(model: &M, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let logits = model.forward(x)?; // (B, T, V)
    ops::cross_entropy(&logits, y)
}

/// Which implementation of Adam a [`Trainer`] updates the parameters with. Both are the
/// challenge's plain Adam; they differ in speed only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optimiser {
    /// kit's [`Adam`]: one in-place pass per parameter, the parameters side by side.
    #[default]
    Fused,
    /// candle-nn's `AdamW` with weight decay 0, built from candle's elementary ops.
    CandleAdamW,
}

/// The optimiser a trainer updates the parameters with, from the gradients of the parts of a
/// batch (summed).
enum Update {
    Fused(Adam),
    CandleAdamW { adamw: AdamW, vars: Vec<Var> },
}

impl Update {
    fn apply(&mut self, grads: &[GradStore]) -> Result<()> {
        match self {
            Update::Fused(adam) => adam.step_sum(grads),
            Update::CandleAdamW { adamw, vars } => adamw.step(&sum_grads(vars, grads)?),
        }
    }
}

/// One optimiser and the model it updates: a training step at a time.
///
/// Each step cuts the batch in [`Trainer::PARTS`] parts and runs the forward and backward pass
/// of each on its own thread of kit's pool, its loss weighted by its share of the rows. The
/// gradients of the parts add up to the gradient of the whole batch's mean loss (up to float
/// rounding), and the update uses their sum. On a small model this keeps every core busy for
/// the whole step, where splitting each operation would leave them waiting for each other
/// between operations. The parts do not depend on the number of cores, so a seed gives the
/// same run everywhere.
pub struct Trainer<'a, M: Module + Sync + ?Sized> {
    model: &'a M,
    update: Update,
    device: Device,
    parts: usize,
}

/// How long the three phases of one step took: see [`Trainer::step_timed`].
#[derive(Debug, Clone, Copy)]
pub struct StepTimes {
    /// The forward pass and the loss.
    pub forward: Duration,
    pub backward: Duration,
    pub update: Duration,
}

impl<'a, M: Module + Sync + ?Sized> Trainer<'a, M> {
    /// Parts per batch (fewer when the batch has fewer rows).
    pub const PARTS: usize = 2;

    /// Adam at `learning_rate` over every variable of `varmap`, with kit's fused [`Adam`].
    pub fn new(model: &'a M, varmap: &VarMap, learning_rate: f64, device: &Device) -> Result<Self> {
        Self::with_optimiser(model, varmap, learning_rate, device, Optimiser::Fused)
    }

    /// [`Trainer::new`] with the given implementation of Adam (benchmarks compare).
    pub fn with_optimiser(
        model: &'a M,
        varmap: &VarMap,
        learning_rate: f64,
        device: &Device,
        optimiser: Optimiser,
    ) -> Result<Self> {
        let vars = varmap.all_vars();
        let update = match optimiser {
            Optimiser::Fused => {
                let params = ParamsAdam {
                    lr: learning_rate,
                    ..ParamsAdam::default()
                };
                Update::Fused(Adam::new(vars, params)?)
            }
            Optimiser::CandleAdamW => {
                let params = ParamsAdamW {
                    lr: learning_rate,
                    // The challenge uses plain Adam; candle's default has weight decay 0.01.
                    weight_decay: 0.0,
                    ..ParamsAdamW::default()
                };
                let adamw = AdamW::new(vars.clone(), params)?;
                Update::CandleAdamW { adamw, vars }
            }
        };
        Ok(Self {
            model,
            update,
            device: device.clone(),
            parts: Self::PARTS,
        })
    }

    /// Cuts each batch in `parts` parts instead of [`Trainer::PARTS`] (benchmarks compare).
    pub fn with_parts(mut self, parts: usize) -> Self {
        self.parts = parts.max(1);
        self
    }

    /// kit's fused Adam, when that is the optimiser: its moments are what a resumed run needs.
    pub fn adam(&mut self) -> Option<&mut Adam> {
        match &mut self.update {
            Update::Fused(adam) => Some(adam),
            Update::CandleAdamW { .. } => None,
        }
    }

    /// The threads a step runs on: `MINIGPT_THREADS`, else every core.
    pub fn threads(&self) -> usize {
        pool::threads()
    }

    /// Forward, backward and one Adam update on `batch`; returns the batch's mean loss.
    pub fn step(&mut self, batch: &Batch) -> Result<f32> {
        let (loss, grads) = loss_and_gradients(self.model, batch, self.parts, &self.device)?;
        self.update.apply(&grads)?;
        Ok(loss)
    }

    /// [`Trainer::step`] with the whole batch in one part, timing each phase.
    pub fn step_timed(&mut self, batch: &Batch) -> Result<(f32, StepTimes)> {
        let (x, y) = batch.to_tensors(&self.device)?;
        let (model, update) = (self.model, &mut self.update);
        pool::on_pool(|| {
            let t0 = Instant::now();
            let loss = loss(model, &x, &y)?;
            let t1 = Instant::now();
            let grads = loss.backward()?;
            let t2 = Instant::now();
            update.apply(std::slice::from_ref(&grads))?;
            let times = StepTimes {
                forward: t1 - t0,
                backward: t2 - t1,
                update: t2.elapsed(),
            };
            Ok((loss.to_scalar::<f32>()?, times))
        })
    }
}

/// The mean loss of `model` on `batch`, and its gradient as one store per part: the batch is
/// cut in `parts` parts, differentiated side by side on kit's pool, each part's loss weighted
/// by its share of the rows. The gradient of the whole batch's loss is the sum of the stores.
pub fn loss_and_gradients<M: Module + Sync + ?Sized>(
    model: &M,
    batch: &Batch,
    parts: usize,
    device: &Device,
) -> Result<(f32, Vec<GradStore>)> {
    let parts = batch.split(parts);
    let rows = batch.batch_size as f64;
    pool::on_pool(|| {
        let done = parts
            .par_iter()
            .map(|part| {
                let (x, y) = part.to_tensors(device)?;
                let share = part.batch_size as f64 / rows;
                let loss = loss(model, &x, &y)?;
                let grads = if parts.len() == 1 {
                    loss.backward()?
                } else {
                    loss.affine(share, 0.0)?.backward()?
                };
                Ok((loss.to_scalar::<f32>()? as f64 * share, grads))
            })
            .collect::<Result<Vec<_>>>()?;
        let (losses, grads): (Vec<f64>, Vec<GradStore>) = done.into_iter().unzip();
        Ok((losses.iter().sum::<f64>() as f32, grads))
    })
}

/// One gradient store holding, for each of `vars`, the sum of its gradients in `grads`.
fn sum_grads(vars: &[Var], grads: &[GradStore]) -> Result<GradStore> {
    let mut sum = GradStore::default();
    for var in vars {
        if let Some(g) = summed_gradient(var, grads)? {
            sum.insert(var, g);
        }
    }
    Ok(sum)
}
