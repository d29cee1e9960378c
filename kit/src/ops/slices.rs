//! Reading candle's CPU storage as slices: the first thing a custom op's `cpu_fwd` does, and
//! the vector sums kit's kernels share.
//!
//! candle hands a custom op each input as a `CpuStorage` (a vector of one element type) and a
//! `Layout` (where the tensor's elements lie in it). For a contiguous tensor they are one run
//! of that vector: [`f32s`] returns it as a slice, or an error that names the input.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Tensor};

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
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("{what} must be f32, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// The elements of a contiguous u32 tensor, in order; `what` names it in an error.
#[inline]
pub fn u32s<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [u32]> {
    let data = match storage {
        CpuStorage::U32(v) => v.as_slice(),
        other => candle_core::bail!("{what} must be u32, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
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
