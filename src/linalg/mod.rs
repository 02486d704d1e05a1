//! Linear algebra of the crate, pinned to `Par::Seq` so the bits do not depend on the thread count
//! (parallelism comes from rayon across inputs and chunks):
//! * this module — thin f32 wrappers over faer for the dense products of the samplers and trainers
//!   (row-major `Vec<f32>` / `&[f32]`), and the dot product and norm of f64 vectors;
//! * [`dense`] — the f64 products and decompositions of the RG estimators (`faer::Mat<f64>`).

pub mod dense;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Clear the upper halves of the vector registers (`vzeroupper`) after a faer product.
///
/// faer's x86 matrix-multiply micro-kernels (AVX-512, generated code) return with the upper
/// register state dirty. This crate is compiled for baseline x86-64, so the code after a product
/// is legacy SSE, and each switch between it and VEX code (libm's `expf` in every sigmoid) then
/// pays the SSE/AVX transition penalty: measured (perf, `docs/performance.md`) at ~95% of the
/// up-pass's time, 180 ns per unit update. One `vzeroupper` after every faer call (products here
/// and in [`dense`], decompositions and solves in [`dense`], the coupling fits' triangular
/// products) removes it.
#[inline]
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX (checked just above), which is all `vzeroupper`
            // needs; it only zeroes register bits above 127, which hold no live value here.
            unsafe { zero_upper() }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// `Σ a_i b_i` of two f64 vectors (over the shorter length).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm `‖v‖₂` of an f64 vector.
pub fn norm2(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// `out (m×n) = a (m×k) · bᵀ` where `b` is `n×k` (row-major), overwriting `out`.
pub fn gemm_abt(out: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(b.len(), n * k);
    debug_assert_eq!(out.len(), m * n);
    let am = MatRef::from_row_major_slice(a, m, k);
    let bm = MatRef::from_row_major_slice(b, n, k);
    let om = MatMut::from_row_major_slice_mut(out, m, n);
    matmul(om, Accum::Replace, am, bm.transpose(), 1.0f32, Par::Seq);
    clear_upper_vector_state();
}

/// `out (m×n) = a (m×k) · b` where `b` is `k×n` (row-major), overwriting `out`.
pub fn gemm_ab(out: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(b.len(), k * n);
    debug_assert_eq!(out.len(), m * n);
    let am = MatRef::from_row_major_slice(a, m, k);
    let bm = MatRef::from_row_major_slice(b, k, n);
    let om = MatMut::from_row_major_slice_mut(out, m, n);
    matmul(om, Accum::Replace, am, bm, 1.0f32, Par::Seq);
    clear_upper_vector_state();
}

/// `out (m×n) += alpha · aᵀ · b` where `a` is `r×m` and `b` is `r×n` (row-major): the sum over
/// rows of outer products, i.e. an (unnormalised) second-moment matrix.
pub fn gemm_atb_acc(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    r: usize,
    m: usize,
    n: usize,
    alpha: f32,
) {
    debug_assert_eq!(a.len(), r * m);
    debug_assert_eq!(b.len(), r * n);
    debug_assert_eq!(out.len(), m * n);
    let am = MatRef::from_row_major_slice(a, r, m);
    let bm = MatRef::from_row_major_slice(b, r, n);
    let om = MatMut::from_row_major_slice_mut(out, m, n);
    matmul(om, Accum::Add, am.transpose(), bm, alpha, Par::Seq);
    clear_upper_vector_state();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_naive_loops() {
        let (m, k, n) = (3, 4, 2);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i as f32).sin()).collect();
        let mut out = vec![0.0; m * n];
        gemm_abt(&mut out, &a, &b, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let e: f32 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
                assert!((out[i * n + j] - e).abs() < 1e-5);
            }
        }
        let bt: Vec<f32> = (0..k * n).map(|i| (i as f32).cos()).collect();
        gemm_ab(&mut out, &a, &bt, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let e: f32 = (0..k).map(|t| a[i * k + t] * bt[t * n + j]).sum();
                assert!((out[i * n + j] - e).abs() < 1e-5);
            }
        }
        let mut acc = vec![1.0; k * n];
        // aᵀ (k×m)… use a as r×m with r = m rows: here r=3, m=4
        gemm_atb_acc(&mut acc, &a, &b[..m * n], m, k, n, 0.5);
        for i in 0..k {
            for j in 0..n {
                let e: f32 = 1.0 + 0.5 * (0..m).map(|r| a[r * k + i] * b[r * n + j]).sum::<f32>();
                assert!((acc[i * n + j] - e).abs() < 1e-5);
            }
        }
    }
}
