//! Matrix products on raw f32 slices, for the fused ops' kernels: [`gemm`]'s for the dense
//! layers, a small kernel of our own for the blocks of causal attention ([`small`]).

pub(crate) mod small;

use std::mem::MaybeUninit;

/// A matrix read in place from a slice: element (i, j) is `data[i * row_stride + j * col_stride]`,
/// so a transpose is the same slice with the strides swapped.
#[derive(Clone, Copy)]
pub(super) struct Matrix<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// Rows of `width` elements, one after the other (row-major).
    #[inline]
    pub fn rows(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            row_stride: width,
            col_stride: 1,
        }
    }

    /// The transpose of [`Matrix::rows`]: columns of `height` elements, one after the other.
    #[inline]
    pub fn columns(data: &'a [f32], height: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: height,
        }
    }

    /// Whether an r × c matrix fits in `data`.
    #[inline]
    pub fn fits(&self, (r, c): (usize, usize)) -> bool {
        r == 0 || c == 0 || self.data.len() > (r - 1) * self.row_stride + (c - 1) * self.col_stride
    }
}

/// `c (m×n) = a (m×k) · b (k×n)` (or `c +=` with `accumulate`), `c` row-major.
#[inline]
pub(super) fn matmul(
    shape: (usize, usize, usize),
    c: &mut [f32],
    accumulate: bool,
    a: Matrix,
    b: Matrix,
) {
    assert!(c.len() >= shape.0 * shape.1, "matmul: output too small");
    // SAFETY: `c` holds the m × n output.
    unsafe { gemm_into(shape, c.as_mut_ptr(), accumulate, a, b) }
}

/// [`matmul`] into memory not yet initialised: every element of `c[..m * n]` is written and
/// none is read, so a fresh output needs no zero-filling first.
#[inline]
pub(super) fn matmul_overwrite(
    shape: (usize, usize, usize),
    c: &mut [MaybeUninit<f32>],
    a: Matrix,
    b: Matrix,
) {
    assert!(c.len() >= shape.0 * shape.1, "matmul: output too small");
    // SAFETY: `c` holds the m × n output; without `accumulate` gemm does not read it (BLAS's
    // beta = 0) and writes all of it, zeros when k = 0.
    unsafe { gemm_into(shape, c.as_mut_ptr().cast(), false, a, b) }
}

/// # Safety
/// `c` must be valid for writes of `m * n` floats, and for reads too with `accumulate`.
#[inline]
unsafe fn gemm_into(
    (m, n, k): (usize, usize, usize),
    c: *mut f32,
    accumulate: bool,
    a: Matrix,
    b: Matrix,
) {
    assert!(
        a.fits((m, k)) && b.fits((k, n)),
        "matmul: operand too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assert above keeps every index gemm reads inside `a` and `b`; the caller
    // vouches for `c`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
