//! # Task 3: multi-head attention with einsum
//!
//! Task 1 ran one `AttentionHead` per head and concatenated them: `num_heads` small projections
//! and `num_heads` small attention products. Here all heads run at once: one projection each
//! for queries, keys and values, of width num_heads·head_dim, split into heads, and the
//! attention maths written as einsum equations over all heads together.
//!
//! Letters used: `b` batch, `t` query position, `s` key position, `n` head, `h` dimension
//! within a head.
//!
//! 1. project: `q`, `k`, `v` = Dense(C → n·h) without bias, each (b, t, n·h);
//! 2. split the heads: (b, t, (n h)) → (b, n, t, h), with `einops!`;
//! 3. scores: `einsum!("b n t h, b n s h -> b n t s", ...)`, not yet scaled;
//! 4. scale by 1/√h, causal mask and softmax over `s`: you wrote all three in Task 2, and here
//!    `kit::ops::causal_softmax(&scores, 1.0 / √h)` does them in one fused op. It applies the
//!    scale itself: divide the scores yourself as well and they are scaled twice;
//! 5. weighted sum: `einsum!("b n t s, b n s h -> b n t h", ...)`;
//! 6. merge the heads: (b, n, t, h) → (b, t, (n h)), then the output Dense(n·h → n·h) with a bias.
//!    Merging needs no braces: the macro knows n and h from the input's shape.
//!
//! `candle_einops::{einops, einsum}` are macros: the equation is checked when you compile, and
//! each returns `candle_core::Result<Tensor>`. Sizes that the macro cannot infer go in braces,
//! as in `einops!("b t ({heads} h) -> b {heads} t h", &x)`; braces on the left of a merge,
//! `"b {heads} t h -> ..."`, are a compile error ("Unrecognized charater"). A rearrangement
//! returns a strided view; candle's matrix product wants contiguous operands, so follow it with
//! `.contiguous()?`.
//!
//! Check your work with `cargo xtask check task3`, and measure the speed-up with
//! `cargo xtask bench attention`.

use candle_core::{Module, Result, Tensor};
use candle_einops::{einops, einsum};
use candle_nn::VarBuilder;
use kit::nn::{Dense, dense, dense_no_bias};

/// Causal multi-head self-attention, all heads in one set of tensor products.
pub struct MultiHeadAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    proj: Dense,
    num_heads: usize,
    head_dim: usize,
}

impl MultiHeadAttention {
    /// `query`, `key`, `value`: Dense(hidden → num_heads·head_dim) without bias; `proj`:
    /// Dense(num_heads·head_dim → num_heads·head_dim) with a bias. Head `i` owns columns
    /// `i·head_dim .. (i+1)·head_dim` of each projection's output.
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let width = num_heads * head_dim;
        Ok(Self {
            query: dense_no_bias(hidden, width, vb.pp("query"))?,
            key: dense_no_bias(hidden, width, vb.pp("key"))?,
            value: dense_no_bias(hidden, width, vb.pp("value"))?,
            proj: dense(width, width, vb.pp("proj"))?,
            num_heads,
            head_dim,
        })
    }
}

impl Module for MultiHeadAttention {
    /// # Shapes
    /// (B, T, C) → (B, T, num_heads·head_dim)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // TODO: the six steps at the top of this file: split heads, one einsum for the scores,
        // mask and softmax, one einsum for the weighted sum, merge heads, proj.
        todo!(
            "MultiHeadAttention::forward (einsum): split heads, scores, mask + softmax, weighted sum, merge, proj"
        )
    }
}
