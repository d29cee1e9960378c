//! Reading candle's CPU storage as slices: the first thing a custom op's forward pass does; the
//! vector sums kit's kernels share; and cutting apart the one tensor a backward op returns.
//!
//! candle hands a custom op each input as a `CpuStorage` (a vector of one element type) and a
//! `Layout` (where the tensor's elements lie in it). For a contiguous tensor they are one run
//! of that vector: [`f32s`] returns it as a slice, or an error that names the input.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, WithDType};

#[inline]
pub(crate) fn last_two(t: &Tensor) -> Result<(usize, usize)> {
    match t.dims() {
        [.., a, b] => Ok((*a, *b)),
        dims => candle_core::bail!("expected at least two dimensions, got shape {dims:?}"),
    }
}

/// The elements of a contiguous f32 tensor, in order; `what` names it in an error.
#[inline]
pub fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    elements(storage, layout, what)
}

/// The elements of a contiguous u32 tensor, in order; `what` names it in an error.
#[inline]
pub fn u32s<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [u32]> {
    elements(storage, layout, what)
}

#[inline]
fn elements<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let Ok(data) = storage.as_slice::<T>() else {
        candle_core::bail!(
            "{what} must be {}, got {:?}",
            T::DTYPE.as_str(),
            storage.dtype()
        )
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// A custom op returns one tensor: a backward op that computes several gradients returns them
/// one after the other in a flat tensor. This cuts `packed` into pieces of the given shapes,
/// in order.
pub(crate) fn unpack<const N: usize>(packed: &Tensor, shapes: [&Shape; N]) -> Result<[Tensor; N]> {
    let mut start = 0;
    let mut pieces = Vec::with_capacity(N);
    for shape in shapes {
        let n = shape.elem_count();
        pieces.push(packed.narrow(0, start, n)?.reshape(shape)?);
        start += n;
    }
    Ok(pieces.try_into().expect("one piece per shape"))
}

/// Σ a[i] · b[i] over eight running sums: a float sum in one accumulator is a chain the
/// compiler may not reorder, eight of them become one vector register.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a[i], with eight running sums like [`dot`].
#[inline]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for j in 0..8 {
            acc[j] += x[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}
