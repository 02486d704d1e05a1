//! Operator bases on one layer (SPEC §4, paper eq. 4–5, RG-NOTES §1.3 and §5 row A4).
//!
//! An operator is a binary monomial `O_S(h) = Π_{i∈S} h_i` over a non-empty set `S` of unit
//! indices, stored as a sorted `Vec<usize>`. The effective Hamiltonian of a layer is expanded as
//! `H(h) = Σ_α g_α O_α(h)`; the bases below choose which `O_α` are kept.
//!
//! Because the units of a layer are independent given the layer that produced it, the conditional
//! expectation of a monomial is analytic: `E[O_S | h_prev] = Π_{i∈S} p_i` with `p` the unit
//! probabilities (Rao-Blackwellisation, RG-NOTES §3.2), and likewise
//! `Cov(O_S, O_T | h_prev) = Π_{S∪T} p − Π_S p · Π_T p`.

use std::collections::HashMap;

use faer::Mat;

use crate::error::{Error, Result};

/// Largest width for which the complete basis (`2^n − 1` monomials) is built (SPEC §4: "only for
/// tiny layers").
pub const MAX_COMPLETE_WIDTH: usize = 12;

/// How a basis was built (kept for reports; the monomial list is what counts).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BasisKind {
    /// `{h_i}` (SPEC §4 "order 1").
    Order1,
    /// `{h_i} ∪ {h_i h_j, i<j}` (SPEC §4 "order 2").
    Order2,
    /// A caller-given monomial list.
    Monomials,
    /// `{h_i}` plus the `pairs` pairs of largest |covariance| in pilot samples, chosen once and
    /// then frozen (RG-NOTES §5 A4).
    TopPairs {
        /// Number of pairs kept.
        pairs: usize,
    },
    /// `{h_i}` plus horizontal and vertical nearest-neighbour pairs on a `rows × cols` image grid,
    /// unit index `r·cols + c` (RG-NOTES §5 A4, the physics-style choice for the input layer).
    GridNearestNeighbour {
        /// Image rows.
        rows: usize,
        /// Image columns.
        cols: usize,
    },
    /// All `2^n − 1` non-empty monomials, by degree then lexicographically (SPEC §4 "complete").
    Complete,
}

/// A list of monomials on a layer of `width` binary units (SPEC §4).
///
/// Order of the operators: `Order1` is `h_0 … h_{n-1}`; `Order2` is those, then `h_i h_j` for
/// `i < j` in lexicographic order; `Complete` is by degree then lexicographic (so its first `n`
/// operators are the order-1 ones). `TopPairs` and `GridNearestNeighbour` are order 1 followed by
/// their pairs in lexicographic order.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorBasis {
    width: usize,
    monomials: Vec<Vec<usize>>,
    kind: BasisKind,
    /// For evaluation: index of the monomial without its last unit, when it is earlier in the list.
    prefix: Vec<Option<usize>>,
}

impl OperatorBasis {
    /// The order-1 basis `{h_i}` on `width` units (SPEC §4).
    pub fn order1(width: usize) -> Result<Self> {
        check_width_positive(width)?;
        Ok(Self::build(
            width,
            (0..width).map(|i| vec![i]).collect(),
            BasisKind::Order1,
        ))
    }

    /// The order-2 basis `{h_i} ∪ {h_i h_j, i<j}` on `width` units (SPEC §4).
    pub fn order2(width: usize) -> Result<Self> {
        check_width_positive(width)?;
        let mut m: Vec<Vec<usize>> = (0..width).map(|i| vec![i]).collect();
        for i in 0..width {
            for j in (i + 1)..width {
                m.push(vec![i, j]);
            }
        }
        Ok(Self::build(width, m, BasisKind::Order2))
    }

    /// A caller-given list of monomials (SPEC §4 "subsets"). Each must be non-empty, strictly
    /// increasing and inside `0..width`; no monomial may repeat.
    pub fn from_monomials(width: usize, monomials: Vec<Vec<usize>>) -> Result<Self> {
        check_width_positive(width)?;
        if monomials.is_empty() {
            return Err(Error::invalid("operator basis: the monomial list is empty"));
        }
        let mut seen = HashMap::new();
        for (a, m) in monomials.iter().enumerate() {
            if m.is_empty() {
                return Err(Error::invalid(format!(
                    "operator basis: monomial {a} is empty (the constant is not an operator)"
                )));
            }
            if let Some(&u) = m.iter().find(|&&u| u >= width) {
                return Err(Error::invalid(format!(
                    "operator basis: monomial {a} = {m:?} names unit {u} of a {width}-unit layer"
                )));
            }
            if m.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::invalid(format!(
                    "operator basis: monomial {a} = {m:?} is not strictly increasing"
                )));
            }
            if let Some(b) = seen.insert(m.clone(), a) {
                return Err(Error::invalid(format!(
                    "operator basis: monomials {b} and {a} are both {m:?}"
                )));
            }
        }
        Ok(Self::build(width, monomials, BasisKind::Monomials))
    }

    /// Order 1 plus the `pairs` pairs `h_i h_j` of largest `|Cov(h_i, h_j)|` in pilot samples
    /// (`samples`: row-major `S × width`, S ≥ 2), chosen once and then frozen for all inputs so that
    /// the stability matrices stay comparable (RG-NOTES §5 A4). Ties are broken by `(i, j)`;
    /// `pairs` is clipped to `width·(width−1)/2`. The chosen pairs are stored in lexicographic
    /// order after the order-1 operators.
    pub fn top_pairs(samples: &[f32], width: usize, pairs: usize) -> Result<Self> {
        check_width_positive(width)?;
        if !samples.len().is_multiple_of(width) {
            return Err(Error::shape(format!(
                "top_pairs: {} pilot values are not a multiple of the width {width}",
                samples.len()
            )));
        }
        let s = samples.len() / width;
        if s < 2 {
            return Err(Error::invalid(format!(
                "top_pairs: need at least 2 pilot samples, got {s}"
            )));
        }
        let values = Mat::from_fn(s, width, |r, i| samples[r * width + i] as f64);
        let cov = crate::rg::correlators::covariance(values.as_ref(), values.as_ref())?;
        let mut cand: Vec<(f64, usize, usize)> = Vec::with_capacity(width * (width - 1) / 2);
        for i in 0..width {
            for j in (i + 1)..width {
                cand.push((cov[(i, j)].abs(), i, j));
            }
        }
        cand.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
        let take = pairs.min(cand.len());
        let mut chosen: Vec<(usize, usize)> = cand[..take].iter().map(|c| (c.1, c.2)).collect();
        chosen.sort_unstable();
        let mut m: Vec<Vec<usize>> = (0..width).map(|i| vec![i]).collect();
        m.extend(chosen.into_iter().map(|(i, j)| vec![i, j]));
        Ok(Self::build(width, m, BasisKind::TopPairs { pairs: take }))
    }

    /// Order 1 plus the nearest-neighbour pairs of a `rows × cols` image grid (unit `r·cols + c`
    /// joined to `r·cols + c + 1` and `(r+1)·cols + c`), RG-NOTES §5 A4.
    pub fn grid_nearest_neighbour(rows: usize, cols: usize) -> Result<Self> {
        let width = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::invalid("grid_nearest_neighbour: rows·cols overflows"))?;
        check_width_positive(width)?;
        let mut pairs = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                let i = r * cols + c;
                if c + 1 < cols {
                    pairs.push((i, i + 1));
                }
                if r + 1 < rows {
                    pairs.push((i, i + cols));
                }
            }
        }
        pairs.sort_unstable();
        let mut m: Vec<Vec<usize>> = (0..width).map(|i| vec![i]).collect();
        m.extend(pairs.into_iter().map(|(i, j)| vec![i, j]));
        Ok(Self::build(
            width,
            m,
            BasisKind::GridNearestNeighbour { rows, cols },
        ))
    }

    /// The complete basis: all `2^n − 1` non-empty monomials, by degree then lexicographically
    /// (SPEC §4; only `n ≤` [`MAX_COMPLETE_WIDTH`]). Any full-support distribution on the layer is
    /// `exp(−Σ g_S O_S)/Z` for exactly one coupling vector (RG-NOTES §1.3).
    pub fn complete(width: usize) -> Result<Self> {
        check_width_positive(width)?;
        if width > MAX_COMPLETE_WIDTH {
            return Err(Error::invalid(format!(
                "complete basis: width {width} exceeds {MAX_COMPLETE_WIDTH} (2^n − 1 operators)"
            )));
        }
        let mut m = Vec::with_capacity((1 << width) - 1);
        for d in 1..=width {
            combinations(width, d, &mut m);
        }
        Ok(Self::build(width, m, BasisKind::Complete))
    }

    fn build(width: usize, monomials: Vec<Vec<usize>>, kind: BasisKind) -> Self {
        let prefix = prefix_table(&monomials);
        OperatorBasis {
            width,
            monomials,
            kind,
            prefix,
        }
    }

    /// Number of units of the layer.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of operators `m`.
    pub fn len(&self) -> usize {
        self.monomials.len()
    }

    /// Always false: a basis has at least one operator.
    pub fn is_empty(&self) -> bool {
        self.monomials.is_empty()
    }

    /// The monomials, in operator order.
    pub fn monomials(&self) -> &[Vec<usize>] {
        &self.monomials
    }

    /// How the basis was built.
    pub fn kind(&self) -> &BasisKind {
        &self.kind
    }

    /// Highest degree of any operator.
    pub fn max_degree(&self) -> usize {
        self.monomials.iter().map(|m| m.len()).max().unwrap_or(0)
    }

    /// Row index of the order-1 operator `h_i` for every unit i, or an error naming the first unit
    /// whose `h_i` is missing. The first-layer couplings `g^{(1)} = −(W_1 x + a_1)` live on these
    /// rows (SPEC §6, RG-NOTES §1.3 and A5).
    pub fn order1_rows(&self) -> Result<Vec<usize>> {
        let mut rows = vec![usize::MAX; self.width];
        for (a, m) in self.monomials.iter().enumerate() {
            if m.len() == 1 {
                rows[m[0]] = a;
            }
        }
        if let Some(i) = rows.iter().position(|&r| r == usize::MAX) {
            return Err(Error::invalid(format!(
                "operator basis ({:?}, {} operators) lacks the order-1 operator h_{i}",
                self.kind,
                self.len()
            )));
        }
        Ok(rows)
    }

    fn check_batch(&self, values: usize, s: usize, what: &str) -> Result<()> {
        if values != s * self.width {
            return Err(Error::shape(format!(
                "{what}: {values} values for {s} samples of a {}-unit layer",
                self.width
            )));
        }
        Ok(())
    }

    /// Operator values `O_α(h)` for one state (any real vector of length `width`; `out` gets `m`
    /// values).
    pub fn evaluate_one(&self, h: &[f64], out: &mut [f64]) {
        debug_assert_eq!(h.len(), self.width);
        debug_assert_eq!(out.len(), self.len());
        for (a, m) in self.monomials.iter().enumerate() {
            out[a] = match self.prefix[a] {
                Some(p) => out[p] * h[m[m.len() - 1]],
                None => m.iter().map(|&i| h[i]).product(),
            };
        }
    }

    /// Operator values on a batch of `s` states (row-major `s × width`, f32 {0,1} samples or any
    /// real values) → `s × m` matrix (SPEC §4).
    pub fn evaluate(&self, states: &[f32], s: usize) -> Result<Mat<f64>> {
        self.check_batch(states.len(), s, "evaluate")?;
        let w = self.width;
        // Column-major throughout: the units' columns first, then each monomial's column as its
        // prefix's column times one unit column (or the product of its unit columns).
        let mut units = Mat::<f64>::zeros(s, w);
        for (r, row) in states.chunks_exact(w).enumerate() {
            for (i, &x) in row.iter().enumerate() {
                units[(r, i)] = x as f64;
            }
        }
        let mut out = Mat::<f64>::zeros(s, self.len());
        for (a, m) in self.monomials.iter().enumerate() {
            let last = units.col_as_slice(m[m.len() - 1]);
            let mut col = match self.prefix[a] {
                Some(p) => out.col_as_slice(p).to_vec(),
                None => {
                    let mut c = vec![1.0; s];
                    for &i in &m[..m.len() - 1] {
                        for (o, &u) in c.iter_mut().zip(units.col_as_slice(i)) {
                            *o *= u;
                        }
                    }
                    c
                }
            };
            for (o, &u) in col.iter_mut().zip(last) {
                *o *= u;
            }
            out.col_as_slice_mut(a).copy_from_slice(&col);
        }
        Ok(out)
    }

    /// For each monomial, the index of the monomial without its last unit when that comes earlier
    /// in the list (evaluation by one product per monomial).
    pub(crate) fn prefixes(&self) -> &[Option<usize>] {
        &self.prefix
    }

    /// Rao-Blackwellised operator values: given per-sample unit probabilities `probs` (row-major
    /// `s × width`, units independent given the previous layer), `E[O_S] = Π_{i∈S} p_i`
    /// (RG-NOTES §3.2). Returns `s × m`.
    pub fn conditional_means(&self, probs: &[f32], s: usize) -> Result<Mat<f64>> {
        // The product formula is the same as evaluation on the probability vector.
        self.check_batch(probs.len(), s, "conditional_means")?;
        self.evaluate(probs, s)
    }

    /// `E[O_S] = Π_{i∈S} p_i` for one probability vector (f64), the analytic mean of a
    /// product-Bernoulli layer.
    pub fn conditional_means_one(&self, p: &[f64]) -> Result<Vec<f64>> {
        if p.len() != self.width {
            return Err(Error::shape(format!(
                "conditional_means_one: {} probabilities for a {}-unit layer",
                p.len(),
                self.width
            )));
        }
        let mut out = vec![0.0; self.len()];
        self.evaluate_one(p, &mut out);
        Ok(out)
    }

    /// The conditional covariance of the operators of a product-Bernoulli layer with unit means `p`:
    /// `Cov(O_S, O_T) = Π_{S∪T} p − Π_S p · Π_T p` (zero when `S ∩ T = ∅`), an `m × m` matrix.
    pub fn conditional_covariance(&self, p: &[f64]) -> Result<Mat<f64>> {
        let mu = self.conditional_means_one(p)?;
        let m = self.len();
        let mut c = Mat::<f64>::zeros(m, m);
        for a in 0..m {
            for b in a..m {
                let v = if intersects(&self.monomials[a], &self.monomials[b]) {
                    union_product(&self.monomials[a], &self.monomials[b], p) - mu[a] * mu[b]
                } else {
                    0.0
                };
                c[(a, b)] = v;
                c[(b, a)] = v;
            }
        }
        Ok(c)
    }
}

fn check_width_positive(width: usize) -> Result<()> {
    if width == 0 {
        return Err(Error::invalid("operator basis: the layer width is zero"));
    }
    Ok(())
}

/// All `d`-subsets of `0..n` in lexicographic order, appended to `out`.
fn combinations(n: usize, d: usize, out: &mut Vec<Vec<usize>>) {
    let mut c: Vec<usize> = (0..d).collect();
    loop {
        out.push(c.clone());
        // Find the rightmost index that can still move right.
        let mut i = d;
        while i > 0 && c[i - 1] == n - d + i - 1 {
            i -= 1;
        }
        if i == 0 {
            return;
        }
        i -= 1;
        c[i] += 1;
        for j in (i + 1)..d {
            c[j] = c[j - 1] + 1;
        }
    }
}

/// For each monomial, the index of the monomial without its last unit when that appears earlier.
pub(crate) fn prefix_table(monomials: &[Vec<usize>]) -> Vec<Option<usize>> {
    let mut index: HashMap<&[usize], usize> = HashMap::with_capacity(monomials.len());
    let mut prefix = Vec::with_capacity(monomials.len());
    for (a, m) in monomials.iter().enumerate() {
        let p = if m.len() >= 2 {
            index.get(&m[..m.len() - 1]).copied()
        } else {
            None
        };
        prefix.push(p);
        index.entry(m.as_slice()).or_insert(a);
    }
    prefix
}

/// Whether two sorted index lists share an element.
pub(crate) fn intersects(a: &[usize], b: &[usize]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// The sorted union of two sorted index lists.
pub(crate) fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j == b.len() || (i < a.len() && a[i] < b[j]) {
            out.push(a[i]);
            i += 1;
        } else if i == a.len() || b[j] < a[i] {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
            j += 1;
        }
    }
    out
}

fn union_product(a: &[usize], b: &[usize], p: &[f64]) -> f64 {
    union(a, b).iter().map(|&i| p[i]).product()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_have_the_documented_layout() {
        let b = OperatorBasis::order2(4).unwrap();
        assert_eq!(b.len(), 4 + 6);
        assert_eq!(b.monomials()[4], vec![0, 1]);
        assert_eq!(b.monomials()[9], vec![2, 3]);
        let c = OperatorBasis::complete(4).unwrap();
        assert_eq!(c.len(), 15);
        assert_eq!(c.order1_rows().unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(c.monomials()[14], vec![0, 1, 2, 3]);
        assert_eq!(c.monomials()[4], vec![0, 1]);
        assert!(OperatorBasis::complete(13).is_err());
        let g = OperatorBasis::grid_nearest_neighbour(2, 3).unwrap();
        // 6 units; horizontal pairs 2 per row × 2 rows, vertical 3.
        assert_eq!(g.len(), 6 + 4 + 3);
        assert!(g.monomials().contains(&vec![0, 3]));
        assert!(g.monomials().contains(&vec![4, 5]));
        assert!(!g.monomials().contains(&vec![2, 3]));
        assert!(OperatorBasis::from_monomials(3, vec![vec![1, 0]]).is_err());
        assert!(OperatorBasis::from_monomials(3, vec![vec![0], vec![0]]).is_err());
        assert!(OperatorBasis::from_monomials(3, vec![vec![3]]).is_err());
        let partial = OperatorBasis::from_monomials(3, vec![vec![0], vec![1, 2]]).unwrap();
        let e = partial.order1_rows().unwrap_err().to_string();
        assert!(e.contains("h_1"), "{e}");
    }

    #[test]
    fn evaluation_and_analytic_moments_agree_with_enumeration() {
        let b = OperatorBasis::complete(3).unwrap();
        let h = [1.0f32, 0.0, 1.0, 1.0, 1.0, 1.0];
        let v = b.evaluate(&h, 2).unwrap();
        for (a, m) in b.monomials().iter().enumerate() {
            let e0: f64 = m.iter().map(|&i| h[i] as f64).product();
            let e1: f64 = m.iter().map(|&i| h[3 + i] as f64).product();
            assert_eq!(v[(0, a)], e0);
            assert_eq!(v[(1, a)], e1);
        }
        // Conditional moments of a product-Bernoulli layer against enumeration of its 8 states.
        let p = [0.2, 0.7, 0.45];
        let mu = b.conditional_means_one(&p).unwrap();
        let cov = b.conditional_covariance(&p).unwrap();
        let q = crate::exact::product_bernoulli(&p);
        let m = b.len();
        let mut mean = vec![0.0; m];
        let mut second = vec![0.0; m * m];
        let mut o = vec![0.0; m];
        for (s, &w) in q.iter().enumerate() {
            b.evaluate_one(&crate::exact::state(s, 3), &mut o);
            for a in 0..m {
                mean[a] += w * o[a];
                for c in 0..m {
                    second[a * m + c] += w * o[a] * o[c];
                }
            }
        }
        for a in 0..m {
            assert!((mean[a] - mu[a]).abs() < 1e-15);
            for c in 0..m {
                let e = second[a * m + c] - mean[a] * mean[c];
                assert!((e - cov[(a, c)]).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn top_pairs_picks_the_strongest_covariances() {
        // Units 0 and 2 copy each other, unit 1 is independent noise, unit 3 anti-copies 0.
        let mut s = Vec::new();
        for t in 0..200u32 {
            let a = (t % 2) as f32;
            let n = ((t / 2) % 2) as f32;
            s.extend_from_slice(&[a, n, a, 1.0 - a]);
        }
        let b = OperatorBasis::top_pairs(&s, 4, 3).unwrap();
        assert_eq!(b.len(), 7);
        let pairs: Vec<_> = b.monomials()[4..].to_vec();
        assert_eq!(pairs, vec![vec![0, 2], vec![0, 3], vec![2, 3]]);
        assert_eq!(b.kind(), &BasisKind::TopPairs { pairs: 3 });
    }
}
