//! The layers a task uses but does not write.
//!
//! Each is a struct with a constructor taking its sizes and a [`VarBuilder`], and `impl Module`.
//! Parameters are named after GPT-2 (`weight`, `bias`, `query`, `fc`, ...) and initialised as
//! [`crate::init`] says: dense weights from a normal of variance `1 / fan_in` (Flax's default
//! draws the same variance from a normal truncated at two standard deviations), zero biases,
//! embeddings from a normal of variance `1 / features` (as Flax), LayerNorm scale one and shift
//! zero.

use crate::init::{embed_normal, lecun_normal};
use crate::ops;
use crate::ops::row_norm::RowNorm;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// A fully connected layer: `y = x Wᵀ + b`, applied to the last dimension.
///
/// The weight is stored candle's way, (out, in); Flax stores the transpose, (in, out).
#[derive(Debug, Clone)]
pub struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    /// The layer of these tensors: `weight` (out, in), candle's layout, and a bias (out).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }
}

/// A [`Dense`] layer with a bias, named `weight` and `bias` under `vb`.
pub fn dense(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Dense> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", lecun_normal(in_dim))?;
    let bias = vb.get_with_hints(out_dim, "bias", candle_nn::init::ZERO)?;
    Ok(Dense {
        weight,
        bias: Some(bias),
    })
}

/// A [`Dense`] layer without a bias.
pub fn dense_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Dense> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", lecun_normal(in_dim))?;
    Ok(Dense { weight, bias: None })
}

impl Module for Dense {
    /// # Shapes
    /// (..., in) → (..., out)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // One (rows, in) × (in, out) product over all leading dimensions, fused with the bias.
        ops::linear(xs, &self.weight, self.bias.as_ref())
    }
}

/// A token → vector lookup table, (num_embeddings, features).
pub fn embedding(
    num_embeddings: usize,
    features: usize,
    vb: VarBuilder,
) -> Result<candle_nn::Embedding> {
    let table = vb.get_with_hints((num_embeddings, features), "weight", embed_normal(features))?;
    Ok(candle_nn::Embedding::new(table, features))
}

/// Layer normalisation over the last dimension, with a learned scale and shift, and a real
/// backward pass. candle-nn 0.11's `LayerNorm` (with a bias) takes a fast path on a contiguous
/// input, `candle_nn::ops::layer_norm`, which records no graph node: gradients would stop there
/// without an error.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    /// The op made of other row functions, for [`LayerNorm::with_rows`]; kit's own without.
    rows: Option<RowNorm>,
}

impl LayerNorm {
    /// Flax's default epsilon.
    pub const EPS: f64 = 1e-6;

    /// Scale `weight` (ones) and shift `bias` (zeros) of size `dim`.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_eps(dim, Self::EPS, vb)
    }

    /// [`LayerNorm::new`] with another epsilon: GPT-2's is 1e-5.
    pub fn with_eps(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", candle_nn::init::ONE)?,
            bias: vb.get_with_hints(dim, "bias", candle_nn::init::ZERO)?,
            eps,
            rows: None,
        })
    }

    /// The same parameters, normalised by `rows`, the forward and backward pass of one row as
    /// one op, instead of kit's: Task 5's LayerNorm, whose row functions the learner writes.
    pub fn with_rows(rows: RowNorm, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            rows: Some(rows),
            ..Self::new(dim, vb)?
        })
    }
}

impl Module for LayerNorm {
    /// # Shapes
    /// (..., C) → (..., C)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self.rows {
            Some(rows) => rows.apply(xs, &self.weight, &self.bias, self.eps as f32),
            None => ops::layer_norm(xs, &self.weight, &self.bias, self.eps),
        }
    }
}

/// The position-wise feed-forward network: Dense(4·C), ReLU, Dense(C).
#[derive(Debug, Clone)]
pub struct FeedForward {
    fc: Dense,
    proj: Dense,
}

impl FeedForward {
    /// `fc`: hidden → 4·hidden, `proj`: 4·hidden → hidden, both with biases.
    pub fn new(hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc: dense(hidden, 4 * hidden, vb.pp("fc"))?,
            proj: dense(4 * hidden, hidden, vb.pp("proj"))?,
        })
    }
}

impl Module for FeedForward {
    /// # Shapes
    /// (B, T, C) → (B, T, C)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // fc and its ReLU as one step (ops::linear_relu), then proj.
        let hidden = ops::linear_relu(xs, &self.fc.weight, self.fc.bias.as_ref())?;
        self.proj.forward(&hidden)
    }
}

/// The layers of Task 3's multi-head attention, named as GPT-2's, and its sizes: what the
/// attention does with them is the task's. Tasks 3 and 6 use them, each with its own forward.
#[derive(Debug, Clone)]
pub struct MultiHead {
    /// Dense(hidden → num_heads·head_dim) without bias; head `i` owns columns
    /// `i·head_dim .. (i+1)·head_dim` of its output, and the same for `key` and `value`.
    pub query: Dense,
    pub key: Dense,
    pub value: Dense,
    /// Dense(num_heads·head_dim → num_heads·head_dim) with a bias, after the heads are merged.
    pub proj: Dense,
    pub num_heads: usize,
    pub head_dim: usize,
}

impl MultiHead {
    /// `query`, `key`, `value`: Dense(hidden → num_heads·head_dim) without bias; `proj`:
    /// Dense(num_heads·head_dim → num_heads·head_dim) with a bias.
    pub fn new(hidden: usize, num_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let width = num_heads * head_dim;
        let projection = |name: &str| dense_no_bias(hidden, width, vb.pp(name));
        Ok(Self {
            query: projection("query")?,
            key: projection("key")?,
            value: projection("value")?,
            proj: dense(width, width, vb.pp("proj"))?,
            num_heads,
            head_dim,
        })
    }
}

/// One causal self-attention head, given for Task 1 (the challenge's `AttentionTask1`).
///
/// For an input `x` of shape (B, T, C) and head size D:
///
/// ```text
/// q = x Wqᵀ,  k = x Wkᵀ,  v = x Wvᵀ      each (B, T, D); the weights are (D, C), no bias
/// scores = q kᵀ / √D                     (B, T, T): row t is query t against every key s
/// weights = softmax over s ≤ t           keys after the query get weight 0; rows sum to 1
/// out = weights · v                      (B, T, D)
/// ```
///
/// Task 2 asks you to write exactly this with candle's ops. Here it runs as two fused ops that
/// compute the same thing faster: the three projections as one product with the weights
/// stacked, and the last three lines as one pass per batch row, [`ops::attention_packed`]. Its
/// composed twin, [`ops::composed::attention_packed`], spells them out op by op, and the tests
/// check the fused op against it.
#[derive(Debug, Clone)]
pub struct AttentionHead {
    query: Tensor,
    key: Tensor,
    value: Tensor,
    /// 1/√D.
    scale: f64,
}

impl AttentionHead {
    /// `query`, `key` and `value`: dense weights (head_dim, hidden), without bias.
    pub fn new(hidden: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = |name: &str| {
            vb.pp(name)
                .get_with_hints((head_dim, hidden), "weight", lecun_normal(hidden))
        };
        Ok(Self {
            query: weight("query")?,
            key: weight("key")?,
            value: weight("value")?,
            scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }
}

impl Module for AttentionHead {
    /// # Shapes
    /// (B, T, C) → (B, T, head_dim)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // q, k and v side by side: x times the three weights stacked, (3·D, C). One larger
        // product is faster than three small ones.
        let stacked = Tensor::cat(&[&self.query, &self.key, &self.value], 0)?;
        let qkv = ops::linear(xs, &stacked, None)?; // (B, T, 3·D)
        // softmax(mask(q kᵀ / √D)) v
        ops::attention_packed(&qkv, self.scale) // (B, T, D)
    }
}
