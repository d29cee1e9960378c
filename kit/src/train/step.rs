//! One training step: forward, loss, backward, update.

use super::parallel;
use crate::ops;
use candle_core::{Module, Result, Tensor};
use candle_nn::Optimizer;

/// A training step: one update of the model by the optimiser on the batch (x, y), each (B, T),
/// returning the batch's mean loss before the update. kit's is [`step`]; Task 4's `train_step`
/// is another with the same signature, and a run trains with whichever it is given (see
/// [`super::Run::with_step`]).
pub type Step<M, O> = fn(&M, &mut O, &Tensor, &Tensor) -> Result<f32>;

/// One step of training `model` with `optimiser` on the batch (x, y), each (B, T) token ids;
/// returns the batch's mean loss: [`step_in_parts`] with the batch in [`parallel::PARTS`] parts,
/// one per core.
pub fn step<M, O>(model: &M, optimiser: &mut O, x: &Tensor, y: &Tensor) -> Result<f32>
where
    M: Module + Sync + ?Sized,
    O: Optimizer,
{
    step_in_parts(model, optimiser, x, y, parallel::PARTS)
}

/// One training step with the batch cut into `parts` parts of consecutive rows:
///
/// 1. forward: the logits of every position, (B, T, V);
/// 2. loss: the mean cross-entropy of those logits against the next tokens, `y`;
/// 3. backward: ∂loss/∂θ for every parameter θ of the model;
/// 4. update: the optimiser moves every θ against its gradient.
///
/// Steps 1 to 3 are nanoGPT's gradient accumulation, its micro-steps run side by side, one part
/// per core (see [`parallel`]): each part's loss is weighted by its share of the rows, so the
/// parts' losses add up to the batch's mean loss and their gradients to its gradient.
pub fn step_in_parts<M, O>(
    model: &M,
    optimiser: &mut O,
    x: &Tensor,
    y: &Tensor,
    parts: usize,
) -> Result<f32>
where
    M: Module + Sync + ?Sized,
    O: Optimizer,
{
    let parts = parallel::side_by_side(x, y, parts, |x, y, share| {
        let logits = model.forward(x)?; // 1. (rows, T, V)
        let loss = (ops::cross_entropy(&logits, y)? * share)?; // 2. this part's share
        let grads = loss.backward()?; // 3. ∂loss/∂θ, one gradient per parameter
        Ok((loss.to_scalar::<f32>()?, grads))
    })?;
    let (losses, grads): (Vec<f32>, Vec<_>) = parts.into_iter().unzip();
    let grads = parallel::accumulate(grads)?; // the sum of the parts' gradients
    optimiser.step(&grads)?; // 4. for kit's Adam: θ ← θ − lr · m̂ / (√v̂ + ε)
    Ok(losses.iter().sum())
}

/// The loss of a model on one batch: mean cross-entropy of the logits against the targets.
pub fn loss<M: Module + ?Sized>(model: &M, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let logits = model.forward(x)?; // (B, T, V)
    ops::cross_entropy(&logits, y)
}
