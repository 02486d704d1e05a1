//! Connected correlators of operators between and within layers (SPEC §5, RG-NOTES §3.2), with
//! delete-one-block jackknife error bars.
//!
//! Three estimators of `Cov(O(L_j), O(L_i))` from `S` paired ancestral samples:
//! * [`Estimator::Plain`] — centred products of the sampled operator values (float);
//! * [`Estimator::BitPacked`] — the same estimator for binary monomials, with the second moments
//!   counted exactly by AND + popcount on operators packed 64 samples to a word (SPEC §5: "bit-packed
//!   AND + popcount computes them exactly and fast"); it agrees with `Plain` to rounding;
//! * [`Estimator::RaoBlackwell`] — the units of a layer are independent given the layer that
//!   produced it, so `O(L_j)` is replaced by its analytic conditional mean `E[O|L_{j-1}] = Π p`
//!   in cross terms, and the self term uses the law of total covariance
//!   `Cov(O) = Cov(E[O|L_{j-1}]) + E[Cov(O|L_{j-1})]` with
//!   `Cov(O_S, O_T | ·) = Π_{S∪T} p − Π_S p Π_T p` (RG-NOTES §3.2).
//!
//! **Flow order.** Both networks are Markov chains sampled from a fixed start (x or y):
//! `L_0 → L_1 → … → L_M`, each layer's units independent given the previous layer.
//! Classification (SPEC §1): `L_j = h_j`, M = N. Generation (SPEC §2): `L_j = h_{N−j}`, M = N.
//! [`FlowCorrelators`] and [`FlowMoments`] hold everything in this order.
//!
//! One file per part: [`bitpacked`] (AND + popcount counts), [`rao_blackwell`] (the analytic
//! conditional terms), [`flow`] (the sums along a flow and their correlators), [`jackknife`]
//! (delete-one-block error bars).

mod bitpacked;
mod flow;
mod jackknife;
mod rao_blackwell;

pub use bitpacked::{covariance_bitpacked, PackedOperators};
pub use flow::{FirstProbs, FlowKernels, FlowMoments, MomentOptions, DEFAULT_MEMORY_BUDGET};
pub use jackknife::{block_range, jackknife, jackknife_samples, Jackknife};
use rao_blackwell::{add_conditional_covariances, overlapping_pairs, UnionTable, PAIR_ROWS};
pub use rao_blackwell::{covariance_rao_blackwell_cross, covariance_rao_blackwell_self};

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::linalg::dense;

/// Which estimator of the connected correlators to use (SPEC §5, RG-NOTES §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Estimator {
    /// Centred products of sampled operator values.
    Plain,
    /// As `Plain`, second moments counted exactly by AND + popcount (binary states only).
    BitPacked,
    /// Analytic conditional means in cross terms, law of total covariance in self terms.
    RaoBlackwell,
}

/// Sample covariance `Cov(A, B)` of the columns of `a` (`S × m_a`) and `b` (`S × m_b`), normalised
/// by `S − 1` (RG-NOTES §3.2 "Plain"): the columns are shifted by their means (two-pass) and the
/// sums go through [`covariance_from_sums`], the one formula every covariance of the crate uses.
pub fn covariance(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let s = a.nrows();
    if b.nrows() != s {
        return Err(Error::shape(format!(
            "covariance: {} samples against {}",
            s,
            b.nrows()
        )));
    }
    if s < 2 {
        return Err(Error::invalid(format!(
            "covariance needs at least 2 samples, got {s}"
        )));
    }
    let (ca, sa) = centred(a);
    let (cb, sb) = centred(b);
    let mut c = dense::mul_tn(ca.as_ref(), cb.as_ref())?;
    covariance_from_sums(&mut c, &sa, &sb, s)?;
    Ok(c)
}

/// `Cov = (Σxyᵀ − Σx Σyᵀ / n)/(n − 1)` computed in place from the sums of n samples (`sxy` holds
/// `Σ x yᵀ` on entry and the covariance on return). Shift-invariant: the sums may be of values
/// shifted by any fixed vectors, which is how the callers keep it free of cancellation.
pub fn covariance_from_sums(sxy: &mut Mat<f64>, sx: &[f64], sy: &[f64], n: usize) -> Result<()> {
    if sx.len() != sxy.nrows() || sy.len() != sxy.ncols() {
        return Err(Error::shape(format!(
            "covariance from sums: {}×{} second moments with {} and {} first moments",
            sxy.nrows(),
            sxy.ncols(),
            sx.len(),
            sy.len()
        )));
    }
    if n < 2 {
        return Err(Error::invalid(format!(
            "covariance needs at least 2 samples, got {n}"
        )));
    }
    let nf = n as f64;
    for j in 0..sxy.ncols() {
        for i in 0..sxy.nrows() {
            sxy[(i, j)] = (sxy[(i, j)] - sx[i] * sy[j] / nf) / (nf - 1.0);
        }
    }
    Ok(())
}

/// The columns of `a` minus their means, and the (then ≈ 0) column sums of the result.
fn centred(a: MatRef<'_, f64>) -> (Mat<f64>, Vec<f64>) {
    let s = a.nrows();
    let mut out = a.to_owned();
    let mut sums = vec![0.0; a.ncols()];
    for j in 0..a.ncols() {
        let mean = (0..s).map(|i| a[(i, j)]).sum::<f64>() / s as f64;
        for i in 0..s {
            out[(i, j)] -= mean;
        }
        sums[j] = (0..s).map(|i| out[(i, j)]).sum();
    }
    (out, sums)
}

/// Connected correlators along a flow `L_1 … L_M` (see the module doc for the flow order):
/// everything the stability matrices (SPEC §5) and the Fisher matrices (SPEC §6–7) need.
#[derive(Clone, Debug)]
pub struct FlowCorrelators {
    /// `C_{j,j} = Cov(O(L_j), O(L_j))` for j = 1…M (element `j−1`), `m_j × m_j`.
    pub self_cov: Vec<Mat<f64>>,
    /// `C_{j,j−1} = Cov(O(L_j), O(L_{j−1}))` for j = 2…M (element `j−2`), `m_j × m_{j−1}`.
    pub cross_cov: Vec<Mat<f64>>,
    /// `Cov(O(L_M), O(L_1))`, `m_M × m_1`, for the direct estimator (SPEC §6, RG-NOTES §1.6);
    /// equals `cross_cov[0]` when M = 2 and `self_cov[0]` when M = 1.
    pub direct_cov: Option<Mat<f64>>,
    /// Rao-Blackwellised correlators only: the plain sample covariances `Cov(O(L_j))` of the
    /// sampled values of layers j = 1…M−1 (element `j−1`), from the same samples. `None` when
    /// `self_cov` are already those (plain and bit-packed estimators, exact correlators).
    ///
    /// Why: the Rao-Blackwellised cross term `Cov(E[O(L_j)|L_{j−1}], O(L_{j−1}))` and self term
    /// `Cov(E[O(L_j)|L_{j−1}]) + E[Cov(O(L_j)|L_{j−1})]` are the sample covariance of
    /// `(E[O(L_j)|L_{j−1}], O(L_{j−1}))` plus a positive semi-definite block; paired with the
    /// Rao-Blackwellised `C_{j−1,j−1}` (a different estimate of the source layer) the joint
    /// matrix need not be positive semi-definite, and canonical correlations above 1 followed
    /// (2.36 on a trained digits model, order 2, S = 5000). Paired with this plain source
    /// covariance it is PSD by construction ([`FlowCorrelators::whitening`]).
    pub source_cov: Option<Vec<Mat<f64>>>,
}

impl FlowCorrelators {
    /// Number of flow layers M.
    pub fn depth(&self) -> usize {
        self.self_cov.len()
    }

    /// Operator counts `m_1 … m_M`.
    pub fn sizes(&self) -> Vec<usize> {
        self.self_cov.iter().map(|c| c.nrows()).collect()
    }

    /// The three blocks of a mutually consistent, positive semi-definite joint estimate of step
    /// j = 2…M, `(C_{j,j}, C_{j,j−1}, C_{j−1,j−1})`, for the canonical correlations: the target
    /// and cross blocks as estimated, the source block from [`FlowCorrelators::source_cov`] when
    /// present (see there). The stability matrices and Fisher matrices keep using `self_cov`.
    pub fn whitening(
        &self,
        j: usize,
    ) -> Result<(MatRef<'_, f64>, MatRef<'_, f64>, MatRef<'_, f64>)> {
        if j < 2 || j > self.depth() {
            return Err(Error::invalid(format!(
                "flow correlators: no step into layer {j} of {}",
                self.depth()
            )));
        }
        let source = match &self.source_cov {
            Some(v) => v.get(j - 2).ok_or_else(|| {
                Error::shape(format!(
                    "flow correlators: {} source covariances for step {j}",
                    v.len()
                ))
            })?,
            None => &self.self_cov[j - 2],
        };
        Ok((
            self.self_cov[j - 1].as_ref(),
            self.cross_cov[j - 2].as_ref(),
            source.as_ref(),
        ))
    }

    /// Check that all shapes fit together.
    pub fn validate(&self) -> Result<()> {
        let m = self.depth();
        if m == 0 {
            return Err(Error::invalid("flow correlators: no layers"));
        }
        for (j, c) in self.self_cov.iter().enumerate() {
            if c.nrows() != c.ncols() {
                return Err(Error::shape(format!(
                    "flow correlators: C_{{{0},{0}}} is {1}×{2}",
                    j + 1,
                    c.nrows(),
                    c.ncols()
                )));
            }
        }
        if self.cross_cov.len() != m - 1 {
            return Err(Error::shape(format!(
                "flow correlators: {} layers need {} cross correlators, got {}",
                m,
                m - 1,
                self.cross_cov.len()
            )));
        }
        let sz = self.sizes();
        for (i, c) in self.cross_cov.iter().enumerate() {
            let j = i + 2;
            if c.nrows() != sz[j - 1] || c.ncols() != sz[j - 2] {
                return Err(Error::shape(format!(
                    "flow correlators: C_{{{j},{}}} is {}×{}, expected {}×{}",
                    j - 1,
                    c.nrows(),
                    c.ncols(),
                    sz[j - 1],
                    sz[j - 2]
                )));
            }
        }
        if let Some(src) = &self.source_cov {
            if src.len() != m - 1
                || src
                    .iter()
                    .zip(&sz)
                    .any(|(c, &k)| c.nrows() != k || c.ncols() != k)
            {
                return Err(Error::shape(format!(
                    "flow correlators: source covariances {:?} for layers of {sz:?} operators",
                    src.iter().map(|c| c.nrows()).collect::<Vec<_>>()
                )));
            }
        }
        if let Some(d) = &self.direct_cov {
            if d.nrows() != sz[m - 1] || d.ncols() != sz[0] {
                return Err(Error::shape(format!(
                    "flow correlators: Cov(O(L_M), O(L_1)) is {}×{}, expected {}×{}",
                    d.nrows(),
                    d.ncols(),
                    sz[m - 1],
                    sz[0]
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeepRbm;
    use crate::rg::operators::OperatorBasis;
    use crate::sample::sample_up;
    use crate::sample::LayerBatch;
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn samples(seed: u64, s: usize) -> (DeepRbm, Vec<LayerBatch>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut m = DeepRbm::random(&[5, 4, 4, 3], 1.2, &mut rng).unwrap();
        for l in &mut m.layers {
            for (i, a) in l.a.iter_mut().enumerate() {
                *a = 0.25 * i as f32 - 0.3;
            }
        }
        let x: Vec<f32> = [1.0, 0.0, 1.0, 1.0, 0.0].repeat(s);
        let l = sample_up(&m, &x, s, 3, &mut rng);
        (m, l)
    }

    #[test]
    fn bitpacked_correlators_equal_float_correlators() {
        let s = 1000; // not a multiple of 64: the last word is partial
        let (_, layers) = samples(7, s);
        let b1 = OperatorBasis::complete(4).unwrap();
        let b2 = OperatorBasis::order2(4).unwrap();
        let o1 = b1.evaluate(&layers[0].states, s).unwrap();
        let o2 = b2.evaluate(&layers[1].states, s).unwrap();
        let p1 = PackedOperators::pack(o1.as_ref()).unwrap();
        let p2 = PackedOperators::pack(o2.as_ref()).unwrap();
        let cf = covariance(o2.as_ref(), o1.as_ref()).unwrap();
        let cb = covariance_bitpacked(&p2, &p1).unwrap();
        let mut worst = 0.0f64;
        for i in 0..cf.nrows() {
            for j in 0..cf.ncols() {
                worst = worst.max((cf[(i, j)] - cb[(i, j)]).abs());
            }
        }
        assert!(worst < 1e-15, "bit-packed vs float: {worst}");
        // Exact integer co-occurrences.
        let n = p2.co_occurrences(&p1).unwrap();
        for i in 0..o2.ncols() {
            for j in 0..o1.ncols() {
                let e: f64 = (0..s).map(|r| o2[(r, i)] * o1[(r, j)]).sum();
                assert_eq!(n[i * o1.ncols() + j] as f64, e);
            }
        }
        // The flow accumulators: plain (raw sums of 0/1 products, exact in f64) and bit-packed
        // give the same correlators; both match the two-pass covariance to rounding.
        let bases = vec![b1.clone(), b2.clone(), OperatorBasis::order1(3).unwrap()];
        let fp = FlowMoments::accumulate(&layers, &bases, s, Estimator::Plain, 5, true).unwrap();
        let fb =
            FlowMoments::accumulate(&layers, &bases, s, Estimator::BitPacked, 5, true).unwrap();
        for ex in [None, Some(2)] {
            let a = fp.correlators(ex).unwrap();
            let b = fb.correlators(ex).unwrap();
            for (x, y) in a.self_cov.iter().zip(&b.self_cov) {
                assert!(dense::rel_frobenius(x.as_ref(), y.as_ref()).unwrap() < 1e-14);
            }
            for (x, y) in a.cross_cov.iter().zip(&b.cross_cov) {
                assert!(dense::rel_frobenius(x.as_ref(), y.as_ref()).unwrap() < 1e-14);
            }
        }
        let a = fp.correlators(None).unwrap();
        assert!(dense::rel_frobenius(a.cross_cov[0].as_ref(), cf.as_ref()).unwrap() < 1e-13);
        assert!(PackedOperators::pack(Mat::from_fn(2, 1, |_, _| 0.5).as_ref()).is_err());
    }

    #[test]
    fn packed_counts_equal_naive_counts_over_tiles_blocks_and_symmetry() {
        // 5000 samples = 79 words (more than one cache block of 64 words, last word partial);
        // order 2 on 7 units = 28 operators and order 1 on 5 = 5 (neither a multiple of the tile).
        let s = 5000;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let draw = |w: usize, rng: &mut Xoshiro256PlusPlus| -> Vec<f32> {
            (0..s * w)
                .map(|_| if rng.random::<f32>() < 0.4 { 1.0 } else { 0.0 })
                .collect()
        };
        let (h7, h5) = (draw(7, &mut rng), draw(5, &mut rng));
        let (b7, b5) = (
            OperatorBasis::order2(7).unwrap(),
            OperatorBasis::order1(5).unwrap(),
        );
        let (o7, o5) = (b7.evaluate(&h7, s).unwrap(), b5.evaluate(&h5, s).unwrap());
        let p7 = PackedOperators::from_states(&b7, &h7, s).unwrap();
        let p5 = PackedOperators::from_states(&b5, &h5, s).unwrap();
        let q7 = PackedOperators::pack(o7.as_ref()).unwrap();
        assert_eq!(p7, q7, "direct packing equals pack(evaluate)");
        let naive = |a: &Mat<f64>, b: &Mat<f64>| -> Vec<u64> {
            let mut v = Vec::new();
            for i in 0..a.ncols() {
                for j in 0..b.ncols() {
                    v.push((0..s).map(|r| a[(r, i)] * b[(r, j)]).sum::<f64>() as u64);
                }
            }
            v
        };
        assert_eq!(
            p7.co_occurrences(&p7).unwrap(),
            naive(&o7, &o7),
            "symmetric"
        );
        assert_eq!(p7.co_occurrences(&p5).unwrap(), naive(&o7, &o5));
        assert_eq!(p5.co_occurrences(&p7).unwrap(), naive(&o5, &o7));
        assert!(PackedOperators::from_states(&b5, &vec![0.5; 5 * s], s).is_err());
        assert!(PackedOperators::from_states(&b5, &h5[..10], s).is_err());
    }

    #[test]
    fn delete_one_block_correlators_equal_those_of_the_remaining_samples() {
        // The scratch copy (block b re-accumulated and subtracted from the total) must give the
        // correlators of the other samples accumulated on their own (other pilot shifts, so equal
        // to rounding), for every estimator.
        let s = 1200;
        let (_, layers) = samples(11, s);
        let bases = vec![
            OperatorBasis::complete(4).unwrap(),
            OperatorBasis::order2(4).unwrap(),
            OperatorBasis::order1(3).unwrap(),
        ];
        let (blocks, b) = (4, 2);
        let r = block_range(s, blocks, b);
        let keep: Vec<LayerBatch> = layers
            .iter()
            .zip(&bases)
            .map(|(l, basis)| {
                let w = basis.width();
                let pick = |v: &[f32]| {
                    let mut out = v[..r.start * w].to_vec();
                    out.extend_from_slice(&v[r.end * w..]);
                    out
                };
                LayerBatch {
                    states: pick(&l.states),
                    probs: pick(&l.probs),
                }
            })
            .collect();
        for est in [
            Estimator::Plain,
            Estimator::BitPacked,
            Estimator::RaoBlackwell,
        ] {
            let all = FlowMoments::accumulate(&layers, &bases, s, est, blocks, true).unwrap();
            let rest = FlowMoments::accumulate(&keep, &bases, s - r.len(), est, 1, true).unwrap();
            let (a, e) = (
                all.correlators(Some(b)).unwrap(),
                rest.correlators(None).unwrap(),
            );
            let mut worst = 0.0f64;
            for (x, y) in a.self_cov.iter().zip(&e.self_cov) {
                worst = worst.max(dense::rel_frobenius(x.as_ref(), y.as_ref()).unwrap());
            }
            for (x, y) in a.cross_cov.iter().zip(&e.cross_cov) {
                worst = worst.max(dense::rel_frobenius(x.as_ref(), y.as_ref()).unwrap());
            }
            let (x, y) = (a.direct_cov.unwrap(), e.direct_cov.unwrap());
            worst = worst.max(dense::rel_frobenius(x.as_ref(), y.as_ref()).unwrap());
            assert!(worst < 1e-12, "{est:?}: {worst}");
        }
    }

    #[test]
    fn rao_blackwell_self_term_is_the_law_of_total_covariance() {
        let s = 300;
        let (_, layers) = samples(3, s);
        let b = OperatorBasis::complete(4).unwrap();
        let c = covariance_rao_blackwell_self(&b, &layers[1].probs, s).unwrap();
        // Direct: Cov(μ) + mean of the analytic conditional covariances.
        let mu = b.conditional_means(&layers[1].probs, s).unwrap();
        let mut e = covariance(mu.as_ref(), mu.as_ref()).unwrap();
        for r in 0..s {
            let p: Vec<f64> = layers[1].probs[r * 4..(r + 1) * 4]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let cc = b.conditional_covariance(&p).unwrap();
            for i in 0..b.len() {
                for j in 0..b.len() {
                    e[(i, j)] += cc[(i, j)] / s as f64;
                }
            }
        }
        assert!(dense::rel_frobenius(c.as_ref(), e.as_ref()).unwrap() < 1e-12);
    }

    #[test]
    fn jackknife_of_a_mean_is_the_standard_error() {
        let v: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 101) as f64).collect();
        let j = jackknife_samples(v.len(), 1000, |idx| {
            Ok(vec![
                idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64,
            ])
        })
        .unwrap();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // Delete-1 jackknife of a mean reproduces sqrt(var/n) exactly.
        assert!((j.std_err[0] - (var / n).sqrt()).abs() < 1e-10);
        assert!((j.estimate[0] - mean).abs() < 1e-12);
        assert!(jackknife(1, |_| Ok(vec![0.0])).is_err());
    }
}
