//! # Task 2: causal self-attention by hand
//!
//! In Task 1 the attention head was given. Here you write it from candle's primitives, so that
//! nothing about attention stays a black box.
//!
//! For an input `x` of shape (B, T, C):
//!
//! 1. project: `q = x Wq`, `k = x Wk`, `v = x Wv`, each (B, T, head_dim), no bias;
//! 2. score every pair of positions: `scores = q kᵀ / √head_dim`, (B, T, T);
//!    row `t` says how much position `t` wants to look at each position;
//! 3. mask: position `t` may look only at positions `0..=t`; set the scores of later
//!    positions to −∞, so that they get weight 0;
//! 4. softmax over the last dimension (the keys): each row becomes weights that sum to 1;
//! 5. output = weights · v, (B, T, head_dim): each position's mix of the values it may see.
//!
//! Every step must be differentiable, or nothing before it learns: candle-nn 0.11's
//! `candle_nn::ops::softmax_last_dim` records no backward, and the gradient stops there without
//! an error (its `candle_nn::ops::softmax` over a dimension is written with differentiable ops).
//! `cargo xtask hint task2` gives the candle calls when you want them.
//!
//! Check your work with `cargo xtask check task2`.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use kit::nn::{Dense, dense_no_bias};

/// One head of causal self-attention, written out.
pub struct SelfAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    head_dim: usize,
}

impl SelfAttention {
    /// `query`, `key`, `value`: Dense(hidden → head_dim) without bias.
    pub fn new(hidden: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            query: dense_no_bias(hidden, head_dim, vb.pp("query"))?,
            key: dense_no_bias(hidden, head_dim, vb.pp("key"))?,
            value: dense_no_bias(hidden, head_dim, vb.pp("value"))?,
            head_dim,
        })
    }
}

impl Module for SelfAttention {
    /// # Shapes
    /// (B, T, C) → (B, T, head_dim)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // TODO: the five steps at the top of this file. Shapes: q, k, v (B, T, head_dim);
        // scores and weights (B, T, T); output (B, T, head_dim).
        todo!("SelfAttention::forward: q kᵀ / √head_dim, causal mask, softmax over keys, times v")
    }
}
