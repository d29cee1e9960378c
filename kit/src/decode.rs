//! Generation a position at a time, on top of a cache of the earlier positions: what a model
//! offers a generation loop such as Task 6's `generate_cached`.

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
