//! Task 6 (and Task 7's sliding cache): what a wrong cache, a wrong cached attention, a wrong
//! cached step or a wrong generation loop computes instead.
//!
//! Each part is run on its own, against the checks' own computation with the same weights, in
//! the order the model uses them: the cache, the attention on top of it, the model's step, the
//! loop. A verdict about a later part is given only when the parts before it are right; until
//! then, the verdict names the first wrong part. For the attention, the checks recompute it in
//! f64 every way a catalogue of mistakes allows (the cache left unseen, the mask not offset or
//! missing, the window never trimmed or trimmed by one, the values rotated too, positions
//! counted from 0 at each step), alone and in pairs, and name the simplest way that reproduces
//! the learner's output.

use crate::support::{max_abs_diff, param, random_tensor, values};
use candle_core::{Result, Tensor};
use kit::SeededVarMap;
use reference::llama::rope_f64;

/// How close the learner's output must be to a recomputation to match it.
const MATCH: f64 = 1e-4;

/// A layer's cache as the probes see it: each call appends keys and values, (B, n, T, h), and
/// returns the kept ones.
pub type Append<'a> = dyn FnMut(&Tensor, &Tensor) -> Result<(Tensor, Tensor)> + 'a;

/// The probe's keys and values: one sequence, 2 heads of 4, every position's rows distinct.
const PROBE_HEADS: usize = 2;
const PROBE_H: usize = 4;

/// Appends steps of `steps` positions to the cache `fresh` makes, which should keep the last
/// `window` positions (all of them when `None`): `None` if every append returns the positions it
/// should, else what the cache does instead. `what` names the learner's function.
pub fn append_probe(
    what: &str,
    fresh: &dyn Fn() -> Box<Append<'static>>,
    steps: &[usize],
    window: Option<usize>,
) -> Option<String> {
    let total: usize = steps.iter().sum();
    let k = random_tensor(71, &[1, PROBE_HEADS, total, PROBE_H]);
    let v = random_tensor(72, &[1, PROBE_HEADS, total, PROBE_H]);
    let mut append = fresh();
    let mut start = 0;
    // Dims of what the cache holds before each step, as the checks expect it.
    let mut held = 0;
    for &len in steps {
        let (new_k, new_v) = (k.narrow(2, start, len).ok()?, v.narrow(2, start, len).ok()?);
        let end = start + len;
        let keep = window.map_or(end, |w| end.min(w));
        let want: Vec<usize> = (end - keep..end).collect();
        let (got_k, got_v) = match append(&new_k, &new_v) {
            Ok(kv) => kv,
            Err(e) => {
                return Some(failed_append(what, &e, held, len, keep));
            }
        };
        for (name, got, all) in [("keys", &got_k, &k), ("values", &got_v, &v)] {
            let expected = [1, PROBE_HEADS, keep, PROBE_H];
            // Another number of positions is read below, position by position.
            let positions_only =
                got.dims().len() == 4 && [0, 1, 3].iter().all(|&d| got.dims()[d] == expected[d]);
            if !positions_only {
                return Some(format!(
                    "after appending {len} positions to {held} cached, {what} returned {name} of \
                     shape {:?}, where (B, n, K, h) = {expected:?} should come back{}",
                    got.dims(),
                    if got.dims().len() == 4 && got.dims()[1] != PROBE_HEADS {
                        ": the new positions were joined along dimension 1, the heads; the \
                         positions are dimension 2"
                    } else {
                        ""
                    }
                ));
            }
            let kept = kept_positions(got, all, end);
            if kept != want.iter().map(|&p| Some(p)).collect::<Vec<_>>() {
                return Some(format!(
                    "after appending {len} positions to {held} cached, {what} returned {name} \
                     that {}",
                    kept_says(&kept, &want, end, held, window)
                ));
            }
        }
        held = keep;
        start = end;
    }
    None
}

/// The sentence for an append that failed: which call, with which shapes, and what candle's
/// own message means there.
fn failed_append(
    what: &str,
    e: &candle_core::Error,
    held: usize,
    len: usize,
    keep: usize,
) -> String {
    let shape = |t: usize| format!("[1, {PROBE_HEADS}, {t}, {PROBE_H}]");
    let text = first_line(e);
    let then = if text.contains("shape mismatch in cat") {
        format!(
            "candle's `cat` needs every dimension but the one it joins along to agree; the \
             cached and the new keys differ in dimension 2, the positions ({held} and {len}), so \
             yours joins along another: join along dimension 2, which makes {}",
            shape(held + len)
        )
    } else {
        format!("It should return the kept {}", shape(keep))
    };
    format!(
        "{what}, appending keys and values of {} to a cache holding {} (the positions on \
         dimension 2), failed: {text}. {then}.",
        shape(len),
        shape(held),
    )
}

/// Which of the appended positions `0..end` of `all` (B = 1, n, T, h) each position of `got`
/// holds, `None` for a row that is none of them.
fn kept_positions(got: &Tensor, all: &Tensor, end: usize) -> Vec<Option<usize>> {
    let (g, a) = (values(got), values(all));
    let total = all.dims()[2];
    let k = got.dims()[2];
    // Position p of head i: the slice i·T·h + p·h of the flattened (1, n, T, h).
    let row = |v: &[f64], len: usize, i: usize, p: usize| -> Vec<f64> {
        v[(i * len + p) * PROBE_H..(i * len + p + 1) * PROBE_H].to_vec()
    };
    (0..k)
        .map(|p| {
            (0..end).find(|&q| {
                (0..PROBE_HEADS)
                    .all(|i| max_abs_diff(&row(&g, k, i, p), &row(&a, total, i, q)) == 0.0)
            })
        })
        .collect()
}

/// What a cache that returned positions `got` did, where `want` should have come back after
/// `end` appended positions, `held` of them cached before the step.
fn kept_says(
    got: &[Option<usize>],
    want: &[usize],
    end: usize,
    held: usize,
    window: Option<usize>,
) -> String {
    let shown = |ps: &[Option<usize>]| {
        let list: Vec<String> = ps
            .iter()
            .map(|p| p.map_or("?".into(), |p| p.to_string()))
            .collect();
        format!("[{}]", list.join(", "))
    };
    let all: Vec<Option<usize>> = (0..end).map(Some).collect();
    let last =
        |n: usize| -> Vec<Option<usize>> { (end.saturating_sub(n)..end).map(Some).collect() };
    let first = |n: usize| -> Vec<Option<usize>> { (0..n.min(end)).map(Some).collect() };
    let positions = format!("hold positions {} of the 0..{end} appended", shown(got));
    let why = match window {
        Some(w) if got == all && end > w => format!(
            "the cache never drops a position: keep the last {w}, the window, and let the oldest go"
        ),
        Some(w) if w > 1 && got == last(w - 1) => format!(
            "it keeps the last {}, one too few: keep the last {w}, the window",
            w - 1
        ),
        Some(w) if got == last(w + 1) => format!(
            "it keeps the last {}, one too many: keep the last {w}, the window",
            w + 1
        ),
        Some(w) if got == first(w) => format!(
            "it keeps the oldest {w} and drops the new ones: drop from the front, the oldest \
             positions, and keep the last {w}"
        ),
        _ if held > 0 && got == last(end - held) => "only the new positions come back: keep the \
             joined keys and values in the cache, and return all of them, the cached ones first"
            .into(),
        _ if got.len() == end
            && got[..end - held] == last(end - held)[..]
            && got[end - held..] == first(held)[..] =>
        {
            "the new positions come before the cached ones: the cached go first, the new after \
             them, in the order of the positions"
                .into()
        }
        _ if got.iter().any(Option::is_none) => "some rows (?) are none of the rows appended: \
             return the keys and values as they were given, joined, not computed from them"
            .into(),
        _ => format!(
            "positions [{}] should come back",
            want.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("{positions}: {why}")
}

/// One attention layer's weights as f64, candle's (out, in) layout.
pub struct AttnWeights {
    /// The query, key, value and output projections.
    pub qkvo: [Vec<f64>; 4],
    /// The output projection's bias (Task 6's `proj` has one, Task 7's `o_proj` none).
    pub o_bias: Option<Vec<f64>>,
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Whether queries and keys are rotated by their positions (Task 7).
    pub rope: bool,
}

impl AttnWeights {
    /// Task 6's attention, Task 3's names (`query`, `key`, `value`, `proj`), under `prefix`
    /// (`""`, or `"h.0.attn."`).
    pub fn task6(params: &SeededVarMap, prefix: &str, heads: usize, head_dim: usize) -> Self {
        let p = |name: &str| param(params, &format!("{prefix}{name}"));
        let qkvo = [
            p("query.weight"),
            p("key.weight"),
            p("value.weight"),
            p("proj.weight"),
        ];
        let hidden = qkvo[0].len() / (heads * head_dim);
        Self {
            qkvo,
            o_bias: Some(p("proj.bias")),
            hidden,
            heads,
            head_dim,
            rope: false,
        }
    }

    /// Task 7's attention, Llama's names (`q_proj`, `k_proj`, `v_proj`, `o_proj`), under
    /// `prefix` (`""`, or `"layers.0.self_attn."`).
    pub fn task7(params: &SeededVarMap, prefix: &str, heads: usize, head_dim: usize) -> Self {
        let p = |name: &str| param(params, &format!("{prefix}{name}.weight"));
        let qkvo = [p("q_proj"), p("k_proj"), p("v_proj"), p("o_proj")];
        let hidden = qkvo[0].len() / (heads * head_dim);
        Self {
            qkvo,
            o_bias: None,
            hidden,
            heads,
            head_dim,
            rope: true,
        }
    }
}

/// Which keys a step's new query sees among those the cache returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepMask {
    /// New query i, at position S + i, sees the kept keys at or before S + i: right.
    Offset,
    /// New query i sees the first i + 1 kept keys, as if it were at position i.
    NotOffset,
    /// Every kept key, the step's later ones too.
    None,
}

/// One way of computing attention in steps on top of a cache: the right one, or mistakes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StepWay {
    /// The new queries see the cached keys, not only their own step's.
    sees_cache: bool,
    mask: StepMask,
    /// How many positions the cache keeps; `None`, all.
    window: Option<usize>,
    /// Which of queries, keys and values are rotated by their positions.
    rotated: [bool; 3],
    /// Each step's positions counted from 0 instead of from the tokens before it.
    from_zero: bool,
}

/// Attention of `x` (B, T, C) computed `way` in steps of `steps` positions, in f64: (B, T, C').
fn attend_in_steps(
    w: &AttnWeights,
    x: &[f64],
    b: usize,
    steps: &[usize],
    way: StepWay,
) -> Vec<f64> {
    let (c, n, d) = (w.hidden, w.heads, w.head_dim);
    let t: usize = steps.iter().sum();
    let width = n * d;
    let mut merged = vec![0.0; b * t * width];
    let scale = 1.0 / (d as f64).sqrt();
    for bi in 0..b {
        let xb = &x[bi * t * c..(bi + 1) * t * c];
        let [q, k, v] = [0, 1, 2].map(|i| reference::dense_f64(xb, t, &w.qkvo[i], None, width));
        for head in 0..n {
            // Row i of a (T, n·d) projection, this head's columns, rotated at `p` if asked.
            let row = |m: &[f64], i: usize, turn: bool, p: usize| -> Vec<f64> {
                let r = &m[i * width + head * d..i * width + (head + 1) * d];
                if turn && w.rope {
                    rope_f64(r, d, p)
                } else {
                    r.to_vec()
                }
            };
            // The cache: (position, key, value) of each kept position, oldest first.
            let mut kept: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::new();
            let mut start = 0;
            for &len in steps {
                let at = |i: usize| if way.from_zero { i - start } else { i };
                if !way.sees_cache {
                    kept.clear();
                }
                for i in start..start + len {
                    kept.push((
                        i,
                        row(&k, i, way.rotated[1], at(i)),
                        row(&v, i, way.rotated[2], at(i)),
                    ));
                }
                if let Some(window) = way.window {
                    let drop = kept.len().saturating_sub(window);
                    kept.drain(..drop);
                }
                for i in start..start + len {
                    let qi = row(&q, i, way.rotated[0], at(i));
                    let visible: Vec<&(usize, Vec<f64>, Vec<f64>)> = kept
                        .iter()
                        .enumerate()
                        .filter(|&(place, (p, _, _))| match way.mask {
                            StepMask::Offset => *p <= i,
                            StepMask::NotOffset => place <= i - start,
                            StepMask::None => true,
                        })
                        .map(|(_, e)| e)
                        .collect();
                    let scores: Vec<f64> = visible
                        .iter()
                        .map(|(_, kj, _)| {
                            qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for e in 0..d {
                        merged[(bi * t + i) * width + head * d + e] = visible
                            .iter()
                            .zip(&scores)
                            .map(|((_, _, vj), s)| (s - max).exp() / total * vj[e])
                            .sum();
                    }
                }
                start += len;
            }
        }
    }
    reference::dense_f64(&merged, b * t, &w.qkvo[3], w.o_bias.as_deref(), c)
}

/// Every way the catalogue allows for attention whose cache keeps `window` positions, fewest
/// mistakes first; the first is the right one.
fn step_ways(rope: bool, window: Option<usize>) -> Vec<(usize, StepWay)> {
    let right = StepWay {
        sees_cache: true,
        mask: StepMask::Offset,
        window,
        rotated: [true, true, false],
        from_zero: false,
    };
    let windows: Vec<Option<usize>> = match window {
        Some(w) => vec![Some(w), None, Some(w.saturating_sub(1).max(1)), Some(w + 1)],
        None => vec![None],
    };
    let rotations: Vec<[bool; 3]> = if rope {
        vec![
            [true, true, false],
            [true, true, true],
            [false, true, false],
            [true, false, false],
        ]
    } else {
        vec![[true, true, false]]
    };
    let mut ways = Vec::new();
    for sees_cache in [true, false] {
        for mask in [StepMask::Offset, StepMask::NotOffset, StepMask::None] {
            for &window in &windows {
                for &rotated in &rotations {
                    for from_zero in if rope { vec![false, true] } else { vec![false] } {
                        let way = StepWay {
                            sees_cache,
                            mask,
                            window,
                            rotated,
                            from_zero,
                        };
                        let count = usize::from(sees_cache != right.sees_cache)
                            + usize::from(mask != right.mask)
                            + usize::from(window != right.window)
                            + usize::from(rotated != right.rotated)
                            + usize::from(from_zero);
                        ways.push((count, way));
                    }
                }
            }
        }
    }
    ways.sort_by_key(|(count, _)| *count);
    ways
}

/// The sentences for what `way` does that `right` does not.
fn step_way_says(way: StepWay, right: StepWay) -> Vec<String> {
    let mut says = Vec::new();
    if !way.sees_cache {
        says.push(
            "steps that attend to their own new positions only, as if the cache were empty: \
             the new queries must see the cached keys too"
                .to_string(),
        );
    }
    match way.mask {
        StepMask::Offset => {}
        StepMask::NotOffset => says.push(
            "new queries that see the first i + 1 keys, as if new query i were at position i: \
             it is at position S + i, and sees every cached key and the new ones up to itself \
             (kit::ops::causal_softmax masks a (T, S + T) matrix exactly so)"
                .to_string(),
        ),
        StepMask::None => says.push(
            "new queries that see every new key of their step, later ones too: within a step \
             of several positions, mask the keys after each query"
                .to_string(),
        ),
    }
    if way.window != right.window {
        let w = right.window.unwrap_or(0);
        says.push(match way.window {
            None => format!("a cache that never drops a position: keep the last {w}"),
            Some(k) if k < w => format!("a cache that keeps {k} positions, one too few: keep {w}"),
            Some(k) => format!("a cache that keeps {k} positions, one too many: keep {w}"),
        });
    }
    let [q, k, v] = way.rotated;
    if v {
        says.push(
            "the values rotated as well as the queries and keys: only queries and keys carry \
             positions, the values are mixed as they are"
                .to_string(),
        );
    }
    if !q {
        says.push("the queries not rotated: rotate both queries and keys".to_string());
    }
    if !k {
        says.push("the keys not rotated: rotate both queries and keys".to_string());
    }
    if way.from_zero {
        says.push(
            "each step's queries and keys rotated from position 0: the new positions are \
             start..start + T, after the tokens seen before them"
                .to_string(),
        );
    }
    says
}

/// An attention on top of its own cache: each call runs new positions `x` (B, T, C), starting
/// at position `start`, on top of what it cached.
pub type AttentionSteps<'a> = dyn FnMut(&Tensor, usize) -> Result<Tensor> + 'a;

/// A cached attention as the probes see it: `fresh()` makes one on an empty cache.
pub struct StepSubject<'a> {
    /// The learner's function, as the verdict names it.
    pub what: &'a str,
    pub fresh: &'a dyn Fn() -> Box<AttentionSteps<'a>>,
    pub weights: AttnWeights,
    /// Positions the cache keeps (Task 7's window); `None`, all.
    pub window: Option<usize>,
}

/// The learner's attention run on `x` (B, T, C) in steps of `steps` positions, concatenated;
/// or what failed.
pub fn run_in_steps(
    s: &StepSubject,
    x: &Tensor,
    steps: &[usize],
) -> std::result::Result<Vec<f64>, String> {
    let mut step = (s.fresh)();
    let mut outs = Vec::new();
    let mut start = 0;
    for &len in steps {
        let part = x.narrow(1, start, len).map_err(|e| e.to_string())?;
        let out = step(&part, start).map_err(|e| {
            format!(
                "{} of {} on top of {start} cached failed: {}",
                s.what,
                plural(len, "new position"),
                first_line(&e)
            )
        })?;
        outs.push(out);
        start += len;
    }
    Tensor::cat(&outs, 1)
        .map(|t| values(&t))
        .map_err(|e| format!("{}'s outputs cannot be joined: {}", s.what, first_line(&e)))
}

/// Why the learner's attention, which gave `got` for `x` (B, T, C) in steps of `steps`
/// positions, is not right: `None` if it is, else the mistakes it matches, or what it does.
pub fn attention_in_steps(
    s: &StepSubject,
    x: &Tensor,
    steps: &[usize],
    got: &[f64],
) -> Option<String> {
    let b = x.dims()[0];
    let xv = values(x);
    let ways = step_ways(s.weights.rope, s.window);
    let right = ways[0].1;
    let want = attend_in_steps(&s.weights, &xv, b, steps, right);
    if got.len() == want.len() && max_abs_diff(got, &want) < MATCH {
        return None;
    }
    if got.len() != want.len() {
        return Some(format!(
            "{} gave {} values for {b}·{} positions, where (B, T, C) holds {}",
            s.what,
            got.len(),
            steps.iter().sum::<usize>(),
            want.len()
        ));
    }
    let found = ways.iter().skip(1).find(|(_, way)| {
        max_abs_diff(got, &attend_in_steps(&s.weights, &xv, b, steps, *way)) < MATCH
    });
    if let Some((_, way)) = found {
        return Some(format!(
            "it matches {}",
            step_way_says(*way, right).join("; and ")
        ));
    }
    // Which step first differs.
    let (t, width) = (
        steps.iter().sum::<usize>(),
        got.len() / (b * steps.iter().sum::<usize>()),
    );
    let mut start = 0;
    for &len in steps {
        let rows = |v: &[f64]| -> Vec<f64> {
            (0..b)
                .flat_map(|bi| v[(bi * t + start) * width..(bi * t + start + len) * width].to_vec())
                .collect()
        };
        if max_abs_diff(&rows(got), &rows(&want)) >= MATCH {
            return Some(if start == 0 {
                format!(
                    "even the first step, {len} positions on an empty cache, differs: there it is \
                     plain causal multi-head attention{}",
                    if s.weights.rope {
                        ", with queries and keys rotated at positions 0..T"
                    } else {
                        ", as in Task 3"
                    }
                )
            } else {
                format!(
                    "the steps before position {start} match and the step of {len} positions \
                     on top of {start} cached does not: do its queries see every kept key at \
                     or before their position (query i of T new ones is at position S + i), \
                     and no later one?"
                )
            });
        }
        start += len;
    }
    None
}

/// A cached model as the probes see it: `fresh()` makes one on an empty cache, and each call
/// runs new tokens on top of it, returning their logits, (1, T, V).
pub type TokenSteps<'a> = dyn FnMut(&[u32]) -> Result<Tensor> + 'a;

/// The learner's model run on `tokens` in steps of `steps` tokens, the logits joined; or what
/// failed.
pub fn run_tokens_in_steps(
    what: &str,
    step: &mut TokenSteps,
    tokens: &[u32],
    steps: &[usize],
) -> std::result::Result<Vec<f64>, String> {
    let mut got = Vec::new();
    let mut start = 0;
    for &len in steps {
        let logits = step(&tokens[start..start + len]).map_err(|e| {
            format!(
                "{what} of {} on top of {start} cached failed: {}",
                plural(len, "new token"),
                first_line(&e)
            )
        })?;
        got.extend(values(&logits));
        start += len;
    }
    Ok(got)
}

/// Each step of `steps` positions numbered from 0, as a model that ignores the cache's length
/// numbers them.
pub fn positions_from_zero(steps: &[usize]) -> Vec<u32> {
    steps.iter().flat_map(|&len| 0..len as u32).collect()
}

/// Why a cached MiniGPT whose steps of `steps` tokens gave `got` differs from the checks' own
/// uncached model `reference` (Task 3's attention, same parameters), once its cache and its
/// attention are known to be right: what it computes instead.
pub fn minigpt_steps<A: candle_core::Module, N: candle_core::Module>(
    got: &[f64],
    reference: &reference::RefGpt<A, N>,
    tokens: &[u32],
    steps: &[usize],
) -> String {
    let ids = |t: &[u32]| Tensor::new(t, &crate::support::device()).and_then(|t| t.unsqueeze(0));
    let all: usize = steps.iter().sum();
    let tokens = &tokens[..all];
    let logits = |positions: &[u32]| -> Vec<f64> {
        ids(tokens)
            .and_then(|t| reference.forward_at(&t, positions))
            .map(|l| values(&l))
            .unwrap_or_default()
    };
    // Each step on its own, at positions `at(start, len)`.
    let alone = |from_zero: bool| -> Vec<f64> {
        let mut out = Vec::new();
        let mut start = 0;
        for &len in steps {
            let positions: Vec<u32> = if from_zero {
                (0..len as u32).collect()
            } else {
                (start as u32..(start + len) as u32).collect()
            };
            if let Ok(l) =
                ids(&tokens[start..start + len]).and_then(|t| reference.forward_at(&t, &positions))
            {
                out.extend(values(&l));
            }
            start += len;
        }
        out
    };
    let right = logits(&(0..all as u32).collect::<Vec<_>>());
    let close = |want: &[f64]| want.len() == got.len() && max_abs_diff(got, want) < MATCH;
    let v = right.len() / all.max(1);
    let first = steps[0] * v;
    if got.len() == right.len() && max_abs_diff(&got[..first], &right[..first]) >= MATCH {
        return "the logits of the first step, on an empty cache, differ already: there \
             forward_step is MiniGPT's forward, the embeddings of the tokens plus wpe of 0..T, \
             each block x + attn(ln_1(x)) then x + mlp(ln_2(x)), then ln_f and lm_head"
            .into();
    }
    if close(&alone(true)) {
        "each later step gives the logits of its tokens alone, at positions from 0, as if \
         the cache were empty: the new tokens are at positions S..S + T (wpe of S.., not of 0..), \
         and each block's attention must run on top of its own layer of the cache, the one \
         that keeps growing (&mut cache.layers[i], not a copy)"
            .into()
    } else if close(&logits(&positions_from_zero(steps))) {
        "it matches the new tokens embedded at positions 0..T at every step, where they are at \
         S..S + T: the position embeddings of a step start at cache.positions(), the positions \
         cached before it"
            .into()
    } else if close(&alone(false)) {
        "each later step sees only its own tokens, at the right positions: the cache did not \
         keep the earlier steps' keys; pass each block its own layer of the cache, \
         &mut cache.layers[i], not a copy or a new one"
            .into()
    } else {
        "the first step matches and later steps do not, though your cache and your attention \
         are right on their own: look at what forward_step passes them, the positions of the \
         new tokens (S..S + T) and each block's own layer of the cache"
            .into()
    }
}

/// What the positions run by each call of the model during a generation, `calls`, say, where
/// the loop should run `want`: a prompt of `p` tokens, `n` new ones, block_size `block`.
pub fn calls_say(calls: &[usize], want: &[usize], p: usize, n: usize, block: usize) -> String {
    let head = format!(
        "your generate_cached ran the model on {calls:?} positions per call, where a prompt of \
         {p}, {} and block_size {block} run {want:?}",
        plural(n, "new token")
    );
    // Whether a token ran alone on a cache that was already full.
    let mut cached = 0;
    let ran_on_full = calls.iter().enumerate().any(|(i, &c)| {
        let full = i > 0 && c == 1 && cached >= block;
        cached = if i > 0 && c == 1 { cached + 1 } else { c };
        full
    });
    let why = if calls.len() == want.len() + 1 && calls[..want.len()] == *want {
        "the last new token ran too: nothing asks for the logits after it, so sample it and stop"
            .to_string()
    } else if p > block && calls.first() == Some(&p) {
        format!(
            "the whole prompt of {p} ran at once: the model has positions for {block}, so run its \
             last {block} tokens only"
        )
    } else if calls.len() == want.len()
        && calls.len() > 1
        && calls[1..]
            .iter()
            .enumerate()
            .all(|(i, &c)| c == (p.min(block) + i + 1).min(block))
    {
        "after the prompt, each call ran the whole text again: run only the new token, one \
         position, on top of the cache"
            .to_string()
    } else if ran_on_full {
        format!(
            "a new token ran on top of a full cache of {block} positions: once has_room is \
             false, start a new cache and run the last {block} tokens"
        )
    } else if calls.contains(&(block - 1)) && !want.contains(&(block - 1)) {
        format!(
            "the cache was rebuilt from the last {} tokens, one fewer than block_size: rebuild it \
             from the last {block}",
            block - 1
        )
    } else if calls.len() < want.len() {
        "fewer calls than tokens to write: each new token but the last runs once, and its logits \
         give the next"
            .to_string()
    } else {
        "the prompt's last block_size tokens at most run once, then each new token but the last \
         runs alone; once the cache holds block_size positions (has_room is false), a new cache \
         is filled from the last block_size tokens"
            .to_string()
    };
    format!("{head}: {why}")
}

/// The first line of an error: candle's errors carry a backtrace after it when
/// RUST_BACKTRACE is set.
pub fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

/// When `e` is an error of candle's or kit's own, raised by an operation rather than by a check
/// of the learner's: which operation.
pub fn incidental(e: &candle_core::Error) -> Option<&'static str> {
    let text = e.to_string();
    if text.contains("invalid index") {
        Some("candle's lookup of a row that the table of position embeddings does not have")
    } else if text.contains("causal_softmax needs at least as many keys as queries") {
        Some("kit's causal_softmax, given more queries than the cache kept keys")
    } else if text.contains("shape mismatch") || text.contains("cannot broadcast") {
        Some("a shape mismatch inside candle")
    } else {
        None
    }
}

/// `text` with its first letter a capital, to follow a full stop.
pub fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// "1 position", "3 positions": `n` of `what`, in the number it takes.
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The positions each call of the model runs when `generate_cached` writes `n` tokens from a
/// prompt of `p` with block_size `block`: the prompt's last block_size tokens once, then one
/// position for each new token but the last, or block_size when the cache is full and rebuilt.
pub fn expected_calls(p: usize, n: usize, block: usize) -> Vec<usize> {
    let mut cached = p.min(block);
    let mut calls = vec![cached];
    for _ in 1..n {
        if cached < block {
            cached += 1;
            calls.push(1);
        } else {
            calls.push(block);
        }
    }
    calls
}
