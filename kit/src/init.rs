//! Parameters drawn from a seeded generator.
//!
//! candle's CPU random generator cannot be seeded (`Device::set_seed` fails on the CPU), so a
//! `VarMap` gives different weights on every run. [`SeededVarMap`] is a drop-in replacement: it
//! creates each parameter from a ChaCha8 stream keyed by the run's seed and the parameter's
//! name. The same seed gives the same weights, whatever order the layers are built in.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// A [`VarMap`] whose new variables come from a seeded generator.
#[derive(Clone)]
pub struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(seed: u64) -> Self {
        Self {
            varmap: VarMap::new(),
            seed,
        }
    }

    /// A `VarBuilder` that creates (or finds) its variables in this map.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    /// The underlying map: variables for the optimizer, `save` and `load`.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Every variable with its name, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        let mut vars: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("varmap lock poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "parameter {name} already exists with shape {:?}, asked again with shape {:?}: \
                     two layers share one name (use vb.pp(...) to give each its own)",
                    var.shape(),
                    shape
                )
            }
            return Ok(var.as_tensor().clone());
        }
        let values = draw(&shape, init, stream_seed(self.seed, name));
        let tensor = Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        match data.get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("no parameter named {name} in this model"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        data.contains_key(name)
    }
}

/// One stream per (seed, parameter name): FNV-1a of the name, mixed with the seed.
fn stream_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn draw(shape: &Shape, init: Init, stream: u64) -> Vec<f32> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(stream);
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
        let d = Normal::new(mean as f32, std as f32).expect("standard deviation is finite");
        (0..n).map(|_| d.sample(rng)).collect()
    };
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
        let d = Uniform::new(lo as f32, up as f32).expect("lo < up");
        (0..n).map(|_| d.sample(rng)).collect()
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
        Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(&mut rng, 0., std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut rng, -bound, bound)
                }
            }
        }
    }
}

/// LeCun normal: a normal of mean 0 and standard deviation `1 / sqrt(fan_in)`, the variance of
/// Flax's default for a Dense kernel. Flax draws it from a normal truncated at two standard
/// deviations (and widened to keep the variance); this one is not truncated, so a few weights
/// in a hundred lie further out.
pub fn lecun_normal(fan_in: usize) -> Init {
    Init::Randn {
        mean: 0.,
        stdev: 1. / (fan_in.max(1) as f64).sqrt(),
    }
}

/// Flax's default for `nn.Embed`: normal with variance `1 / features`.
pub fn embed_normal(features: usize) -> Init {
    lecun_normal(features)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(seed: u64) -> Vec<f32> {
        let map = SeededVarMap::new(seed);
        let vb = map.var_builder(&Device::Cpu);
        let w = vb
            .get_with_hints((4, 3), "layer.weight", lecun_normal(3))
            .unwrap();
        w.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        assert_eq!(weights(7), weights(7));
        assert_ne!(weights(7), weights(8));
    }

    #[test]
    fn weights_do_not_depend_on_build_order() {
        let standard = Init::Randn {
            mean: 0.,
            stdev: 1.,
        };
        // Draws the variables named in `order` from a fresh map of seed 3; returns "x".
        let x_after = |order: &[&str]| {
            let map = SeededVarMap::new(3);
            let vb = map.var_builder(&Device::Cpu);
            let mut x = None;
            for &name in order {
                let v = vb.get_with_hints(5, name, standard).unwrap();
                if name == "x" {
                    x = Some(v.to_vec1::<f32>().unwrap());
                }
            }
            x.unwrap()
        };
        assert_eq!(x_after(&["x", "y"]), x_after(&["y", "x"]));
    }

    #[test]
    fn lecun_normal_has_the_right_spread() {
        let map = SeededVarMap::new(0);
        let w = map
            .var_builder(&Device::Cpu)
            .get_with_hints((256, 64), "w", lecun_normal(64))
            .unwrap();
        let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let var = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
        // Expected variance 1/64 = 0.0156; 16384 draws keep the estimate within a few percent.
        assert!((var - 1. / 64.).abs() < 0.0015, "variance {var}");
    }
}
