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
    // The row's maximum is a constant shift: no gradient needs to flow through it.
    let max = logits.max_keepdim(D::Minus1)?.detach(); // (B, T, 1)
    let shifted = logits.broadcast_sub(&max)?; // (B, T, V), every value ≤ 0
    let log_total = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?; // (B, T, 1)
    let log_probs = shifted.broadcast_sub(&log_total)?; // (B, T, V)
    let picked = log_probs.gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?; // (B, T, 1)
    picked.mean_all()?.neg()
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
        self.t += 1;
        let (b1, b2) = (Self::BETA1, Self::BETA2);
        // Early on the moments are still close to their zero start: scale them up. The scale
        // of m̂ folds into the learning rate, which saves a pass over every parameter.
        let lr_m = self.lr / (1.0 - b1.powi(self.t));
        let sqrt_correct_v = (1.0 - b2.powi(self.t)).sqrt();
        for ((var, m), v) in self.vars.iter().zip(&mut self.m).zip(&mut self.v) {
            let Some(g) = grads.get(var) else { continue };
            *m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denominator = v.sqrt()?.affine(1.0 / sqrt_correct_v, Self::EPS)?; // √v̂ + ε
            var.set(&(var.as_tensor() - ((&*m * lr_m)? / denominator)?)?)?;
        }
        Ok(())
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
    let logits = model.forward(x)?; // (B, T, V)
    let loss = cross_entropy(&logits, y)?;
    let grads = loss.backward()?;
    optimiser.step(&grads)?;
    loss.to_scalar::<f32>()
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
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        if step >= self.total {
            return self.floor;
        }
        let ratio = (step - self.warmup) as f64 / (self.total - self.warmup) as f64;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()); // from 1 down to 0
        self.floor + coeff * (self.peak - self.floor)
    }
}

/// Scales the gradients of `vars` in `grads` so that their norm, all of them together, is at
/// most `max_norm`. Returns the norm before.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut squares = 0.0;
    for var in vars {
        if let Some(g) = grads.get(var) {
            squares += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = squares.sqrt();
    // One factor for every gradient, so the direction of the whole stays the same; below the
    // limit it is 1, and the gradients stay as they are.
    let factor = (max_norm / norm).min(1.0);
    for var in vars {
        if let Some(g) = grads.remove(var) {
            grads.insert(var, (g * factor)?);
        }
    }
    Ok(norm)
}
