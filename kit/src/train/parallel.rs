//! A speed-up: the batch cut in parts, differentiated side by side, one part per core.
//!
//! On a model this small, splitting each operation over the cores leaves them waiting for each
//! other between operations, a few hundred times a step. Cutting the batch instead keeps each
//! core busy with a whole forward and backward pass of its own rows. The parts' losses, each
//! weighted by its share of the rows, add up to the whole batch's mean loss, and so do their
//! gradients (up to float rounding). The cut does not depend on the number of cores, so a seed
//! gives the same run on any machine. BENCHMARKS.md has the figures.

use crate::data::Batch;
use crate::ops::pool::on_pool;
use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// The parts a training step cuts its batch into (fewer when the batch has fewer rows).
pub const PARTS: usize = 2;

/// Cuts `batch` into at most `parts` parts of consecutive rows and runs `differentiate` on each,
/// side by side on kit's pool, with its `x` and `y` (each (rows, T)) and its share of the
/// batch's rows. `differentiate` returns the part's mean loss and the gradients of that loss
/// times the share. Returns the batch's mean loss and one gradient store per part: their sum is
/// the gradient of the batch's mean loss.
pub fn over_parts<F>(
    batch: &Batch,
    parts: usize,
    device: &Device,
    differentiate: F,
) -> Result<(f32, Vec<GradStore>)>
where
    F: Fn(&Tensor, &Tensor, f64) -> Result<(f32, GradStore)> + Sync,
{
    let parts = batch.split(parts);
    let rows = batch.batch_size as f64;
    on_pool(|| {
        let done = parts
            .par_iter()
            .map(|part| {
                let (x, y) = part.to_tensors(device)?;
                let share = part.batch_size as f64 / rows;
                let (loss, grads) = differentiate(&x, &y, share)?;
                Ok((loss as f64 * share, grads))
            })
            .collect::<Result<Vec<_>>>()?;
        let (losses, grads): (Vec<f64>, Vec<GradStore>) = done.into_iter().unzip();
        Ok((losses.iter().sum::<f64>() as f32, grads))
    })
}
