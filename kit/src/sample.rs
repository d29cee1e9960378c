//! Drawing the next token from a model's logits.

use candle_core::{D, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded source of next tokens: categorical sampling from logits, optionally sharpened or
/// flattened by a temperature and restricted to the `k` most likely tokens.
///
/// ```
/// # use kit::Sampler;
/// # use candle_core::{Device, Tensor};
/// let logits = Tensor::new(&[0.0f32, 5.0, 0.0], &Device::Cpu)?;
/// let mut greedy = Sampler::new(0).with_temperature(0.0);
/// assert_eq!(greedy.sample(&logits)?, 1);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: ChaCha8Rng,
    temperature: f32,
    top_k: Option<usize>,
}

impl Sampler {
    /// Plain categorical sampling (temperature 1, no top-k) from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            temperature: 1.0,
            top_k: None,
        }
    }

    /// Divides the logits by `temperature` before sampling; 0 always takes the most likely token.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature.max(0.0);
        self
    }

    /// Samples only among the `k` most likely tokens.
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k.max(1));
        self
    }

    /// Draws a token id from `logits`, shape (V) or (1, V).
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        let logits: Vec<f32> = logits
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        if logits.is_empty() {
            candle_core::bail!("cannot sample from empty logits")
        }
        Ok(self.sample_slice(&logits))
    }

    /// Draws a token id from a slice of logits.
    pub fn sample_slice(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax_slice(logits);
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        if let Some(k) = self.top_k {
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            order.truncate(k);
        }
        let max = order
            .iter()
            .map(|&i| logits[i])
            .fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = order
            .iter()
            .map(|&i| ((logits[i] - max) / self.temperature).exp())
            .collect();
        let total: f32 = weights.iter().sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax_slice(logits);
        }
        let mut u = self.rng.random::<f32>() * total;
        for (&i, &w) in order.iter().zip(&weights) {
            if u < w {
                return i as u32;
            }
            u -= w;
        }
        *order.last().expect("logits are not empty") as u32
    }
}

/// Index of the largest logit (the first one on ties).
fn argmax_slice(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Index of the largest value along the last dimension of a (V) tensor.
pub fn argmax(logits: &Tensor) -> Result<u32> {
    logits.flatten_all()?.argmax(D::Minus1)?.to_scalar::<u32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_probabilities() {
        // softmax([ln 1, ln 3]) = [0.25, 0.75]
        let logits = [0f32, 3f32.ln()];
        let mut s = Sampler::new(1);
        let ones = (0..4000).filter(|_| s.sample_slice(&logits) == 1).count();
        assert!((2850..3150).contains(&ones), "{ones} of 4000");
    }

    #[test]
    fn top_k_and_temperature() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let mut s = Sampler::new(2).with_top_k(2);
        assert!((0..500).all(|_| matches!(s.sample_slice(&logits), 1 | 2)));
        let mut g = Sampler::new(3).with_temperature(0.0);
        assert_eq!(g.sample_slice(&logits), 1);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits = [0.1f32, 0.2, 0.3, 0.4];
        let a: Vec<u32> = {
            let mut s = Sampler::new(9);
            (0..50).map(|_| s.sample_slice(&logits)).collect()
        };
        let mut s = Sampler::new(9);
        let b: Vec<u32> = (0..50).map(|_| s.sample_slice(&logits)).collect();
        assert_eq!(a, b);
    }
}
