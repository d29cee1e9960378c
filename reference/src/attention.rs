//! Attention computed every way a learner might compute it: the right way ([`RIGHT`]), and
//! each combination of the usual mistakes (the scale of the scores, the mask, the axis of the
//! softmax, which projection plays which role, how heads are split and merged, the output
//! projection), in f64. The checks' diagnosis of Tasks 2 and 3 recomputes a wrong answer every
//! such way and names the simplest that reproduces it.

/// How the scores are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Query i sees keys j ≤ i: right.
    Causal,
    None,
    /// j < i: a position cannot see itself.
    HidesSelf,
    /// j ≤ i + 1.
    SeesNext,
    /// j ≥ i: the triangle the wrong way round.
    Transposed,
    /// Hidden scores set to 0 instead of −∞.
    Zero,
    /// Softmax over every key, then the hidden weights set to 0.
    AfterSoftmax,
}

/// One way of computing attention: the right one, or a combination of mistakes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Way {
    /// The factor on q·kᵀ, by name.
    pub scale: Scale,
    pub mask: Mask,
    /// The softmax runs over the queries instead of the keys.
    pub over_queries: bool,
    /// Which projection makes the queries, the keys and the values: 0 query, 1 key, 2 value.
    pub roles: [usize; 3],
    /// Head i takes columns i, i + n, i + 2n, … instead of i·h..(i+1)·h.
    pub split_interleaved: bool,
    /// Feature j of head i lands in column j·n + i instead of i·h + j.
    pub merge_interleaved: bool,
    /// The output projection is applied (Task 3).
    pub proj: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// 1/√head_dim: right.
    InvSqrtD,
    One,
    InvD,
    InvSqrtC,
    SqrtD,
    /// Any other factor (from the probes' fit).
    Other(f64),
}

impl Scale {
    pub fn factor(self, d: usize, c: usize) -> f64 {
        match self {
            Scale::InvSqrtD => 1.0 / (d as f64).sqrt(),
            Scale::One => 1.0,
            Scale::InvD => 1.0 / d as f64,
            Scale::InvSqrtC => 1.0 / (c as f64).sqrt(),
            Scale::SqrtD => (d as f64).sqrt(),
            Scale::Other(f) => f,
        }
    }
}

pub const RIGHT: Way = Way {
    scale: Scale::InvSqrtD,
    mask: Mask::Causal,
    over_queries: false,
    roles: [0, 1, 2],
    split_interleaved: false,
    merge_interleaved: false,
    proj: true,
};

/// The weights the recomputations read, as f64, candle's (out, in) layout.
pub struct Weights {
    pub qkv: [Vec<f64>; 3],
    pub proj: Option<(Vec<f64>, Vec<f64>)>,
    pub c: usize,
}

/// Attention computed `way`, in f64: x (B, T, C) → (B, T, n·d).
pub fn attend(
    way: Way,
    w: &Weights,
    x: &[f64],
    (b, t): (usize, usize),
    n: usize,
    d: usize,
) -> Vec<f64> {
    let width = n * d;
    let scale = way.scale.factor(d, w.c);
    let mut merged = vec![0.0; b * t * width];
    for bi in 0..b {
        let x = &x[bi * t * w.c..(bi + 1) * t * w.c];
        for i in 0..n {
            let [q, k, v] = way
                .roles
                .map(|r| project_head(way, &w.qkv[r], x, w.c, (n, d), i));
            let weights = attention_weights(way, &q, &k, scale);
            for (qi, row) in weights.iter().enumerate() {
                for j in 0..d {
                    let o: f64 = row.iter().zip(&v).map(|(w, vk)| w * vk[j]).sum();
                    let col = if way.merge_interleaved {
                        j * n + i
                    } else {
                        i * d + j
                    };
                    merged[(bi * t + qi) * width + col] = o;
                }
            }
        }
    }
    match (&w.proj, way.proj) {
        (Some((pw, pb)), true) => crate::dense_f64(&merged, b * t, pw, Some(pb), width),
        _ => merged,
    }
}

/// Head `i`'s projection of one sequence x (T, C) by the fused (n·d, C) `weights`, split
/// `way`: one d-vector a position.
fn project_head(
    way: Way,
    weights: &[f64],
    x: &[f64],
    c: usize,
    (n, d): (usize, usize),
    i: usize,
) -> Vec<Vec<f64>> {
    // Row r of head i's projection: the row of the fused weight it takes.
    let row = |r: usize| {
        if way.split_interleaved {
            r * n + i
        } else {
            i * d + r
        }
    };
    x.chunks(c)
        .map(|xr| {
            (0..d)
                .map(|r| {
                    let wr = &weights[row(r) * c..(row(r) + 1) * c];
                    wr.iter().zip(xr).map(|(a, b)| a * b).sum()
                })
                .collect()
        })
        .collect()
}

/// The (T, T) attention weights of one head, masked and normalised `way`: row qi, column kj.
pub fn attention_weights(way: Way, q: &[Vec<f64>], k: &[Vec<f64>], scale: f64) -> Vec<Vec<f64>> {
    let t = q.len();
    let visible = |qi: usize, kj: usize| match way.mask {
        Mask::Causal | Mask::Zero | Mask::AfterSoftmax => kj <= qi,
        Mask::None => true,
        Mask::HidesSelf => kj < qi,
        Mask::SeesNext => kj <= qi + 1,
        Mask::Transposed => kj >= qi,
    };
    // score[qi][kj], None where hidden by −∞.
    let score = |qi: usize, kj: usize| -> Option<f64> {
        let s = q[qi].iter().zip(&k[kj]).map(|(x, y)| x * y).sum::<f64>() * scale;
        match way.mask {
            Mask::Zero => Some(if kj <= qi { s } else { 0.0 }),
            Mask::AfterSoftmax => Some(s),
            _ => visible(qi, kj).then_some(s),
        }
    };
    let mut weights = vec![vec![0.0; t]; t];
    // Softmax along one line of the (T, T) scores: a query's row, or a key's column.
    for a in 0..t {
        let line: Vec<(usize, usize)> = (0..t)
            .map(|o| if way.over_queries { (o, a) } else { (a, o) })
            .collect();
        let kept: Vec<((usize, usize), f64)> = line
            .iter()
            .filter_map(|&(qi, kj)| score(qi, kj).map(|s| ((qi, kj), s)))
            .collect();
        let max = kept
            .iter()
            .map(|(_, s)| *s)
            .fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = kept.iter().map(|(_, s)| (s - max).exp()).sum();
        for &((qi, kj), s) in &kept {
            weights[qi][kj] = (s - max).exp() / total;
        }
        if kept.is_empty() {
            for &(qi, kj) in &line {
                weights[qi][kj] = f64::NAN;
            }
        }
    }
    if way.mask == Mask::AfterSoftmax {
        for (qi, row) in weights.iter_mut().enumerate() {
            row[qi + 1..].fill(0.0);
        }
    }
    weights
}
