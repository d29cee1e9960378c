//! The dataset: the corpus as token ids, split 90% / 10% into train and eval, and random batches.

use crate::tokenizer::{Codec, Tokenizer};
use candle_core::{Device, Tensor};
use common::config::{SettingError, check_windows};
use common::corpus::{self, CorpusError};
use rand::Rng;
use std::sync::Arc;

/// Fraction of the tokens used for training; the rest is the eval split.
pub const TRAIN_FRACTION: f64 = 0.9;

/// The corpus, tokenized and split.
#[derive(Clone)]
pub struct Dataset {
    /// What cut the text into tokens: characters, or Task 8's BPE.
    pub tokenizer: Arc<dyn Codec>,
    /// The first 90% of the tokens.
    pub train: Vec<u32>,
    /// The last 10%.
    pub eval: Vec<u32>,
}

impl Dataset {
    /// Reads tiny Shakespeare (see [`common::corpus::load`]) and splits it.
    pub fn load() -> Result<Self, CorpusError> {
        Ok(Self::from_text(&corpus::load()?))
    }

    /// Tokenizes any text with its own vocabulary of characters and splits it.
    pub fn from_text(text: &str) -> Self {
        let tokenizer = Tokenizer::from_text(text);
        let tokens = tokenizer
            .encode(text)
            .expect("every character of a text is in that text's vocabulary");
        Self::from_tokens(&tokens, Arc::new(tokenizer))
    }

    /// Splits `tokens`, which `tokenizer` cut.
    pub fn from_tokens(tokens: &[u32], tokenizer: Arc<dyn Codec>) -> Self {
        let (train, eval) = split(tokens);
        Self {
            tokenizer,
            train: train.to_vec(),
            eval: eval.to_vec(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }
}

/// The first 90% of `tokens` and the rest (the challenge's `int(0.9 * len)`).
pub fn split(tokens: &[u32]) -> (&[u32], &[u32]) {
    let n = (TRAIN_FRACTION * tokens.len() as f64) as usize;
    tokens.split_at(n)
}

/// A batch as plain token ids, row-major: `x[i * block_size + j]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub x: Vec<u32>,
    pub y: Vec<u32>,
    pub batch_size: usize,
    pub block_size: usize,
}

impl Batch {
    /// Draws `batch_size` windows of `block_size` tokens, starting uniformly in
    /// `[0, len - block_size)`; `y` is each window shifted by one token.
    pub fn sample<R: Rng + ?Sized>(
        rng: &mut R,
        data: &[u32],
        batch_size: usize,
        block_size: usize,
    ) -> Result<Self, SettingError> {
        check_windows(batch_size, block_size, "given", data.len())?;
        let mut x = Vec::with_capacity(batch_size * block_size);
        let mut y = Vec::with_capacity(batch_size * block_size);
        for _ in 0..batch_size {
            let start = rng.random_range(0..data.len() - block_size);
            x.extend_from_slice(&data[start..start + block_size]);
            y.extend_from_slice(&data[start + 1..start + 1 + block_size]);
        }
        Ok(Self {
            x,
            y,
            batch_size,
            block_size,
        })
    }

    /// `(x, y)` as `u32` tensors of shape (batch_size, block_size).
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let shape = (self.batch_size, self.block_size);
        Ok((
            Tensor::from_slice(&self.x, shape, device)?,
            Tensor::from_slice(&self.y, shape, device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn split_is_ninety_ten() {
        let tokens: Vec<u32> = (0..1000).collect();
        let (train, eval) = split(&tokens);
        assert_eq!((train.len(), eval.len()), (900, 100));
        assert_eq!(eval[0], 900);
    }

    #[test]
    fn too_short_split_is_an_error_not_a_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let err = Batch::sample(&mut rng, &[1, 2, 3], 2, 3).unwrap_err();
        assert_eq!(
            err,
            SettingError::BlockTooLarge {
                block_size: 3,
                split: "given",
                len: 3
            }
        );
        assert!(Batch::sample(&mut rng, &[1, 2, 3, 4], 2, 3).is_ok());
    }

    #[test]
    fn every_start_is_reachable() {
        // len 6, block 4: starts 0 and 1 are the only windows with a target.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let data = [10, 11, 12, 13, 14, 15];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(Batch::sample(&mut rng, &data, 1, 4).unwrap().x[0]);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![10, 11]);
    }

    proptest! {
        #[test]
        fn targets_are_inputs_shifted_by_one(
            (data, block) in (2usize..300).prop_flat_map(|len| {
                (prop::collection::vec(0u32..65, len), 1..len)
            }),
            batch in 1usize..8,
            seed: u64,
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let b = Batch::sample(&mut rng, &data, batch, block).unwrap();
            prop_assert_eq!(b.x.len(), batch * block);
            for i in 0..batch {
                let row = &b.x[i * block..(i + 1) * block];
                let target = &b.y[i * block..(i + 1) * block];
                prop_assert_eq!(&row[1..], &target[..block - 1]);
                // The window is a real window of the data, and so is its target.
                let start = data.windows(block + 1).position(|w| &w[..block] == row && w[block] == target[block - 1]);
                prop_assert!(start.is_some());
            }
        }
    }
}
