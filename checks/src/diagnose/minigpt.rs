//! Task 1: which of the learner's parts makes MiniGPT's logits wrong, and what it does instead.
//!
//! Each part runs alone, on the input the f64 reference gives it and with the same weights; the
//! first whose output differs is named, with what it should compute. When every part matches,
//! what is left is the model's own forward pass: its embeddings and its end.

use crate::learner::task1::{DecoderBlock, MultiHeadAttention};
use crate::support::{device, max_abs_diff, values};
use candle_core::{Module, Tensor};
use kit::{GptConfig, SeededVarMap};

/// How close a part's output must be to the f64 reference.
const PART_TOLERANCE: f64 = 1e-4;

/// (B·T·C) values as a (B, T, C) tensor.
fn tensor(v: &[f64], b: usize, t: usize, c: usize) -> Tensor {
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(v, (b, t, c), &device()).expect("a (B, T, C) tensor")
}

/// "by 3.2e-1 at batch row 0, position 5": the largest difference and where it is.
fn worst(got: &[f64], want: &[f64], t: usize, c: usize) -> String {
    let (i, d) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0), |best, (i, d)| {
            if d > best.1 || (d.is_nan() && !best.1.is_nan()) {
                (i, d)
            } else {
                best
            }
        });
    format!(
        "by {d:.2e} at batch row {}, position {}",
        i / (t * c),
        (i / c) % t
    )
}

/// Runs the learner's parts one at a time, each on the reference's input for it and with the
/// same weights, and names the first whose output differs from the f64 reference. `logits`
/// are the learner's MiniGPT's on `batch`.
pub fn first_divergence(
    params: &SeededVarMap,
    cfg: &GptConfig,
    batch: &[Vec<u32>],
    logits: &[f64],
) -> String {
    let stages = reference::minigpt_block_stages(params, cfg, batch);
    for (l, stage) in stages.iter().enumerate() {
        if let Some(wrong) = block_divergence(params, cfg, l, stage, (batch.len(), batch[0].len()))
        {
            return wrong;
        }
    }
    rest_of_forward(params, cfg, batch, logits)
}

/// Block `l`'s attention, then the whole block, against the reference's stages: what the
/// first that differs does, or `None` if both match.
fn block_divergence(
    params: &SeededVarMap,
    cfg: &GptConfig,
    l: usize,
    stage: &reference::BlockStages,
    (b, t): (usize, usize),
) -> Option<String> {
    let c = cfg.hidden;
    let vb = params.var_builder(&device());
    let attn = MultiHeadAttention::new(
        c,
        cfg.num_heads,
        cfg.head_dim(),
        vb.pp(format!("h.{l}.attn")),
    )
    .expect("MultiHeadAttention::new");
    let got = values(
        &attn
            .forward(&tensor(&stage.ln_1, b, t, c))
            .expect("MultiHeadAttention::forward"),
    );
    if max_abs_diff(&got, &stage.attn) >= PART_TOLERANCE {
        return Some(format!(
            "h.{l}.attn (MultiHeadAttention) differs {}: it should run every head, join their \
             outputs along the features, head 0 first, and apply proj",
            worst(&got, &stage.attn, t, c)
        ));
    }
    let block =
        DecoderBlock::new(c, cfg.num_heads, vb.pp(format!("h.{l}"))).expect("DecoderBlock::new");
    let x = tensor(&stage.input, b, t, c);
    let got = values(&block.forward(&x).expect("DecoderBlock::forward"));
    if max_abs_diff(&got, &stage.output) < PART_TOLERANCE {
        return None;
    }
    // With the feed-forward layer silenced (its weights 0), a right block is its attention
    // half, x + attn(ln_1(x)).
    let half = with_zeroed(params, &format!("h.{l}.mlp."), || {
        values(&block.forward(&x).expect("DecoderBlock::forward"))
    });
    Some(if max_abs_diff(&half, &stage.after_attn) < PART_TOLERANCE {
        format!(
            "h.{l} (DecoderBlock): its attention half matches x + attn(ln_1(x)); its output \
             differs from that plus mlp(ln_2(that)) {}: is the feed-forward layer fed \
             ln_2 of the attention half's result, and its output added to that result?",
            worst(&got, &stage.output, t, c)
        )
    } else {
        format!(
            "h.{l} (DecoderBlock) differs {}. With its feed-forward layer silenced it should \
             give x + attn(ln_1(x)), and it differs from that {}: look at the attention half \
             (ln_1 before attn, the result added to the un-normalised x) and at the residual \
             that carries it past the feed-forward layer",
            worst(&got, &stage.output, t, c),
            worst(&half, &stage.after_attn, t, c)
        )
    })
}

/// `f()` with every parameter whose name starts with `prefix` set to zero, then put back.
fn with_zeroed<T>(params: &SeededVarMap, prefix: &str, f: impl FnOnce() -> T) -> T {
    let kept: Vec<_> = params
        .named_vars()
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, var)| (var.as_tensor().copy().expect("a copy"), var))
        .collect();
    for (value, var) in &kept {
        var.set(&value.zeros_like().expect("zeros"))
            .expect("a parameter set to zero");
    }
    let out = f();
    for (value, var) in &kept {
        var.set(value).expect("a parameter put back");
    }
    out
}

/// Every part matches: what is left is the rest of MiniGPT::forward. Without position
/// embeddings?
fn rest_of_forward(
    params: &SeededVarMap,
    cfg: &GptConfig,
    batch: &[Vec<u32>],
    logits: &[f64],
) -> String {
    let without_positions = with_zeroed(params, "wpe.weight", || {
        reference::minigpt_f64(params, cfg, batch)
    });
    if max_abs_diff(logits, &without_positions) < 1e-3 {
        return "every MultiHeadAttention and DecoderBlock matches on its own, and the logits are \
                those of a model without position embeddings: add wpe(0..T), (T, C), to the \
                token embeddings of every row"
            .into();
    }
    "every MultiHeadAttention and DecoderBlock matches on its own, so look at the rest of \
     MiniGPT::forward: the embeddings, wte(ids) + wpe(0..T), and the end, lm_head(ln_f(x))"
        .into()
}
