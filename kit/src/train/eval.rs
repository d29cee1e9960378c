//! Evaluation: the mean loss over random batches, computed side by side on kit's pool.

use super::step::loss;
use crate::data::Batch;
use crate::ops::pool::on_pool;
use candle_core::{Device, Module, Result};
use common::config::{EvalScreen, TrainConfig};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// One evaluation: the mean loss of a model over `batches` random batches of `data`.
#[derive(Debug, Clone)]
pub struct Evaluation<'a> {
    pub data: &'a [u32],
    pub batches: usize,
    pub batch_size: usize,
    pub block_size: usize,
    /// A look at the first few batches that can cut the evaluation short; see [`EvalScreen`].
    pub screen: Option<EvalScreen>,
}

impl<'a> Evaluation<'a> {
    /// The evaluation of a run with `config` after step `step`: `eval_batches` batches of
    /// `eval`, screened except after the last step (the evaluation a run ends with is always
    /// complete).
    pub fn after_step(config: &TrainConfig, eval: &'a [u32], step: usize) -> Self {
        Self {
            data: eval,
            batches: config.eval_batches,
            batch_size: config.batch_size,
            block_size: config.block_size,
            screen: config.eval_screen.filter(|_| step < config.steps),
        }
    }

    /// The mean loss of `model`, and how many batches it averages: all of them, or the
    /// screen's when the screen cut the evaluation short. Every batch is drawn from `rng`
    /// either way, so the next evaluation draws the same batches with or without a screen.
    pub fn run<M: Module + Sync + ?Sized>(
        &self,
        model: &M,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<(f32, usize)> {
        let drawn = (0..self.batches)
            .map(|_| Batch::sample(rng, self.data, self.batch_size, self.block_size))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(candle_core::Error::wrap)?;
        let first = self.screen.map_or(0, |s| s.batches.min(self.batches));
        let mut losses = batch_losses(model, &drawn[..first], device)?;
        if let Some(screen) = self.screen
            && mean(&losses) > screen.above
        {
            return Ok((mean(&losses), first));
        }
        losses.extend(batch_losses(model, &drawn[first..], device)?);
        Ok((mean(&losses), self.batches))
    }
}

/// The loss of each batch, in order, computed side by side on kit's pool: the same figures
/// whatever the number of threads.
fn batch_losses<M: Module + Sync + ?Sized>(
    model: &M,
    batches: &[Batch],
    device: &Device,
) -> Result<Vec<f32>> {
    on_pool(|| {
        batches
            .par_iter()
            .map(|batch| {
                let (x, y) = batch.to_tensors(device)?;
                loss(model, &x, &y)?.to_scalar::<f32>()
            })
            .collect::<Result<Vec<_>>>()
    })
}

/// The mean of `losses`, summed in order in f64.
fn mean(losses: &[f32]) -> f32 {
    let total: f64 = losses.iter().map(|&l| l as f64).sum();
    (total / losses.len().max(1) as f64) as f32
}
