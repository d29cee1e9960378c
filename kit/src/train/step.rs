//! One training step: forward, loss, backward, update.

use super::parallel;
use crate::adam::Adam;
use crate::data::Batch;
use crate::ops;
use candle_core::{Device, Module, Result, Tensor};

/// One step of training `model` on `batch` with `adam`; returns the batch's mean loss.
///
/// 1. forward: the logits of every position, (B, T, V);
/// 2. loss: the mean cross-entropy of those logits against the next tokens, `y`;
/// 3. backward: ∂loss/∂θ for every parameter θ of the model;
/// 4. update: Adam moves every θ against its gradient.
///
/// Steps 1 to 3 run on both halves of the batch at once, one per core (see [`parallel`]). Each
/// half's loss is weighted by its share of the rows, so the two halves' gradients add up to the
/// gradient of the whole batch's mean loss, and Adam gets that sum.
pub fn step<M: Module + Sync + ?Sized>(
    model: &M,
    adam: &mut Adam,
    batch: &Batch,
    device: &Device,
) -> Result<f32> {
    let (loss, grads) = parallel::over_parts(batch, parallel::PARTS, device, |x, y, share| {
        let logits = model.forward(x)?; // 1. (B, T, V)
        let loss = ops::cross_entropy(&logits, y)?; // 2. a scalar
        let grads = (&loss * share)?.backward()?; // 3. one gradient per parameter
        Ok((loss.to_scalar::<f32>()?, grads))
    })?;
    adam.step_sum(&grads)?; // 4. θ ← θ − lr · m̂ / (√v̂ + ε), m̂ and v̂ from the summed gradient
    Ok(loss)
}

/// The loss of a model on one batch: mean cross-entropy of the logits against the targets.
pub fn loss<M: Module + ?Sized>(model: &M, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let logits = model.forward(x)?; // (B, T, V)
    ops::cross_entropy(&logits, y)
}
