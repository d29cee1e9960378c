//! The diagnosis of Tasks 2 and 3 on wrong answers a learner could write, each written here with
//! candle's ops: every one gets a headline that says what it does, never a list of places to
//! look. The headlines are snapshotted, so a person can read them all in one file.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use checks::diagnose::attention::{Subject, diagnose};
use checks::support::{device, move_off_init};
use kit::SeededVarMap;
use kit::nn::{Dense, dense, dense_no_bias};

/// Declares an enum of mistakes, each a unit variant, with `ALL`, every one in order.
macro_rules! mistakes {
    ($(#[$doc:meta])* enum $name:ident { $($mistake:ident,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        enum $name {
            $($mistake,)*
        }

        impl $name {
            const ALL: &[$name] = &[$($name::$mistake,)*];
        }
    };
}

mistakes! {
    /// A mistake in one head of attention, as a learner might make it in Task 2.
    enum Single {
        MaskFilledWithZero,
        MaskTransposed,
        MaskAfterSoftmax,
        ScaledBySqrtHidden,
        ScaledUp,
        NeitherScaledNorMasked,
        SoftmaxOverQueriesAndDividedByD,
        MaskHidesSelf,
        NoMask,
        KeysTimesQueries,
        KeysMixedAsValues,
        QueriesMixedAsValues,
        QueryAndValueWeightsSwapped,
        WeightsSquared,
        MaskSeesTwoAhead,
        DividedByOneMoreThanD,
    }
}

/// The query, key and value projections of attention, without a bias, named as Tasks 2 and 3
/// name them.
struct Projections {
    query: Dense,
    key: Dense,
    value: Dense,
}

impl Projections {
    fn new(hidden: usize, width: usize, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            query: dense_no_bias(hidden, width, vb.pp("query"))?,
            key: dense_no_bias(hidden, width, vb.pp("key"))?,
            value: dense_no_bias(hidden, width, vb.pp("value"))?,
        })
    }

    /// q, k and v of `xs`.
    fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        Ok((
            self.query.forward(xs)?,
            self.key.forward(xs)?,
            self.value.forward(xs)?,
        ))
    }
}

/// One head of attention with one mistake, its weights named as Task 2's.
struct WrongHead {
    qkv: Projections,
    head_dim: usize,
    hidden: usize,
    mistake: Single,
}

impl WrongHead {
    fn new(hidden: usize, head_dim: usize, mistake: Single, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: Projections::new(hidden, head_dim, &vb)?,
            head_dim,
            hidden,
            mistake,
        })
    }
}

impl Module for WrongHead {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        use Single::*;
        let (_b, t, _c) = xs.dims3()?;
        let (mut q, k, mut v) = self.qkv.forward(xs)?;
        if let QueryAndValueWeightsSwapped = self.mistake {
            (q, v) = (v, q);
        }
        let scores = match self.mistake {
            KeysTimesQueries => k.matmul(&q.t()?)?,
            _ => q.matmul(&k.t()?)?,
        };
        let d = self.head_dim as f64;
        let scores = match self.mistake {
            ScaledBySqrtHidden => (scores / (self.hidden as f64).sqrt())?,
            ScaledUp => (scores * d.sqrt())?,
            NeitherScaledNorMasked => scores,
            SoftmaxOverQueriesAndDividedByD => (scores / d)?,
            DividedByOneMoreThanD => (scores / (d + 1.0))?,
            _ => (scores / d.sqrt())?,
        };
        let lower = Tensor::tril2(t, DType::U8, xs.device())?;
        let visible = match self.mistake {
            MaskTransposed => lower.t()?.contiguous()?,
            MaskHidesSelf => (&lower - Tensor::eye(t, DType::U8, xs.device())?)?,
            // Ones on, below and two above the diagonal.
            MaskSeesTwoAhead => Tensor::from_vec(
                (0..t)
                    .flat_map(|i| (0..t).map(move |j| u8::from(j <= i + 2)))
                    .collect(),
                (t, t),
                xs.device(),
            )?,
            _ => lower.clone(),
        }
        .broadcast_as(scores.shape())?;
        let hidden = match self.mistake {
            MaskFilledWithZero => scores.zeros_like()?,
            _ => Tensor::full(f32::NEG_INFINITY, scores.shape(), xs.device())?,
        };
        let masked = match self.mistake {
            NoMask | NeitherScaledNorMasked | MaskAfterSoftmax => scores,
            _ => visible.where_cond(&scores, &hidden)?,
        };
        let axis = match self.mistake {
            SoftmaxOverQueriesAndDividedByD => D::Minus2,
            _ => D::Minus1,
        };
        let mut weights = candle_nn::ops::softmax(&masked, axis)?;
        if let MaskAfterSoftmax = self.mistake {
            weights = (weights * lower.to_dtype(DType::F32)?.broadcast_as(masked.shape())?)?;
        }
        if let WeightsSquared = self.mistake {
            weights = weights.sqr()?;
        }
        match self.mistake {
            KeysMixedAsValues => weights.matmul(&k),
            QueriesMixedAsValues => weights.matmul(&q),
            _ => weights.matmul(&v),
        }
    }
}

mistakes! {
    /// A mistake in multi-head attention, as a learner might make it in Task 3.
    enum Multi {
        NoOutputProjection,
        SplitAndMergedAsHN,
        MergedAsHN,
        ScaledTwice,
        ScaledBySqrtHidden,
        SoftmaxOverQueries,
        KeysMixedAsValues,
        MaskAfterSoftmax,
        NoMask,
    }
}

/// Multi-head attention with one mistake, its weights named as Task 3's.
struct WrongHeads {
    qkv: Projections,
    proj: Dense,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    mistake: Multi,
}

impl WrongHeads {
    fn new(
        hidden: usize,
        heads: usize,
        head_dim: usize,
        mistake: Multi,
        vb: VarBuilder,
    ) -> Result<Self> {
        let width = heads * head_dim;
        Ok(Self {
            qkv: Projections::new(hidden, width, &vb)?,
            proj: dense(width, width, vb.pp("proj"))?,
            heads,
            head_dim,
            hidden,
            mistake,
        })
    }
}

impl Module for WrongHeads {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        use Multi::*;
        let (b, t, _c) = xs.dims3()?;
        let (n, d) = (self.heads, self.head_dim);
        let split = |y: Tensor| -> Result<Tensor> {
            match self.mistake {
                // (b, t, (h n)) → (b, n, t, h)
                SplitAndMergedAsHN => y.reshape((b, t, d, n))?.permute((0, 3, 1, 2)),
                // (b, t, (n h)) → (b, n, t, h)
                _ => y.reshape((b, t, n, d))?.transpose(1, 2),
            }?
            .contiguous()
        };
        let (q, k, v) = self.qkv.forward(xs)?;
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let scale = match self.mistake {
            ScaledBySqrtHidden => 1.0 / (self.hidden as f64).sqrt(),
            _ => 1.0 / (d as f64).sqrt(),
        };
        let weights = match self.mistake {
            ScaledTwice => kit::ops::causal_softmax(&(scores * scale)?, scale)?,
            SoftmaxOverQueries | MaskAfterSoftmax | NoMask => {
                let lower =
                    Tensor::tril2(t, DType::U8, xs.device())?.broadcast_as(scores.shape())?;
                let scores = (scores * scale)?;
                match self.mistake {
                    SoftmaxOverQueries => {
                        let hidden = Tensor::full(f32::NEG_INFINITY, scores.shape(), xs.device())?;
                        candle_nn::ops::softmax(&lower.where_cond(&scores, &hidden)?, D::Minus2)?
                    }
                    MaskAfterSoftmax => {
                        (candle_nn::ops::softmax(&scores, D::Minus1)?
                            * lower.to_dtype(DType::F32)?)?
                    }
                    _ => candle_nn::ops::softmax(&scores, D::Minus1)?,
                }
            }
            _ => kit::ops::causal_softmax(&scores, scale)?,
        };
        let out = match self.mistake {
            KeysMixedAsValues => weights.matmul(&k)?,
            _ => weights.matmul(&v)?,
        };
        let merged = match self.mistake {
            // (b, n, t, h) → (b, t, (h n))
            SplitAndMergedAsHN | MergedAsHN => out.permute((0, 2, 3, 1))?,
            // (b, n, t, h) → (b, t, (n h))
            _ => out.transpose(1, 2)?,
        }
        .contiguous()?
        .reshape((b, t, n * d))?;
        match self.mistake {
            NoOutputProjection => Ok(merged),
            _ => self.proj.forward(&merged),
        }
    }
}

fn single(mistake: Single) -> String {
    let (hidden, d) = (8, 4);
    let params = SeededVarMap::new(5);
    let m = WrongHead::new(hidden, d, mistake, params.var_builder(&device())).unwrap();
    diagnose(&Subject {
        forward: &|x| m.forward(x),
        params: &params,
        heads: 1,
        head_dim: d,
    })
}

fn multi(mistake: Multi) -> String {
    let (hidden, heads, d) = (8, 2, 4);
    let params = SeededVarMap::new(6);
    let m = WrongHeads::new(hidden, heads, d, mistake, params.var_builder(&device())).unwrap();
    move_off_init(&params, 60);
    diagnose(&Subject {
        forward: &|x| m.forward(x),
        params: &params,
        heads,
        head_dim: d,
    })
}

/// The words of the generic advice the diagnosis replaces: none may come back.
const GENERIC: [&str; 2] = ["check the mask", "check that head i"];

#[test]
fn every_wrong_answer_gets_a_headline_that_says_what_it_does() {
    let mut shown = String::new();
    for &mistake in Single::ALL {
        shown.push_str(&format!("task2 / {mistake:?}:\n{}\n\n", single(mistake)));
    }
    for &mistake in Multi::ALL {
        shown.push_str(&format!("task3 / {mistake:?}:\n{}\n\n", multi(mistake)));
    }
    for generic in GENERIC {
        assert!(!shown.contains(generic), "{generic}:\n{shown}");
    }
    insta::with_settings!({
        description => "The diagnosis of each wrong attention above: Task 2's single head \
            (hidden 8, head_dim 4) and Task 3's heads (hidden 8, 2 heads of 4), with seeded \
            weights. Each must say what the attention does, not where to look.",
        omit_expression => true,
    }, {
        insta::assert_snapshot!(shown);
    });
}
