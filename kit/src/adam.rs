//! Adam, fused: one pass over each parameter per step, updated in place.
//!
//! [`update`] is Adam's rule on one parameter, the challenge's `optax.adam`. [`Adam`] is the
//! optimiser that applies it to every parameter after each backward pass: candle-nn's `AdamW`
//! spells the same update as a dozen tensor operations per parameter, each of which allocates
//! and writes a new tensor the size of the parameter; this one keeps the moments in plain
//! vectors and runs [`update`] inside the parameter's own storage. It is tested against
//! `AdamW` with weight decay 0.

use crate::ops;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Var};
use candle_nn::Optimizer;
use rayon::prelude::*;
use std::cell::RefCell;

/// Adam's update of one parameter θ with gradient g, at update `t` (from 1), in place:
///
/// ```text
/// m ← β₁ m + (1 − β₁) g              the moments start at 0
/// v ← β₂ v + (1 − β₂) g²
/// θ ← θ − lr · m̂ / (√v̂ + ε)          m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)
/// ```
pub fn update(theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], p: &ParamsAdam, t: i32) {
    let (b1, b2, lr, eps) = (p.beta1 as f32, p.beta2 as f32, p.lr as f32, p.eps as f32);
    // The bias corrections, 1 / (1 − βᵗ): large at first, when the moments are still close to
    // their zero start.
    let scale_m = (1.0 / (1.0 - p.beta1.powi(t))) as f32;
    let scale_v = (1.0 / (1.0 - p.beta2.powi(t))) as f32;
    // Zipped slices rather than indices: no bounds checks, so the loop vectorises.
    let state = m.iter_mut().zip(v.iter_mut());
    for ((theta, &g), (m, v)) in theta.iter_mut().zip(g).zip(state) {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *theta -= lr * (*m * scale_m) / ((*v * scale_v).sqrt() + eps);
    }
}

/// Adam's settings; the defaults are optax's and PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamsAdam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for ParamsAdam {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

struct Slot {
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// Plain Adam (no weight decay) over f32 CPU variables.
pub struct Adam {
    slots: Vec<Slot>,
    params: ParamsAdam,
    step_t: i32,
}

impl Adam {
    /// How many updates have been made: the `t` of Adam's bias correction.
    pub fn steps(&self) -> i32 {
        self.step_t
    }

    /// The first and second moments of `var`, if this optimiser updates it.
    pub fn moments(&self, var: &Var) -> Option<(&[f32], &[f32])> {
        let slot = self.slots.iter().find(|s| s.var.id() == var.id())?;
        Some((&slot.m, &slot.v))
    }

    /// Puts back a state saved with [`Adam::steps`] and [`Adam::moments`]: `moments` gives
    /// each variable's (m, v). A variable without them, or with the wrong number, is an error.
    pub fn restore(
        &mut self,
        steps: i32,
        mut moments: impl FnMut(&Var) -> Option<(Vec<f32>, Vec<f32>)>,
    ) -> Result<()> {
        for slot in &mut self.slots {
            let n = slot.var.elem_count();
            match moments(&slot.var) {
                Some((m, v)) if m.len() == n && v.len() == n => (slot.m, slot.v) = (m, v),
                _ => candle_core::bail!(
                    "no Adam moments of {n} values for a parameter of shape {:?}",
                    slot.var.dims()
                ),
            }
        }
        self.step_t = steps;
        Ok(())
    }
}

impl Optimizer for Adam {
    type Config = ParamsAdam;

    fn new(vars: Vec<Var>, params: ParamsAdam) -> Result<Self> {
        let slots = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|var| {
                let n = var.elem_count();
                Slot {
                    var,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                }
            })
            .collect();
        Ok(Self {
            slots,
            params,
            step_t: 0,
        })
    }

    /// One update of every variable that has a gradient in `grads`, the variables side by side
    /// on kit's thread pool.
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let (params, t) = (self.params, self.step_t);
        let update = |slot: &mut Slot| -> Result<()> {
            let Some(g) = grads.get(&slot.var) else {
                return Ok(());
            };
            let op = AdamUpdate {
                m: RefCell::new(&mut slot.m),
                v: RefCell::new(&mut slot.v),
                params,
                t,
            };
            slot.var.as_tensor().inplace_op2(&g.contiguous()?, &op)
        };
        ops::pool::on_pool(|| self.slots.par_iter_mut().try_for_each(update))
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

/// [`update`] as an in-place op on a parameter's storage, with the gradient as second input.
struct AdamUpdate<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    params: ParamsAdam,
    t: i32,
}

impl InplaceOp2 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "kit-adam"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(grad)) = (s1, s2) else {
            candle_core::bail!("kit's Adam updates f32 parameters only")
        };
        let (Some((t0, t1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("kit's Adam needs contiguous parameters and gradients")
        };
        let (theta, grad) = (&mut theta[t0..t1], &grad[g0..g1]);
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        if theta.len() != grad.len() || theta.len() != m.len() {
            candle_core::bail!(
                "kit's Adam: parameter of {} values, gradient of {}, state of {}",
                theta.len(),
                grad.len(),
                m.len()
            )
        }
        // Memory-bound: one thread streams it as fast as two on this size of model.
        update(theta, grad, &mut m, &mut v, &self.params, self.t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use candle_nn::{AdamW, ParamsAdamW};

    #[test]
    fn a_step_on_accumulated_stores_is_a_step_on_their_sum() {
        let dev = Device::Cpu;
        let start = Tensor::new(&[[0.5f32, -1.0, 2.0], [0.1, 0.0, -0.3]], &dev).unwrap();
        let (ours, theirs) = (
            Var::from_tensor(&start).unwrap(),
            Var::from_tensor(&start).unwrap(),
        );
        let new = |v: &Var| Adam::new(vec![v.clone()], ParamsAdam::default()).unwrap();
        let (mut a, mut b) = (new(&ours), new(&theirs));
        // Two gradients in different directions (Adam does not see a common scale):
        // ∂/∂θ Σ θ³ = 3θ² and ∂/∂θ Σ sin θ = cos θ.
        let cube = |v: &Var| v.as_tensor().powf(3.0).unwrap().sum_all().unwrap();
        let sine = |v: &Var| v.as_tensor().sin().unwrap().sum_all().unwrap();
        for _ in 0..5 {
            let parts = [
                cube(&ours).backward().unwrap(),
                sine(&ours).backward().unwrap(),
            ];
            let [mut sum, second] = parts;
            sum.extend(second).unwrap();
            a.step(&sum).unwrap();
            let whole = (cube(&theirs) + sine(&theirs)).unwrap();
            b.step(&whole.backward().unwrap()).unwrap();
        }
        let (x, y) = (
            ours.as_tensor().to_vec2::<f32>().unwrap(),
            theirs.as_tensor().to_vec2::<f32>().unwrap(),
        );
        for (p, q) in x.iter().flatten().zip(y.iter().flatten()) {
            assert!((p - q).abs() < 1e-6, "{x:?} vs {y:?}");
        }
        assert_ne!(x, start.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn matches_candle_adamw_without_weight_decay() {
        let dev = Device::Cpu;
        let start = Tensor::new(&[[0.5f32, -1.0, 2.0], [0.1, 0.0, -0.3]], &dev).unwrap();
        let ours = Var::from_tensor(&start).unwrap();
        let theirs = Var::from_tensor(&start).unwrap();
        let mut a = Adam::new(
            vec![ours.clone()],
            ParamsAdam {
                lr: 0.05,
                ..Default::default()
            },
        )
        .unwrap();
        let params = ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut b = AdamW::new(vec![theirs.clone()], params).unwrap();
        for _ in 0..20 {
            // loss = Σ sin(θ) · θ², a gradient that changes with θ.
            let loss = |v: &Var| {
                (v.as_tensor().sin().unwrap() * v.as_tensor().sqr().unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            a.backward_step(&loss(&ours)).unwrap();
            b.backward_step(&loss(&theirs)).unwrap();
        }
        let diff: f32 = (ours.as_tensor() - theirs.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
        assert_ne!(
            ours.as_tensor().to_vec2::<f32>().unwrap(),
            start.to_vec2::<f32>().unwrap()
        );
    }
}
