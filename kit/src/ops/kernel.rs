//! The one place kit meets candle's custom-op traits.
//!
//! candle's `CustomOp1`, `CustomOp2` and `CustomOp3` differ only in how many inputs they take:
//! each has a name, a `cpu_fwd` that gets every input as its storage and layout, and a `bwd`
//! that gets the inputs as tensors, with the output and ∂loss/∂output. Each of kit's ops
//! writes a [`Kernel`] instead, its inputs in an array, and [`Op`] implements the candle trait
//! of that many inputs once for every kernel: `x.apply_op2(&w, Op(kernel))`. A backward pass
//! is a function of its inputs, made an op by [`pass`]: its kernel keeps candle's default
//! backward, an error, `BackwardNotSupported`, and kit applies it with `apply_op*_no_bwd`,
//! which never asks for one.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// One input of a kernel's forward pass: candle's storage, and where the tensor lies in it.
pub(crate) type Input<'a> = (&'a CpuStorage, &'a Layout);

/// A custom op over `N` inputs, on the CPU.
pub(crate) trait Kernel<const N: usize> {
    /// The op's name, in candle's errors.
    fn name(&self) -> &'static str;

    /// The output from the inputs, with its shape.
    fn forward(&self, inputs: [Input<'_>; N]) -> Result<(CpuStorage, Shape)>;

    /// ∂loss/∂input for each input (`None` for one that takes no gradient), from the inputs,
    /// the output `res` and `grad`, ∂loss/∂output.
    fn backward(
        &self,
        _inputs: [&Tensor; N],
        _res: &Tensor,
        _grad: &Tensor,
    ) -> Result<[Option<Tensor>; N]> {
        Err(candle_core::Error::BackwardNotSupported { op: self.name() })
    }
}

/// A [`Kernel`] as candle's custom op of as many inputs.
pub(crate) struct Op<K>(pub(crate) K);

impl<K: Kernel<1>> CustomOp1 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.forward([(s1, l1)])
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let [d1] = self.0.backward([arg], res, grad)?;
        Ok(d1)
    }
}

impl<K: Kernel<2>> CustomOp2 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.forward([(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [d1, d2] = self.0.backward([arg1, arg2], res, grad)?;
        Ok((d1, d2))
    }
}

impl<K: Kernel<3>> CustomOp3 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.forward([(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        arg3: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [d1, d2, d3] = self.0.backward([arg1, arg2, arg3], res, grad)?;
        Ok((d1, d2, d3))
    }
}

/// A kernel without a backward pass: a name and a function of the inputs.
pub(crate) struct Pass<F> {
    name: &'static str,
    forward: F,
}

/// The op of `forward`, named `name`: a backward pass, for `apply_op*_no_bwd`.
pub(crate) fn pass<const N: usize, F>(name: &'static str, forward: F) -> Op<Pass<F>>
where
    F: Fn([Input; N]) -> Result<(CpuStorage, Shape)>,
{
    Op(Pass { name, forward })
}

impl<const N: usize, F> Kernel<N> for Pass<F>
where
    F: Fn([Input; N]) -> Result<(CpuStorage, Shape)>,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn forward(&self, inputs: [Input; N]) -> Result<(CpuStorage, Shape)> {
        (self.forward)(inputs)
    }
}
