//! Tasks 2 and 3: what a wrong attention actually does.
//!
//! When the learner's attention (Task 2's single head, Task 3's heads) differs from the
//! reference, the checks do not list places to look: they find out what it computes. First they
//! recompute attention in f64 every way a catalogue of deviations allows (the scale of the
//! scores, the mask, the axis of the softmax, which projection plays which role, and in Task 3
//! how the heads are split and merged and whether the output projection is applied), alone and
//! in combination, and name the simplest combination that reproduces the learner's output. If
//! none does, they probe the attention as a black box, with the learner's own weights: what a
//! lone position returns, whether each query's weights sum to one, which key positions
//! influence which outputs (drawn beside the causal triangle), and which scale of the scores
//! fits best.

use crate::support::{device, max_abs_diff, random_tensor, values};
use candle_core::Tensor;
use kit::SeededVarMap;
use reference::attention::{Mask, RIGHT, Scale, Way, Weights, attend};

/// How close the learner's output must be to a recomputation to match it.
const MATCH: f64 = 1e-4;
/// Positions of the probe input: enough that different mistakes give different outputs.
const PROBE_T: usize = 6;

/// The learner's attention, as the probes see it.
pub struct Subject<'a> {
    /// The learner's forward pass, (B, T, C) → (B, T, heads·head_dim), reading its weights from
    /// `params` each time it runs.
    pub forward: &'a dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    /// Its parameters: `query.weight`, `key.weight`, `value.weight` ((heads·head_dim, C)),
    /// and with `heads` > 1 also `proj.weight` and `proj.bias`.
    pub params: &'a SeededVarMap,
    pub heads: usize,
    pub head_dim: usize,
}

/// The weights the recomputations read, as f64, candle's (out, in) layout.
fn weights(s: &Subject) -> Weights {
    let p = |name: &str| crate::support::param(s.params, name);
    let qkv = [p("query.weight"), p("key.weight"), p("value.weight")];
    let c = qkv[0].len() / (s.heads * s.head_dim);
    let proj = (s.heads > 1).then(|| (p("proj.weight"), p("proj.bias")));
    Weights { qkv, proj, c }
}

/// Every way the catalogue allows, simplest first (fewest mistakes).
fn catalogue(multi: bool) -> Vec<Way> {
    let scales = [
        Scale::InvSqrtD,
        Scale::One,
        Scale::InvD,
        Scale::InvSqrtC,
        Scale::SqrtD,
    ];
    let masks = [
        Mask::Causal,
        Mask::None,
        Mask::HidesSelf,
        Mask::SeesNext,
        Mask::Transposed,
        Mask::Zero,
        Mask::AfterSoftmax,
    ];
    // Every assignment of the three projections to the three roles, a projection used twice
    // included.
    let roles: Vec<[usize; 3]> = (0..27).map(|r| [r / 9, r / 3 % 3, r % 3]).collect();
    let flags: &[bool] = if multi { &[false, true] } else { &[false] };
    let mut ways = Vec::new();
    for &scale in &scales {
        for &mask in &masks {
            for over_queries in [false, true] {
                for &roles in &roles {
                    for &split_interleaved in flags {
                        for &merge_interleaved in flags {
                            for proj in [true, false].into_iter().filter(|p| multi || *p) {
                                ways.push(Way {
                                    scale,
                                    mask,
                                    over_queries,
                                    roles,
                                    split_interleaved,
                                    merge_interleaved,
                                    proj,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    ways.sort_by_key(|w| mistakes(w, multi).len());
    ways
}

/// What `way` does differently from the right way, each in a sentence.
fn mistakes(way: &Way, multi: bool) -> Vec<String> {
    let mut said: Vec<String> = scale_mistake(way.scale, multi).into_iter().collect();
    said.extend(mask_mistake(way.mask).map(String::from));
    if way.over_queries {
        said.push("a softmax over the queries: normalise over the keys, the last dimension".into());
    }
    said.extend(roles_mistake(way.roles));
    if way.split_interleaved {
        said.push(
            "heads split the other way round: head i should take the consecutive columns \
             i·head_dim..(i+1)·head_dim of each projection, the head the outer factor of the \
             split"
                .into(),
        );
    }
    if way.merge_interleaved {
        said.push(
            "heads merged the other way round: merge with the head as the outer factor, as you \
             split, so that head i's features land in columns i·head_dim..(i+1)·head_dim"
                .into(),
        );
    }
    if multi && !way.proj {
        said.push("no output projection: apply proj to the merged heads".into());
    }
    said
}

/// What a wrong factor on the scores is, in a sentence; nothing for the right one.
fn scale_mistake(scale: Scale, multi: bool) -> Option<String> {
    Some(match scale {
        Scale::InvSqrtD => return None,
        Scale::One => "scores that are not scaled: divide them by √head_dim".into(),
        Scale::InvD if multi => "scores scaled by 1/head_dim instead of 1/√head_dim: \
             kit::ops::causal_softmax applies the scale you pass it, so pass 1/√h and do not \
             divide the scores yourself as well"
            .into(),
        Scale::InvD => "scores divided by head_dim: divide by its square root instead".into(),
        Scale::InvSqrtC => "scores divided by √C, the width of the input, instead of \
             √head_dim, the width of a query"
            .into(),
        Scale::SqrtD => "scores multiplied by √head_dim instead of divided by it".into(),
        Scale::Other(f) => format!("scores scaled by {f:.3}"),
    })
}

/// What a wrong mask is, in a sentence; nothing for the causal one.
fn mask_mistake(mask: Mask) -> Option<&'static str> {
    match mask {
        Mask::Causal => None,
        Mask::None => Some("attention without the causal mask: hide every key after the query"),
        Mask::HidesSelf => Some(
            "a mask that hides each position from itself: keep keys j ≤ i, the diagonal included",
        ),
        Mask::SeesNext => {
            Some("a mask that lets each position see one step ahead: keep keys j ≤ i")
        }
        Mask::Transposed => Some(
            "the mask the wrong way round: query i sees keys j ≥ i, the future, instead of j ≤ i",
        ),
        Mask::Zero => Some(
            "hidden scores set to 0 instead of −∞: softmax still gives them a weight of e⁰ \
             against the others",
        ),
        Mask::AfterSoftmax => Some(
            "the mask applied after the softmax: the weights of later keys set to 0 without \
             renormalising, so a row no longer sums to 1; mask the scores, then softmax",
        ),
    }
}

/// What projections in the wrong roles do, in a sentence; nothing for the right roles.
fn roles_mistake(roles: [usize; 3]) -> Option<String> {
    let names = ["query", "key", "value"];
    Some(match roles {
        [0, 1, 2] => return None,
        [1, 0, 2] => "k qᵀ: the scores are q kᵀ, row i for query i".into(),
        [0, 2, 1] => "keys and values swapped: the key projection's output is mixed, and the \
             value projection's is scored"
            .into(),
        [0, 1, r] => format!(
            "the {} projection's output mixed by the weights: the weighted sum is over the \
             values, v = x Wvᵀ",
            names[r]
        ),
        [r0, r1, r2] => format!(
            "projections in the wrong roles: the {} weights make the queries, the {} weights \
             the keys and the {} weights the values",
            names[r0], names[r1], names[r2]
        ),
    })
}

/// Why the learner's attention differs from the reference: what it matches, or what the probes
/// find. One paragraph, its first line the headline.
pub fn diagnose(s: &Subject) -> String {
    let w = weights(s);
    let (n, d) = (s.heads, s.head_dim);
    let x = random_tensor(97, &[1, PROBE_T, w.c]);
    let got = match (s.forward)(&x) {
        Ok(y) => values(&y),
        Err(e) => {
            return format!(
                "its forward pass fails on a (1, {PROBE_T}, {}) input: {e}",
                w.c
            );
        }
    };
    if got.len() != PROBE_T * n * d {
        return format!(
            "it returns {} values for a (1, {PROBE_T}, {}) input, not 1 × {PROBE_T} × {}",
            got.len(),
            w.c,
            n * d
        );
    }
    let xv = values(&x);
    let matches = |way: Way| same(&got, &attend(way, &w, &xv, (1, PROBE_T), n, d));
    let multi = n > 1 || w.proj.is_some();
    if let Some(way) = catalogue(multi).into_iter().find(|&way| matches(way)) {
        let said = mistakes(&way, multi);
        if said.is_empty() {
            return "it matches the reference on the probe input: the difference shows on \
                    other inputs only"
                .into();
        }
        return format!("it matches {}.", said.join("; and "));
    }
    probes(s, &w, &got)
}

/// Whether two outputs agree to [`MATCH`], a NaN agreeing with a NaN: a mask that hides every
/// key of a row gives NaN there, and so must its recomputation.
fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || (x - y).abs() < MATCH)
}

/// Findings of the black-box probes, for an attention the catalogue does not reproduce.
fn probes(s: &Subject, w: &Weights, got: &[f64]) -> String {
    let (n, d, c) = (s.heads, s.head_dim, w.c);
    let mut found = Vec::new();
    if let Some(p) = got.iter().position(|v| !v.is_finite()) {
        found.push(format!(
            "its output holds NaN or infinity (first at position {}): is there a query whose \
             mask hides every key? A position must see itself",
            p / (n * d)
        ));
    }
    // The sums are read off the value vector: only when a lone position returns it.
    match lone_position(s, w) {
        Some(lone) => found.push(lone),
        None => found.extend(weight_sums(s, w)),
    }
    if let Some(grid) = influence(s, c) {
        found.push(grid);
    } else if found.is_empty()
        && let Some(scale) = fitted_scale(s, w, got)
    {
        found.push(scale);
    }
    if found.is_empty() {
        found.push(
            "a lone position returns its value vector, each query's weights sum to one over \
             the keys it may see, and only earlier keys influence a query, yet no scale of \
             the scores reproduces your output: look at how the weighted values are gathered \
             and, with several heads, at which columns each head reads and writes"
                .into(),
        );
    }
    found.join("\n")
}

/// The learner's forward on `x`, as f64.
fn run(s: &Subject, x: &Tensor) -> Option<Vec<f64>> {
    (s.forward)(x).ok().map(|y| values(&y))
}

/// Sets the output projection to the identity for the duration of `f`: the probes then read
/// the merged heads directly.
fn without_proj<T>(s: &Subject, f: impl FnOnce() -> T) -> T {
    let vars = s.params.named_vars();
    let find = |name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let (Some(pw), Some(pb)) = (find("proj.weight"), find("proj.bias")) else {
        return f();
    };
    let kept = (pw.as_tensor().copy(), pb.as_tensor().copy());
    let (Ok(kw), Ok(kb)) = kept else { return f() };
    let width = kw.dim(0).unwrap_or(0);
    let eye = Tensor::eye(width, candle_core::DType::F32, &device());
    let zeros = kb.zeros_like();
    if let (Ok(eye), Ok(zeros)) = (eye, zeros) {
        let _ = pw.set(&eye);
        let _ = pb.set(&zeros);
    }
    let out = f();
    let _ = pw.set(&kw);
    let _ = pb.set(&kb);
    out
}

/// At a lone position (T = 1) attention returns that position's value vector, whatever the
/// scale and the mask: which projection does the learner's return?
fn lone_position(s: &Subject, w: &Weights) -> Option<String> {
    let (n, d, c) = (s.heads, s.head_dim, w.c);
    let x = random_tensor(98, &[1, 1, c]);
    let got = without_proj(s, || run(s, &x))?;
    let xv = values(&x);
    let projected = |r: usize| -> Vec<f64> { reference::dense_f64(&xv, 1, &w.qkv[r], None, n * d) };
    if max_abs_diff(&got, &projected(2)) < MATCH {
        return None;
    }
    let names = ["query", "key"];
    Some(
        match (0..2).find(|&r| max_abs_diff(&got, &projected(r)) < MATCH) {
            Some(r) => format!(
                "a lone position (T = 1) returns its {} projection, not its value projection: the \
             weights must mix the values, v = x Wvᵀ",
                names[r]
            ),
            None => "a lone position (T = 1) should return its own value vector, x Wvᵀ (its only \
                 key gets weight 1), and does not"
                .into(),
        },
    )
}

/// With every position the same, each query's scores are all equal, and its output is the sum
/// of its weights times the value vector: the sums, which should be 1.
fn weight_sums(s: &Subject, w: &Weights) -> Option<String> {
    let (n, d, c) = (s.heads, s.head_dim, w.c);
    let t = PROBE_T;
    let row = random_tensor(99, &[1, 1, c]);
    let x = row.broadcast_as((1, t, c)).ok()?.contiguous().ok()?;
    let got = without_proj(s, || run(s, &x))?;
    let v = reference::dense_f64(&values(&row), 1, &w.qkv[2], None, n * d);
    let norm: f64 = v.iter().map(|a| a * a).sum();
    let sums: Vec<f64> = (0..t)
        .map(|p| {
            let out = &got[p * n * d..(p + 1) * n * d];
            out.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>() / norm
        })
        .collect();
    if sums.iter().all(|r| (r - 1.0).abs() < 1e-3) {
        return None;
    }
    let shown: Vec<String> = sums.iter().map(|r| format!("{r:.2}")).collect();
    Some(format!(
        "each query's weights should sum to 1 over the keys; with all {t} positions alike, \
         yours sum to [{}] for queries 0..{t}: normalise over the keys a query may see (the \
         last dimension), after masking",
        shown.join(", ")
    ))
}

/// Which key positions change which outputs, drawn beside the causal triangle; `None` when it
/// is the causal triangle.
fn influence(s: &Subject, c: usize) -> Option<String> {
    let t = PROBE_T;
    let x = random_tensor(100, &[1, t, c]);
    let base = run(s, &x)?;
    let width = base.len() / t;
    let xv: Vec<f32> = values(&x).into_iter().map(|v| v as f32).collect();
    let mut seen = vec![vec![false; t]; t];
    for j in 0..t {
        // Position j moved, every other position as it was.
        let mut moved = xv.clone();
        for (k, v) in moved[j * c..(j + 1) * c].iter_mut().enumerate() {
            *v += 0.5 + 0.1 * k as f32;
        }
        let after = run(s, &Tensor::from_vec(moved, (1, t, c), &device()).ok()?)?;
        for (i, line) in seen.iter_mut().enumerate() {
            let r = i * width..(i + 1) * width;
            line[j] = max_abs_diff(&base[r.clone()], &after[r]) > 1e-6;
        }
    }
    let right = |i: usize, j: usize| j <= i;
    if (0..t).all(|i| (0..t).all(|j| seen[i][j] == right(i, j))) {
        return None;
    }
    let mut grid = format!("  {:<w$}  causal", "yours", w = t);
    for (i, line) in seen.iter().enumerate() {
        let mark = |b: bool| if b { "x" } else { "." };
        let mine: Vec<&str> = line.iter().map(|&b| mark(b)).collect();
        let want: Vec<&str> = (0..t).map(|j| mark(right(i, j))).collect();
        grid.push_str(&format!("\n  {}  {}", mine.join(""), want.join("")));
    }
    let future = (0..t).any(|i| (i + 1..t).any(|j| seen[i][j]));
    let headline = if future {
        "later positions change earlier outputs: the future leaks in through the mask (or the \
         axis of the softmax)"
    } else {
        "some keys a query may see do not change its output: the mask hides too much"
    };
    Some(format!(
        "{headline}. Row: query, column: key; x where moving the key changes the query's \
         output:\n{grid}"
    ))
}

/// The factor on q·kᵀ that best reproduces the learner's output, when it is not 1/√head_dim.
fn fitted_scale(s: &Subject, w: &Weights, got: &[f64]) -> Option<String> {
    let (n, d) = (s.heads, s.head_dim);
    let x = values(&random_tensor(97, &[1, PROBE_T, w.c]));
    let diff = |f: f64| {
        let way = Way {
            scale: Scale::Other(f),
            ..RIGHT
        };
        max_abs_diff(got, &attend(way, w, &x, (1, PROBE_T), n, d))
    };
    // A coarse sweep over 1e-3..1e3, then golden sections around the best.
    let (mut lo, mut hi) = (-3.0f64, 3.0f64);
    let best = (0..=60)
        .map(|i| lo + (hi - lo) * i as f64 / 60.0)
        .min_by(|a, b| diff(10f64.powf(*a)).total_cmp(&diff(10f64.powf(*b))))?;
    (lo, hi) = (best - 0.1, best + 0.1);
    for _ in 0..40 {
        let (m1, m2) = (lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618);
        if diff(10f64.powf(m1)) < diff(10f64.powf(m2)) {
            hi = m2;
        } else {
            lo = m1;
        }
    }
    let f = 10f64.powf((lo + hi) / 2.0);
    (diff(f) < MATCH).then(|| {
        format!(
            "it matches scores scaled by {f:.4}, where 1/√head_dim is {:.4}.",
            1.0 / (d as f64).sqrt()
        )
    })
}
