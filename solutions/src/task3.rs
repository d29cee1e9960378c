//! # Task 3: multi-head attention with einsum
//!
//! Task 1 ran one `AttentionHead` per head and concatenated them: `num_heads` small projections
//! and `num_heads` small attention products. Here all heads run at once: one projection each
//! for queries, keys and values, of width num_heads·head_dim, split into heads, and the
//! attention maths written as einsum equations over all heads together. Working out those
//! equations is the task: `cargo xtask hint task3` gives them when you want them (hint 2 the
//! index equations, hint 3 the macro calls).
//!
//! Letters used: `b` batch, `t` query position, `s` key position, `n` head, `h` dimension
//! within a head. Each step below says what its result holds, which axes it keeps and which it
//! sums over; writing it as an equation is your part.
//!
//! 1. project: `q`, `k`, `v` = Dense(C → n·h) without bias, each (b, t, n·h). Head `i` owns
//!    the columns `i·h .. (i+1)·h` of each;
//! 2. split the heads: each of `q`, `k`, `v` becomes (b, n, t, h). The n·h columns of every
//!    position are cut into n groups of h, group `i` going to head `i`, and the head axis moves
//!    before the positions, so that each head of each batch row holds a (t, h) matrix of its
//!    own;
//! 3. scores, (b, n, t, s), not yet scaled: for every batch row and head, how well query `t`
//!    matches key `s`, their dot product over the head's h dimensions. The head dimension is
//!    summed away; both positions stay;
//! 4. scale, mask and softmax: each row `t` of a head's scores, divided by √h, becomes weights
//!    over the keys `s ≤ t` that sum to 1; later keys get 0. You wrote all three in Task 2;
//!    here `kit::ops::causal_softmax(&scores, scale)` does them in one fused op, and applies
//!    `scale` itself;
//! 5. weighted sum, (b, n, t, h): for every batch row, head and query `t`, the values of the
//!    keys mixed by row `t`'s weights. The key position is summed away; the head dimension comes
//!    back, from the values;
//! 6. merge the heads: back to (b, t, n·h), head `i` in columns `i·h .. (i+1)·h` again (step 2
//!    undone), then the output Dense(n·h → n·h) with a bias.
//!
//! `candle_einops::einsum!` writes such a sum with the Σ left out: the letters of each input, an
//! arrow, the letters of the result; a letter missing from the result is summed over. A
//! matrix-vector product for each row of a batch, `y[b, r] = Σ_c m[b, r, c] · x[b, c]`, is
//! `einsum!("b r c, b c -> b r", &m, &x)?`. `candle_einops::einops!` moves and groups axes:
//! `einops!("b r c -> b c r", &m)?` swaps the last two, and `einops!("b r c -> b (r c)", &m)?`
//! flattens them into one, `r` the outer factor. Both macros check the equation when you
//! compile, and return `candle_core::Result<Tensor>`.
//!
//! Check your work with `cargo xtask check task3`, and compare its speed with one head at a
//! time with `cargo xtask bench attention`.

use candle_core::{Module, Result, Tensor};
use candle_einops::{einops, einsum};
use candle_nn::VarBuilder;
use kit::nn::MultiHead;
use std::ops::Deref;

/// Causal multi-head self-attention, all heads in one set of tensor products.
///
/// Its layers and sizes are kit's `MultiHead`, given: `self.query`, `self.key`, `self.value`,
/// `self.proj`, `self.num_heads` and `self.head_dim` are its fields, reached through `Deref`.
pub struct MultiHeadAttention(MultiHead);

impl MultiHeadAttention {
    /// `query`, `key`, `value`: Dense(hidden → num_heads·head_dim) without bias; `proj`:
    /// Dense(num_heads·head_dim → num_heads·head_dim) with a bias. Head `i` owns columns
    /// `i·head_dim .. (i+1)·head_dim` of each projection's output.
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        MultiHead::new(hidden, num_heads, head_dim, vb).map(Self)
    }
}

impl Deref for MultiHeadAttention {
    type Target = MultiHead;

    fn deref(&self) -> &MultiHead {
        &self.0
    }
}

impl Module for MultiHeadAttention {
    /// # Shapes
    /// (B, T, C) → (B, T, num_heads·head_dim)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let heads = self.num_heads;
        // (B, T, n·h) → (B, n, T, h): head i owns columns i·h..(i+1)·h.
        let q =
            einops!("b t ({heads} h) -> b {heads} t h", &self.query.forward(xs)?)?.contiguous()?;
        let k =
            einops!("b t ({heads} h) -> b {heads} t h", &self.key.forward(xs)?)?.contiguous()?;
        let v =
            einops!("b t ({heads} h) -> b {heads} t h", &self.value.forward(xs)?)?.contiguous()?;
        let scores = einsum!("b n t h, b n s h -> b n t s", &q, &k)?;
        // Masking, softmax over s and the 1/√h scale in one fused op.
        let weights = kit::ops::causal_softmax(&scores, 1.0 / (self.head_dim as f64).sqrt())?;
        let out = einsum!("b n t s, b n s h -> b n t h", &weights, &v)?;
        self.proj.forward(&einops!("b n t h -> b t (n h)", &out)?)
    }
}
