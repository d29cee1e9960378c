//! # Task 4: the training step, by hand
//!
//! Until now kit trained your models: `kit::train::step` computed the loss, its gradient and an
//! Adam update for you. Here you write each of them, the way the challenge's optax code does,
//! and then train MiniGPT with your own step. Shapes: `B` batch, `T` positions, `V` vocabulary.
//!
//! 1. **cross-entropy**: for logits (B, T, V) and targets (B, T) of token ids, the mean over
//!    the B·T positions of `−log softmax(logits)[target]`, a scalar. Computed stably: with
//!    `m = maxⱼ zⱼ` the largest logit of a row, `log softmax(z)ᵢ = zᵢ − m − log Σⱼ exp(zⱼ − m)`;
//!    without the `m`, a logit of 1000 makes `exp` infinite in f32. Written with candle's
//!    differentiable ops, its gradient comes from `loss.backward()`.
//! 2. **Adam**, optax's `adam`, the challenge's optimiser: for each parameter θ with gradient g,
//!    at update t = 1, 2, …
//!    ```text
//!    m ← β₁ m + (1 − β₁) g              the moments start at 0
//!    v ← β₂ v + (1 − β₂) g²
//!    m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)
//!    θ ← θ − lr · m̂ / (√v̂ + ε)          β₁ 0.9, β₂ 0.999, ε 1e-8
//!    ```
//!    A parameter without a gradient in the store is left as it is, and so are its moments: the
//!    convention of candle-nn's `AdamW`. optax never meets the case, since `jax.grad` gives it a
//!    gradient for every parameter.
//! 3. **the step**: forward, cross-entropy, backward, one Adam update; it returns the loss.
//!    It has the signature of kit's own, `kit::train::step`: a run trains with either (`cargo
//!    xtask train task4` with yours), and in your own code one replaces the other in one line.
//!    Your `Adam` implements candle-nn's `Optimizer` (the given `impl` below), the trait kit's
//!    step and training loop update through.
//! 4. **a learning-rate schedule**: a linear warm-up, then a cosine decay to a floor, as
//!    Karpathy's build-nanogpt and llm.c write it (nanoGPT's own `train.py` divides its warm-up
//!    by `warmup_iters + 1` instead). For step s = 0, 1, 2, …
//!    ```text
//!    s < warmup:   lr = peak · (s + 1) / warmup
//!    s ≥ total:    lr = floor
//!    otherwise:    r = (s − warmup) / (total − warmup)
//!                  lr = floor + ½ (1 + cos πr) · (peak − floor)
//!    ```
//! 5. **gradient-norm clipping**: the norm of the whole gradient, ‖g‖ = √(Σ over every
//!    parameter of Σ g²); when it is above `max_norm`, every gradient is multiplied by
//!    `max_norm / ‖g‖`, so the direction stays and the norm becomes `max_norm`. It returns ‖g‖
//!    before clipping.
//!
//! Write the loss with candle's differentiable ops, so that `loss.backward()` works through it.
//! Check your work with `cargo xtask check task4`; its last check trains MiniGPT with your step
//! and your Adam. `cargo xtask hint task4 adam` (or any part) gives the candle calls.
//!
//! **Think about it.** Once it is green, this task's section of docs/guide.md ends with a
//! question to think about: the workbook keeps its questions there.

use candle_core::backprop::GradStore;
use candle_core::{D, Module, Result, Tensor, Var};
use candle_nn::Optimizer;

/// Mean cross-entropy of `logits` against `targets`, computed stably.
///
/// # Shapes
/// logits (B, T, V) f32, targets (B, T) u32 → a scalar
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    // TODO: the mean over the B·T positions of −log softmax(logits)[target], stably: subtract
    // each row's largest logit before exp, and take the log of the softmax as
    // z − m − log Σ exp(z − m), never the log of a probability that may be 0.
    todo!("cross_entropy: mean over B·T of -log softmax(logits)[target], the max subtracted first")
}

/// optax's `adam`: plain Adam with bias-corrected moments.
pub struct Adam {
    vars: Vec<Var>,
    /// The first and second moments of each of `vars`, zero at the start.
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates made so far: the t of the bias correction.
    t: i32,
    /// The learning rate of the next update (a schedule may change it between updates).
    pub lr: f64,
}

impl Adam {
    pub const BETA1: f64 = 0.9;
    pub const BETA2: f64 = 0.999;
    pub const EPS: f64 = 1e-8;

    /// Adam over `vars` at learning rate `lr`, the moments at zero.
    pub fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            m: vars.iter().map(zeros).collect::<Result<_>>()?,
            v: vars.iter().map(zeros).collect::<Result<_>>()?,
            vars,
            t: 0,
            lr,
        })
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        // TODO: t ← t + 1; then, for every parameter with a gradient g in `grads`: update its
        // moments m and v, bias-correct them into m̂ and v̂, and set θ to θ − lr·m̂/(√v̂ + ε).
        // A parameter without a gradient keeps its value and its moments.
        todo!("Adam::step: update m and v, bias-correct them, move each parameter with a gradient")
    }
}

/// Your Adam as candle-nn's optimisers are, so that kit's training loop, and `kit::train::step`,
/// can update with it. Given: it calls your `new` and `step`, and reads and sets `lr`.
impl Optimizer for Adam {
    type Config = f64;

    fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        Adam::new(vars, lr)
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        Adam::step(self, grads)
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// One training step of `model` on the batch (x, y): forward, cross-entropy, backward, one
/// update by `optimiser` (your `Adam`, or any of candle-nn's). Returns the loss before the
/// update. The signature of `kit::train::step`.
///
/// # Shapes
/// x and y (B, T) u32
pub fn train_step<M: Module + ?Sized, O: Optimizer>(
    model: &M,
    optimiser: &mut O,
    x: &Tensor,
    y: &Tensor,
) -> Result<f32> {
    // TODO: the logits of x, their cross-entropy against y (yours, above), the gradients of
    // that loss, one update of `optimiser`; return the loss as an f32.
    todo!("train_step: forward, cross_entropy, backward, optimiser.step; return the loss")
}

/// The learning-rate schedule of build-nanogpt and llm.c: a linear warm-up over `warmup` steps
/// to `peak`, then a cosine decay to `floor` at step `total`, and `floor` after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub warmup: usize,
    pub total: usize,
    pub peak: f64,
    pub floor: f64,
}

impl Schedule {
    /// The learning rate of step `step`, counted from 0.
    pub fn lr(&self, step: usize) -> f64 {
        // TODO: peak·(step + 1)/warmup during the warm-up; floor from `total` on; in between,
        // floor + ½(1 + cos πr)(peak − floor) with r the fraction of the decay done.
        todo!("Schedule::lr: linear warm-up to peak, then a cosine decay to floor")
    }
}

/// Scales the gradients of `vars` in `grads` so that their norm, all of them together, is at
/// most `max_norm`. Returns the norm before.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    // TODO: the norm of all the gradients of `vars` together, √(Σ g²); above max_norm, replace
    // every gradient by itself times max_norm / norm. Return the norm from before.
    todo!("clip_grad_norm: the norm of every gradient together; scale them all down to max_norm")
}
