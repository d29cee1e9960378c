//! A matrix product for the small blocks of causal attention.
//!
//! One attention group at the graded settings multiplies 32 × 32 matrices. At that size the
//! general `gemm` crate spends much of each call on dispatch and packing (BENCHMARKS.md has
//! the two side by side). This kernel keeps a block of 4 rows × 16 columns of the output in
//! registers and streams the inner dimension through it, with no packing. It also skips the
//! half of each product that causality makes zero (see [`Triangle`]).
//!
//! The vector instructions come from the compiler: on x86-64 the kernel is compiled a second
//! time with AVX2 and FMA enabled, and that copy runs when the CPU has them.

use super::Matrix;

/// Which part of a product causal attention needs, so the kernel can skip the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::ops) enum Triangle {
    /// `a` is lower triangular (`a[i][p] = 0` for `p > i`): row `i` sums over `p ≤ i` only.
    LowerA,
    /// `a` is upper triangular (`a[i][p] = 0` for `p < i`): row `i` sums over `p ≥ i` only.
    UpperA,
    /// Only `c[i][j]` for `j ≤ i` is needed: the kernel computes little more, and leaves the
    /// values above the diagonal unspecified (some computed, some as they were).
    LowerC,
}

/// `c (m × n) = a (m × k) · b (k × n)`.
///
/// `c` is row-major and contiguous; `a` may be transposed, at no cost; the rows of `b` must
/// be contiguous. With a triangular `a`, the entries the triangle says are zero must be zero.
pub(in crate::ops) fn small_matmul(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    a: Matrix,
    b: Matrix,
    triangle: Triangle,
) {
    assert!(c.len() >= m * n, "small_matmul: output too small");
    assert!(a.fits((m, k)), "small_matmul: a too small");
    assert!(
        b.col_stride == 1 && b.fits((k, n)),
        "small_matmul: b too small"
    );
    let c = &mut c[..m * n];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the copy is compiled for.
        unsafe { matmul_avx2_fma((m, n, k), c, a, b, triangle) };
        return;
    }
    matmul_impl::<false>((m, n, k), c, a, b, triangle);
}

/// [`matmul_impl`] compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn matmul_avx2_fma(
    shape: (usize, usize, usize),
    c: &mut [f32],
    a: Matrix,
    b: Matrix,
    triangle: Triangle,
) {
    matmul_impl::<true>(shape, c, a, b, triangle)
}

/// `x · y + z`, fused where the CPU has FMA (a separate multiply and add would cost two
/// instructions; `f32::mul_add` without FMA is a slow library call).
#[inline(always)]
fn madd<const FMA: bool>(x: f32, y: f32, z: f32) -> f32 {
    if FMA { x.mul_add(y, z) } else { x * y + z }
}

const ROWS: usize = 4;

#[inline(always)]
fn matmul_impl<const FMA: bool>(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    a: Matrix,
    b: Matrix,
    triangle: Triangle,
) {
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(ROWS);
        // The part of the inner dimension and of the columns this block of rows needs.
        let (p0, p1) = match triangle {
            Triangle::LowerA => (0, k.min(i + rows)),
            Triangle::UpperA => (i.min(k), k),
            Triangle::LowerC => (0, k),
        };
        let n_end = match triangle {
            // Whole blocks of 16: a few values past the diagonal cost less than narrow blocks.
            Triangle::LowerC => n.min((i + rows).next_multiple_of(16)),
            _ => n,
        };
        let block = Block {
            a: a.data,
            a_rs: a.row_stride,
            a_cs: a.col_stride,
            b: b.data,
            b_rs: b.row_stride,
            i,
            p: p0..p1,
        };
        let c_rows = &mut c[i * n..(i + rows) * n];
        let mut j = 0;
        while j + 16 <= n_end {
            block.run::<FMA, 16>(rows, j, c_rows, n);
            j += 16;
        }
        if j + 8 <= n_end {
            block.run::<FMA, 8>(rows, j, c_rows, n);
            j += 8;
        }
        if j < n_end {
            block.tail::<FMA>(rows, j..n_end, c_rows, n);
        }
        i += rows;
    }
}

/// Up to [`ROWS`] rows of `a` from row `i`, over the inner indices `p`.
struct Block<'a> {
    a: &'a [f32],
    a_rs: usize,
    a_cs: usize,
    b: &'a [f32],
    b_rs: usize,
    i: usize,
    p: std::ops::Range<usize>,
}

impl Block<'_> {
    /// Columns `j..j + W` of the block's rows, held in registers over the whole inner loop.
    #[inline(always)]
    fn run<const FMA: bool, const W: usize>(
        &self,
        rows: usize,
        j: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        match rows {
            4 => self.run_rows::<FMA, W, 4>(j, c, ldc),
            3 => self.run_rows::<FMA, W, 3>(j, c, ldc),
            2 => self.run_rows::<FMA, W, 2>(j, c, ldc),
            _ => self.run_rows::<FMA, W, 1>(j, c, ldc),
        }
    }

    #[inline(always)]
    fn run_rows<const FMA: bool, const W: usize, const R: usize>(
        &self,
        j: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        let mut acc = [[0f32; W]; R];
        for p in self.p.clone() {
            let start = p * self.b_rs + j;
            // SAFETY: `small_matmul` checked that `b` holds row p's n values and that `a`
            // holds every (row, p) of the product.
            let brow: &[f32; W] = unsafe { &*self.b.as_ptr().add(start).cast::<[f32; W]>() };
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = unsafe {
                    *self
                        .a
                        .get_unchecked((self.i + r) * self.a_rs + p * self.a_cs)
                };
                for (acc, &y) in acc.iter_mut().zip(brow) {
                    *acc = madd::<FMA>(x, y, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            c[r * ldc + j..r * ldc + j + W].copy_from_slice(acc);
        }
    }

    /// Columns `cols` (fewer than 8), one at a time.
    #[inline(always)]
    fn tail<const FMA: bool>(
        &self,
        rows: usize,
        cols: std::ops::Range<usize>,
        c: &mut [f32],
        ldc: usize,
    ) {
        for r in 0..rows {
            for j in cols.clone() {
                let mut acc = 0f32;
                for p in self.p.clone() {
                    let x = self.a[(self.i + r) * self.a_rs + p * self.a_cs];
                    acc = madd::<FMA>(x, self.b[p * self.b_rs + j], acc);
                }
                c[r * ldc + j] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The product in f64, straight from the definition.
    fn reference((m, n, k): (usize, usize, usize), a: Matrix, b: Matrix) -> Vec<f64> {
        let at = |x: Matrix, i: usize, j: usize| x.data[i * x.row_stride + j * x.col_stride] as f64;
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| at(a, i, p) * at(b, p, j)).sum();
            }
        }
        c
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Zeroes the entries of `a` (m × k, strides given) that `triangle` says are zero.
    fn make_triangular(
        a: &mut [f32],
        (m, k): (usize, usize),
        (rs, cs): (usize, usize),
        triangle: Triangle,
    ) {
        for i in 0..m {
            for p in 0..k {
                let zero = match triangle {
                    Triangle::LowerA => p > i,
                    Triangle::UpperA => p < i,
                    _ => false,
                };
                if zero {
                    a[i * rs + p * cs] = 0.0;
                }
            }
        }
    }

    type Kernel = fn((usize, usize, usize), &mut [f32], Matrix, Matrix, Triangle);

    fn check(
        shape: (usize, usize, usize),
        transposed_a: bool,
        b_pad: usize,
        triangle: Triangle,
        seed: u64,
    ) {
        check_with(small_matmul, shape, transposed_a, b_pad, triangle, seed)
    }

    /// Runs `kernel` on random values and compares it with [`reference`].
    fn check_with(
        kernel: Kernel,
        (m, n, k): (usize, usize, usize),
        transposed_a: bool,
        b_pad: usize,
        triangle: Triangle,
        seed: u64,
    ) {
        let a_strides = if transposed_a { (1, m) } else { (k, 1) };
        let mut a = values(m * k, seed);
        make_triangular(&mut a, (m, k), a_strides, triangle);
        let a = Matrix {
            data: &a,
            row_stride: a_strides.0,
            col_stride: a_strides.1,
        };
        let b = values(k.max(1) * (n + b_pad), seed + 1);
        let b = Matrix::rows(&b, n + b_pad);
        let mut c = vec![f32::NAN; m * n];
        kernel((m, n, k), &mut c, a, b, triangle);
        let want = reference((m, n, k), a, b);
        for i in 0..m {
            for j in 0..n {
                let (got, want) = (c[i * n + j], want[i * n + j]);
                if triangle == Triangle::LowerC && j > i {
                    continue;
                }
                assert!(
                    (got as f64 - want).abs() <= 1e-5 * (1.0 + k as f64),
                    "{m}×{n}×{k} {triangle:?} transposed a {transposed_a}: c[{i}][{j}] = {got}, \
                     want {want}"
                );
            }
        }
    }

    #[test]
    fn the_attention_shapes_match_the_definition() {
        for triangle in [Triangle::LowerA, Triangle::UpperA, Triangle::LowerC] {
            for transposed in [false, true] {
                check((32, 32, 32), transposed, 64, triangle, 1);
                check((4, 8, 4), transposed, 0, triangle, 2);
            }
        }
    }

    proptest! {
        #[test]
        fn any_shape_matches_the_definition(
            m in 0usize..40,
            n in 0usize..40,
            k in 0usize..40,
            transposed in any::<bool>(),
            b_pad in 0usize..5,
            triangle in prop::sample::select(vec![
                Triangle::LowerA, Triangle::UpperA, Triangle::LowerC,
            ]),
            seed in any::<u64>(),
        ) {
            check((m, n, k), transposed, b_pad, triangle, seed);
        }
    }

    /// The portable copy, which runs where the CPU lacks AVX2 or FMA, on its own.
    #[test]
    fn the_portable_copy_matches_the_definition() {
        for triangle in [Triangle::LowerA, Triangle::UpperA, Triangle::LowerC] {
            for transposed in [false, true] {
                check_with(
                    matmul_impl::<false>,
                    (13, 37, 11),
                    transposed,
                    3,
                    triangle,
                    9,
                );
                check_with(
                    matmul_impl::<false>,
                    (32, 32, 32),
                    transposed,
                    0,
                    triangle,
                    10,
                );
            }
        }
    }
}
