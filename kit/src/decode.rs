//! Generation a position at a time, on top of a cache of the earlier positions: what a model
//! offers a generation loop such as Task 6's `generate_cached`, and the cache Task 6 writes,
//! given to the chapters after it.

use candle_core::{Result, Tensor};

/// A model that runs new positions on top of what it keeps of the earlier ones.
pub trait Decoder {
    /// What the model keeps of the positions it has run: the keys and values of every layer.
    type Cache;

    /// An empty cache.
    fn new_cache(&self) -> Self::Cache;

    /// The longest context the model sees.
    fn block_size(&self) -> usize;

    /// Whether one more position can run on top of `cache`. MiniGPT's cache is full once it
    /// holds block_size positions, the last its table of positions has: a generation loop must
    /// then rebuild it from the last tokens. A cache that slides (MiniLlama's) always has room.
    fn has_room(&self, cache: &Self::Cache) -> bool;

    /// The logits of `tokens`, the positions that follow those in `cache`, whose keys and values
    /// it adds to `cache`.
    ///
    /// # Shapes
    /// tokens (B, T) → (B, T, vocab_size)
    fn forward_step(&self, tokens: &Tensor, cache: &mut Self::Cache) -> Result<Tensor>;
}

/// One layer's keys and values of the positions run so far, each (B, n, S, h): Task 6's
/// `LayerCache`, which Task 9's GPT-2 is given.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

impl LayerCache {
    /// Positions cached.
    pub fn positions(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    /// Appends the keys and values (B, n, T, h) of new positions after the cached ones;
    /// returns all of them, (B, n, S + T, h).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match (&self.k, &self.v) {
            (Some(old_k), Some(old_v)) => {
                (Tensor::cat(&[old_k, k], 2)?, Tensor::cat(&[old_v, v], 2)?)
            }
            _ => (k.clone(), v.clone()),
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        Ok((k, v))
    }
}

/// Every layer's [`LayerCache`], first layer first.
#[derive(Debug, Clone)]
pub struct Cache {
    pub layers: Vec<LayerCache>,
}

impl Cache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); layers],
        }
    }

    /// Positions cached.
    pub fn positions(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::positions)
    }
}
