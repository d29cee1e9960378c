//! MiniGPT's forward pass in f64, from its named parameters: what the learner's model must
//! compute, op by op, and each head's attention weights on the way.

use crate::maths::{
    add, causal_weights_f64, concat_heads, dense_f64, head_rows, layer_norm_f64, mix_values, param,
};
use kit::{GptConfig, SeededVarMap};

/// Where a block's attention keeps each head's projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLayout {
    /// Task 1: `attn.heads.{j}.query.weight`, (D, C) per head.
    PerHead,
    /// Task 3: `attn.query.weight`, (n·D, C), head `j` owning rows `j·D..(j+1)·D`.
    Fused,
}

/// MiniGPT's forward pass in f64 from its named parameters (GPT-2 names, as the Task 1 docs
/// give them): what the learner's model must compute, op by op.
pub fn minigpt_f64(params: &SeededVarMap, cfg: &GptConfig, ids: &[Vec<u32>]) -> Vec<f64> {
    minigpt_f64_traced(params, cfg, ids, HeadLayout::PerHead, &mut |_, _, _, _| {})
}

/// Receives `(layer, head, batch, weights)` from [`minigpt_f64_traced`].
pub type WeightsSink<'a> = dyn FnMut(usize, usize, usize, &[f64]) + 'a;

/// What one block of [`minigpt_f64`] computes, stage by stage, each (B·T, C).
#[derive(Debug, Clone)]
pub struct BlockStages {
    /// The block's input x.
    pub input: Vec<f64>,
    /// ln_1(x).
    pub ln_1: Vec<f64>,
    /// attn(ln_1(x)): the heads concatenated, then proj.
    pub attn: Vec<f64>,
    /// x + attn(ln_1(x)).
    pub after_attn: Vec<f64>,
    /// The block's output: that, plus mlp(ln_2(that)).
    pub output: Vec<f64>,
}

/// Every block's stages in [`minigpt_f64`] on `ids`, in order.
pub fn minigpt_block_stages(
    params: &SeededVarMap,
    cfg: &GptConfig,
    ids: &[Vec<u32>],
) -> Vec<BlockStages> {
    let mut stages = Vec::new();
    minigpt_f64_staged(
        params,
        cfg,
        ids,
        HeadLayout::PerHead,
        &mut |_, _, _, _| {},
        &mut |s| stages.push(s),
    );
    stages
}

/// [`minigpt_f64`], calling `on_weights(layer, head, batch, weights)` with every head's (T, T)
/// attention weights on the way.
pub fn minigpt_f64_traced(
    params: &SeededVarMap,
    cfg: &GptConfig,
    ids: &[Vec<u32>],
    layout: HeadLayout,
    on_weights: &mut WeightsSink,
) -> Vec<f64> {
    minigpt_f64_staged(params, cfg, ids, layout, on_weights, &mut |_| {})
}

fn minigpt_f64_staged(
    params: &SeededVarMap,
    cfg: &GptConfig,
    ids: &[Vec<u32>],
    layout: HeadLayout,
    on_weights: &mut WeightsSink,
    on_block: &mut dyn FnMut(BlockStages),
) -> Vec<f64> {
    let (b, t, c) = (ids.len(), ids[0].len(), cfg.hidden);
    let p = |name: &str| param(params, name);
    let mut x = embed_f64(&p("wte.weight"), &p("wpe.weight"), ids, c);
    for l in 0..cfg.num_layers {
        let stages = block_f64(params, cfg, l, &x, (b, t), layout, on_weights);
        x = stages.output.clone();
        on_block(stages);
    }
    let h = layer_norm_f64(&x, c, &p("ln_f.weight"), &p("ln_f.bias"));
    dense_f64(
        &h,
        b * t,
        &p("lm_head.weight"),
        Some(&p("lm_head.bias")),
        cfg.vocab_size,
    )
}

/// Token plus position embeddings: ids (B, T) → (B, T, C).
fn embed_f64(wte: &[f64], wpe: &[f64], ids: &[Vec<u32>], c: usize) -> Vec<f64> {
    let mut x = Vec::with_capacity(ids.len() * ids[0].len() * c);
    for row in ids {
        for (pos, &tok) in row.iter().enumerate() {
            let tok = tok as usize;
            x.extend((0..c).map(|i| wte[tok * c + i] + wpe[pos * c + i]));
        }
    }
    x
}

/// Block `l` on x (B, T, C): `x + attn(ln_1(x))`, then `+ mlp(ln_2(·))`, every stage kept.
fn block_f64(
    params: &SeededVarMap,
    cfg: &GptConfig,
    l: usize,
    x: &[f64],
    (b, t): (usize, usize),
    layout: HeadLayout,
    on_weights: &mut WeightsSink,
) -> BlockStages {
    let c = cfg.hidden;
    let p = |name: &str| param(params, &format!("h.{l}.{name}"));
    let norm = |x: &[f64], name: &str| {
        layer_norm_f64(
            x,
            c,
            &p(&format!("{name}.weight")),
            &p(&format!("{name}.bias")),
        )
    };
    let dense = |x: &[f64], name: &str, n_out: usize| {
        let bias = p(&format!("{name}.bias"));
        dense_f64(x, b * t, &p(&format!("{name}.weight")), Some(&bias), n_out)
    };
    let ln_1 = norm(x, "ln_1");
    let heads = heads_f64(params, cfg, l, &ln_1, (b, t), layout, on_weights);
    let attn = dense(&heads, "attn.proj", cfg.num_heads * cfg.head_dim());
    let after_attn = add(x, &attn);
    let up: Vec<f64> = dense(&norm(&after_attn, "ln_2"), "mlp.fc", 4 * c)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let output = add(&after_attn, &dense(&up, "mlp.proj", c));
    BlockStages {
        input: x.to_vec(),
        ln_1,
        attn,
        after_attn,
        output,
    }
}

/// Block `l`'s heads on h (B, T, C), side by side before the output projection:
/// (B, T, heads·head_dim). Each head's (T, T) weights go to `on_weights` on the way.
fn heads_f64(
    params: &SeededVarMap,
    cfg: &GptConfig,
    l: usize,
    h: &[f64],
    (b, t): (usize, usize),
    layout: HeadLayout,
    on_weights: &mut WeightsSink,
) -> Vec<f64> {
    let (n, d, c) = (cfg.num_heads, cfg.head_dim(), cfg.hidden);
    let p = |name: &str| param(params, &format!("h.{l}.attn.{name}"));
    let heads: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let w = |m: &str| match layout {
                HeadLayout::PerHead => p(&format!("heads.{j}.{m}.weight")),
                HeadLayout::Fused => head_rows(&p(&format!("{m}.weight")), j, d, c),
            };
            let q = dense_f64(h, b * t, &w("query"), None, d);
            let k = dense_f64(h, b * t, &w("key"), None, d);
            let v = dense_f64(h, b * t, &w("value"), None, d);
            let mut out = vec![0.0; b * t * d];
            for bi in 0..b {
                let r = bi * t * d..(bi + 1) * t * d;
                let scale = 1.0 / (d as f64).sqrt();
                let weights = causal_weights_f64(&q[r.clone()], &k[r.clone()], t, d, scale);
                on_weights(l, j, bi, &weights);
                mix_values(&weights, &v[r.clone()], t, d, &mut out[r]);
            }
            out
        })
        .collect();
    concat_heads(&heads, b * t, d)
}
