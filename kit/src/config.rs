//! The sizes of a MiniGPT, and the challenge's graded settings.

use crate::train::TrainConfig;
use serde::{Deserialize, Serialize};

/// The sizes that define a MiniGPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Number of distinct tokens (65 for tiny Shakespeare).
    pub vocab_size: usize,
    /// Width of the residual stream, `C` in the shape comments.
    pub hidden: usize,
    /// Longest context the model sees, `T` at most; also the number of position embeddings.
    pub block_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Attention heads per block; each head has `hidden / num_heads` dimensions.
    pub num_heads: usize,
}

impl GptConfig {
    /// The model of the challenge's graded Task 1: 4 layers, 4 heads, hidden 128, and the
    /// graded training's block size.
    pub const fn graded(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden: 128,
            block_size: TrainConfig::task1().block_size,
            num_layers: 4,
            num_heads: 4,
        }
    }

    /// Dimensions of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.num_heads
    }

    /// Checks that the sizes fit together, with a message that says which do not.
    pub fn validate(&self) -> Result<(), String> {
        let named = [
            ("vocab_size", self.vocab_size),
            ("hidden", self.hidden),
            ("block_size", self.block_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
        ];
        if let Some((name, _)) = named.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if !self.hidden.is_multiple_of(self.num_heads) {
            return Err(format!(
                "hidden ({}) must be a multiple of num_heads ({}): each head gets hidden / num_heads dimensions",
                self.hidden, self.num_heads
            ));
        }
        Ok(())
    }
}
