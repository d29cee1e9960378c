//! The operations kit's layers are built from, each a candle custom op with an analytic
//! backward pass:
//!
//! - [`layer_norm`]: layer normalisation over the last dimension;
//! - [`causal_softmax`]: the softmax of attention scores, the future hidden;
//! - [`cross_entropy`]: the loss, mean softmax cross-entropy against integer targets;
//! - [`linear`] and [`linear_relu`]: dense layers, with the ReLU of a feed-forward layer;
//! - [`attention_packed`]: causal attention over q, k and v side by side, as one dense layer
//!   makes them.
//!
//! Built from candle's elementary ops, each of these is a chain of several small tensors
//! forward and as many backward; fused, it is one pass over the data each way, its matrix
//! products split over a thread pool. Each file keeps the elementary version beside the fused
//! one, gathered in [`composed`]: the tests check every fused op against its twin and against
//! finite differences.
//!
//! The names above are the fused ops. Built with kit's `composed` feature, they are the
//! twins instead, for the whole program: `cargo xtask bench train --composed` measures what
//! the fusing is worth that way.
//!
//! Each fused op is written as a kernel, its forward and backward passes over its inputs in an
//! array; kit/src/ops/kernel.rs implements candle's `CustomOp1`, `CustomOp2` and `CustomOp3`
//! once for every kernel. [`row_norm::RowNorm`] is the custom op under [`layer_norm`], made of
//! the forward and backward pass of one row: Task 5's LayerNorm is another one.
//!
//! candle-nn 0.11's own `ops::layer_norm`, `LayerNorm` fast path and `ops::softmax_last_dim`
//! are applied with `apply_op*_no_bwd` and record no graph node: gradients stop at them
//! silently. Nothing here uses them.

// With the `composed` feature the fused kernels are compiled but not called.
#![cfg_attr(feature = "composed", allow(dead_code))]

mod attention;
mod cross_entropy;
mod dense;
mod kernel;
mod layer_norm;
mod matmul;
pub(crate) mod pool;
pub mod row_norm;

pub use pool::{on_pool, threads};
pub mod slices;
mod softmax;

/// The same maths written with candle's elementary, differentiable ops.
pub mod composed {
    pub use super::attention::composed::attention_packed;
    pub use super::cross_entropy::composed::cross_entropy;
    pub use super::dense::composed::{linear, linear_relu};
    pub use super::layer_norm::composed::layer_norm;
    pub use super::softmax::composed::causal_softmax;
}

#[cfg(not(feature = "composed"))]
pub use self::{
    attention::attention_packed,
    cross_entropy::cross_entropy,
    dense::{linear, linear_relu},
    layer_norm::layer_norm,
    softmax::causal_softmax,
};

#[cfg(feature = "composed")]
pub use self::composed::{
    attention_packed, causal_softmax, cross_entropy, layer_norm, linear, linear_relu,
};
