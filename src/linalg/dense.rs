//! Dense f64 linear algebra for the RG estimators (SPEC §5–7), pinned to `Par::Seq` so that every
//! decomposition gives bit-identical output whatever the thread count (parallelism, where wanted,
//! comes from running inputs side by side).
//!
//! Matrices are `faer::Mat<f64>`. Symmetric inputs are symmetrised (`(A + Aᵀ)/2`) before their
//! eigendecomposition so that rounding asymmetries of estimated covariances cannot leak in.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::linalg::matmul::matmul;
use faer::linalg::svd::{self, ComputeSvdVectors};
use faer::{Accum, Mat, MatRef, Par};

use crate::error::{Error, Result};

/// `A · B` (sequential).
pub fn mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
    if a.ncols() != b.nrows() {
        return Err(Error::shape(format!(
            "matrix product: {}×{} times {}×{}",
            a.nrows(),
            a.ncols(),
            b.nrows(),
            b.ncols()
        )));
    }
    let mut out = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
    super::clear_upper_vector_state();
    Ok(out)
}

/// `Aᵀ · B` (sequential).
pub fn mul_tn(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
    mul(a.transpose(), b)
}

/// `(A + Aᵀ)/2`.
pub fn symmetrise(a: MatRef<'_, f64>) -> Result<Mat<f64>> {
    if a.nrows() != a.ncols() {
        return Err(Error::shape(format!(
            "expected a square matrix, got {}×{}",
            a.nrows(),
            a.ncols()
        )));
    }
    let n = a.nrows();
    Ok(Mat::from_fn(n, n, |i, j| 0.5 * (a[(i, j)] + a[(j, i)])))
}

/// Symmetric eigendecomposition `A = U diag(λ) Uᵀ` of `(A + Aᵀ)/2`: eigenvalues ascending,
/// eigenvectors in the columns of `U`.
pub fn sym_eigen(a: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let s = symmetrise(a)?;
    let n = s.nrows();
    if n == 0 {
        return Ok((Vec::new(), Mat::zeros(0, 0)));
    }
    if let Some((i, j)) = first_non_finite(s.as_ref()) {
        return Err(Error::invalid(format!(
            "symmetric eigendecomposition: entry ({i},{j}) is not finite"
        )));
    }
    let par = Par::Seq;
    let mut u = Mat::<f64>::zeros(n, n);
    let mut d = Diag::<f64>::zeros(n);
    let mut buf = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        n,
        ComputeEigenvectors::Yes,
        par,
        Default::default(),
    ));
    evd::self_adjoint_evd(
        s.as_ref(),
        d.as_mut(),
        Some(u.as_mut()),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| {
        Error::invalid(format!(
            "symmetric eigendecomposition ({n}×{n}) failed: {e:?}"
        ))
    })?;
    super::clear_upper_vector_state();
    let vals = (0..n).map(|i| d[i]).collect();
    Ok((vals, u))
}

/// Top eigenpair `(λ, v)` of `BᵀB` for a wide `B` (`k × n`) through its `k × k` Gram matrix: if
/// `B Bᵀ u = λ u` with λ largest, then `BᵀB (Bᵀu) = λ Bᵀu` and `‖Bᵀu‖² = λ`, so `v = Bᵀu / ‖Bᵀu‖`
/// (`O(k²n)`, against `O(n³)` for decomposing the `n × n` matrix). `v` is a unit vector whose
/// largest-magnitude entry is positive; when `B = 0` it is the first unit vector.
pub fn top_eigen_of_gram(b: MatRef<'_, f64>) -> Result<(f64, Vec<f64>)> {
    let (k, n) = (b.nrows(), b.ncols());
    if k == 0 || n == 0 {
        return Err(Error::invalid(format!(
            "top eigenpair of BᵀB for an empty {k}×{n} factor"
        )));
    }
    let gram = mul(b, b.transpose())?;
    let (vals, u) = sym_eigen(gram.as_ref())?;
    let top = u.col(k - 1);
    let mut v: Vec<f64> = (0..n)
        .map(|j| (0..k).map(|i| b[(i, j)] * top[i]).sum())
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
        v[0] = 1.0;
    }
    orient_largest_positive(&mut v);
    Ok((vals[k - 1].max(0.0), v))
}

/// The sign convention of eigenvectors here: flip `v` so that its largest-magnitude entry (the
/// first, on ties) is positive.
pub fn orient_largest_positive(v: &mut [f64]) {
    let big = (0..v.len()).fold(0, |m, i| if v[i].abs() > v[m].abs() { i } else { m });
    if v.get(big).is_some_and(|&x| x < 0.0) {
        v.iter_mut().for_each(|x| *x = -*x);
    }
}

/// Singular values of `A`, in non-increasing order.
pub fn singular_values(a: MatRef<'_, f64>) -> Result<Vec<f64>> {
    let (m, n) = (a.nrows(), a.ncols());
    let k = m.min(n);
    if k == 0 {
        return Ok(Vec::new());
    }
    if let Some((i, j)) = first_non_finite(a) {
        return Err(Error::invalid(format!(
            "singular values: entry ({i},{j}) is not finite"
        )));
    }
    let par = Par::Seq;
    let mut d = Diag::<f64>::zeros(k);
    let mut buf = MemBuffer::new(svd::svd_scratch::<f64>(
        m,
        n,
        ComputeSvdVectors::No,
        ComputeSvdVectors::No,
        par,
        Default::default(),
    ));
    svd::svd(
        a,
        d.as_mut(),
        None,
        None,
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| Error::invalid(format!("SVD ({m}×{n}) failed: {e:?}")))?;
    super::clear_upper_vector_state();
    let mut s: Vec<f64> = (0..k).map(|i| d[i]).collect();
    s.sort_by(|x, y| y.total_cmp(x));
    Ok(s)
}

/// Eigenvalues `(re, im)` of a general square real matrix, sorted by decreasing modulus (ties:
/// larger real part first, then larger imaginary part).
pub fn eigenvalues(a: MatRef<'_, f64>) -> Result<Vec<(f64, f64)>> {
    let n = a.nrows();
    if a.ncols() != n {
        return Err(Error::shape(format!(
            "eigenvalues need a square matrix, got {}×{}",
            a.nrows(),
            a.ncols()
        )));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    if let Some((i, j)) = first_non_finite(a) {
        return Err(Error::invalid(format!(
            "eigenvalues: entry ({i},{j}) is not finite"
        )));
    }
    let par = Par::Seq;
    let mut re = Diag::<f64>::zeros(n);
    let mut im = Diag::<f64>::zeros(n);
    let mut buf = MemBuffer::new(evd::evd_scratch::<f64>(
        n,
        ComputeEigenvectors::No,
        ComputeEigenvectors::No,
        par,
        Default::default(),
    ));
    evd::evd_real(
        a,
        re.as_mut(),
        im.as_mut(),
        None,
        None,
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| Error::invalid(format!("eigenvalues ({n}×{n}) failed: {e:?}")))?;
    super::clear_upper_vector_state();
    let mut v: Vec<(f64, f64)> = (0..n).map(|i| (re[i], im[i])).collect();
    v.sort_by(|x, y| {
        let (mx, my) = (x.0.hypot(x.1), y.0.hypot(y.1));
        my.total_cmp(&mx)
            .then(y.0.total_cmp(&x.0))
            .then(y.1.total_cmp(&x.1))
    });
    Ok(v)
}

/// Cholesky factor `L` (lower, upper triangle zeroed) of `(C + Cᵀ)/2 + λI`, sequential; an error
/// when that matrix is not numerically positive definite.
pub fn cholesky(c: MatRef<'_, f64>, lambda: f64) -> Result<Mat<f64>> {
    let mut l = symmetrise(c)?;
    let n = l.nrows();
    if let Some((i, j)) = first_non_finite(l.as_ref()) {
        return Err(Error::invalid(format!(
            "Cholesky: entry ({i},{j}) is not finite"
        )));
    }
    for i in 0..n {
        l[(i, i)] += lambda;
    }
    let par = Par::Seq;
    let mut buf = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<f64>(
        n,
        par,
        Default::default(),
    ));
    llt::factor::cholesky_in_place(
        l.as_mut(),
        Default::default(),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| {
        Error::invalid(format!(
            "Cholesky ({n}×{n}, ridge {lambda:e}): not positive definite ({e:?})"
        ))
    })?;
    super::clear_upper_vector_state();
    for j in 0..n {
        for i in 0..j {
            l[(i, j)] = 0.0;
        }
    }
    Ok(l)
}

/// `X = (L Lᵀ)^{-1} B` for a Cholesky factor from [`cholesky`], sequential.
pub fn cholesky_solve(l: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
    if l.nrows() != b.nrows() {
        return Err(Error::shape(format!(
            "Cholesky solve: factor {}×{}, right-hand side {}×{}",
            l.nrows(),
            l.ncols(),
            b.nrows(),
            b.ncols()
        )));
    }
    let mut x = b.to_owned();
    let par = Par::Seq;
    let mut buf = MemBuffer::new(llt::solve::solve_in_place_scratch::<f64>(
        l.nrows(),
        b.ncols(),
        par,
    ));
    llt::solve::solve_in_place(l, x.as_mut(), par, MemStack::new(&mut buf));
    super::clear_upper_vector_state();
    Ok(x)
}

/// Frobenius norm.
pub fn frobenius(a: MatRef<'_, f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            s += a[(i, j)] * a[(i, j)];
        }
    }
    s.sqrt()
}

/// `‖A − B‖_F / ‖B‖_F` (B is the reference; an all-zero reference gives the absolute difference).
pub fn rel_frobenius(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<f64> {
    if a.nrows() != b.nrows() || a.ncols() != b.ncols() {
        return Err(Error::shape(format!(
            "relative error of a {}×{} against a {}×{} matrix",
            a.nrows(),
            a.ncols(),
            b.nrows(),
            b.ncols()
        )));
    }
    let d = Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] - b[(i, j)]);
    let nb = frobenius(b);
    let nd = frobenius(d.as_ref());
    Ok(if nb > 0.0 { nd / nb } else { nd })
}

/// A row-major `Vec<f64>` (`rows × cols`) as a matrix.
pub fn from_row_major(v: &[f64], rows: usize, cols: usize) -> Result<Mat<f64>> {
    if v.len() != rows * cols {
        return Err(Error::shape(format!(
            "{} values cannot form a {rows}×{cols} matrix",
            v.len()
        )));
    }
    Ok(Mat::from_fn(rows, cols, |i, j| v[i * cols + j]))
}

/// A matrix as a row-major `Vec<f64>`.
pub fn to_row_major(a: MatRef<'_, f64>) -> Vec<f64> {
    let mut v = Vec::with_capacity(a.nrows() * a.ncols());
    for i in 0..a.nrows() {
        for j in 0..a.ncols() {
            v.push(a[(i, j)]);
        }
    }
    v
}

fn first_non_finite(a: MatRef<'_, f64>) -> Option<(usize, usize)> {
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            if !a[(i, j)].is_finite() {
                return Some((i, j));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_eigen_of_gram_is_the_top_eigenpair_of_the_full_product() {
        // a 3 × 7 factor: BᵀB is 7 × 7 of rank 3
        let b = Mat::from_fn(3, 7, |i, j| {
            ((i * 7 + j) as f64 * 0.37).sin() + 0.1 * i as f64
        });
        let (lam, v) = top_eigen_of_gram(b.as_ref()).unwrap();
        let (vals, u) = sym_eigen(mul_tn(b.as_ref(), b.as_ref()).unwrap().as_ref()).unwrap();
        assert!(
            (lam - vals[6]).abs() < 1e-12 * vals[6],
            "{lam} vs {}",
            vals[6]
        );
        let dot: f64 = (0..7).map(|i| v[i] * u[(i, 6)]).sum();
        assert!((dot.abs() - 1.0).abs() < 1e-12, "|⟨v, u⟩| = {}", dot.abs());
        let big = (0..7).fold(0, |m, i| if v[i].abs() > v[m].abs() { i } else { m });
        assert!(v[big] > 0.0);
        let (z, e) = top_eigen_of_gram(Mat::<f64>::zeros(2, 3).as_ref()).unwrap();
        assert_eq!((z, e), (0.0, vec![1.0, 0.0, 0.0]));
        assert!(top_eigen_of_gram(Mat::<f64>::zeros(0, 3).as_ref()).is_err());
    }

    #[test]
    fn decompositions_match_definitions() {
        let a = Mat::from_fn(4, 4, |i, j| 1.0 / (1.0 + i as f64 + j as f64));
        let (l, u) = sym_eigen(a.as_ref()).unwrap();
        assert!(l.windows(2).all(|w| w[0] <= w[1]));
        let d = Mat::from_fn(4, 4, |i, j| if i == j { l[i] } else { 0.0 });
        let r = mul(mul(u.as_ref(), d.as_ref()).unwrap().as_ref(), u.transpose()).unwrap();
        assert!(rel_frobenius(r.as_ref(), a.as_ref()).unwrap() < 1e-13);
        let s = singular_values(a.as_ref()).unwrap();
        for (x, y) in s.iter().zip(l.iter().rev()) {
            assert!((x - y).abs() < 1e-13);
        }
        // A rotation by 90°: eigenvalues ±i.
        let r = Mat::from_fn(2, 2, |i, j| match (i, j) {
            (0, 1) => -1.0,
            (1, 0) => 1.0,
            _ => 0.0,
        });
        let e = eigenvalues(r.as_ref()).unwrap();
        assert!(e
            .iter()
            .all(|(re, im)| re.abs() < 1e-14 && (im.abs() - 1.0).abs() < 1e-14));
        let b = Mat::from_fn(4, 2, |i, j| (i + 2 * j) as f64);
        let l = cholesky(a.as_ref(), 0.0).unwrap();
        let x = cholesky_solve(l.as_ref(), b.as_ref()).unwrap();
        let ax = mul(a.as_ref(), x.as_ref()).unwrap();
        assert!(rel_frobenius(ax.as_ref(), b.as_ref()).unwrap() < 1e-10);
        let neg = Mat::from_fn(2, 2, |i, j| if i == j { -1.0 } else { 0.0 });
        assert!(cholesky(neg.as_ref(), 0.0).is_err());
        let bad = Mat::from_fn(2, 2, |_, _| f64::NAN);
        assert!(sym_eigen(bad.as_ref()).is_err());
    }
}
