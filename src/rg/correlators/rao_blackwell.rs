//! The Rao-Blackwellised terms (RG-NOTES §3.2): conditional means in cross terms, and the law of
//! total covariance in self terms with `Cov(O_S, O_T | ·) = Π_{S∪T} p − Π_S p Π_T p`.

use std::collections::HashMap;

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::rg::operators::{intersects, prefix_table, union, OperatorBasis};
use crate::sample::LayerBatch;

use super::*;

/// The distinct unions `S_a ∪ S_b` of the overlapping operator pairs of a basis, for the
/// conditional-covariance part of the Rao-Blackwellised self term.
#[derive(Clone, Debug)]
pub(super) struct UnionTable {
    /// The distinct unions, as sorted unit lists.
    pub(super) unions: Vec<Vec<usize>>,
    prefix: Vec<Option<usize>>,
    /// `(a, b, u)` for `a ≤ b` with `S_a ∩ S_b ≠ ∅`, `u` the index of `S_a ∪ S_b` in `unions`.
    pub(super) pairs: Vec<(u32, u32, u32)>,
}

impl UnionTable {
    pub(super) fn new(basis: &OperatorBasis) -> Result<Self> {
        let mono = basis.monomials();
        let m = mono.len();
        if m > u32::MAX as usize {
            return Err(Error::invalid("Rao-Blackwellisation: too many operators"));
        }
        let mut index: HashMap<Vec<usize>, u32> = HashMap::new();
        let mut unions: Vec<Vec<usize>> = Vec::new();
        let mut pairs = Vec::new();
        for a in 0..m {
            for b in a..m {
                if !intersects(&mono[a], &mono[b]) {
                    continue;
                }
                let u = union(&mono[a], &mono[b]);
                let id = match index.get(&u) {
                    Some(&id) => id,
                    None => {
                        let id = unions.len() as u32;
                        index.insert(u.clone(), id);
                        unions.push(u);
                        id
                    }
                };
                pairs.push((a as u32, b as u32, id));
            }
        }
        // Degree-lex order so that prefixes come first and evaluation is one product per union.
        let mut order: Vec<usize> = (0..unions.len()).collect();
        order.sort_by(|&x, &y| {
            unions[x]
                .len()
                .cmp(&unions[y].len())
                .then(unions[x].cmp(&unions[y]))
        });
        let mut new_id = vec![0u32; unions.len()];
        for (new, &old) in order.iter().enumerate() {
            new_id[old] = new as u32;
        }
        let unions: Vec<Vec<usize>> = order.iter().map(|&o| unions[o].clone()).collect();
        for p in &mut pairs {
            p.2 = new_id[p.2 as usize];
        }
        let prefix = prefix_table(&unions);
        Ok(UnionTable {
            unions,
            prefix,
            pairs,
        })
    }

    pub(super) fn eval(&self, p: &[f64], out: &mut [f64]) {
        for (u, m) in self.unions.iter().enumerate() {
            out[u] = match self.prefix[u] {
                Some(q) => out[q] * p[m[m.len() - 1]],
                None => m.iter().map(|&i| p[i]).product(),
            };
        }
    }
}

/// Rao-Blackwellised self covariance of one layer (RG-NOTES §3.2): `Cov(E[O|prev]) +
/// E[Cov(O|prev)]` from per-sample unit probabilities `probs` (row-major `s × width`).
pub fn covariance_rao_blackwell_self(
    basis: &OperatorBasis,
    probs: &[f32],
    s: usize,
) -> Result<Mat<f64>> {
    let layer = LayerBatch {
        states: probs.to_vec(),
        probs: probs.to_vec(),
    };
    let fm = FlowMoments::accumulate(
        std::slice::from_ref(&layer),
        std::slice::from_ref(basis),
        s,
        Estimator::RaoBlackwell,
        1,
        false,
    )?;
    Ok(fm.correlators(None)?.self_cov.remove(0))
}

/// Rao-Blackwellised cross covariance `Cov(E[O(L_j)|L_{j−1}], O'(L_{j−1}))` (RG-NOTES §3.2) from the
/// unit probabilities of layer j (`probs`, row-major `s × width`) and the operator values of the
/// conditioning layer (`ops_prev`, `s × m'`).
pub fn covariance_rao_blackwell_cross(
    basis: &OperatorBasis,
    probs: &[f32],
    s: usize,
    ops_prev: MatRef<'_, f64>,
) -> Result<Mat<f64>> {
    let mu = basis.conditional_means(probs, s)?;
    covariance(mu.as_ref(), ops_prev)
}

/// Rows per block of the Rao-Blackwellised conditional covariances.
pub(super) const PAIR_ROWS: usize = 32;

/// `acc[pair] += Σ_{r < PAIR_ROWS} (U[u][r] − M[a][r] M[b][r])` for each overlapping pair
/// `(a, b, u)`, with `U` (unions) and `M` (means) stored operator-major in blocks of
/// [`PAIR_ROWS`] rows (rows past the last filled one are zero in both, so they add nothing).
/// Eight lane sums let the compiler vectorise.
pub(super) fn add_conditional_covariances(
    acc: &mut [f64],
    pairs: &[(u32, u32, u32)],
    ublk: &[f64],
    mblk: &[f64],
) {
    fn row(v: &[f64], k: u32) -> &[f64; PAIR_ROWS] {
        let start = k as usize * PAIR_ROWS;
        v[start..start + PAIR_ROWS]
            .try_into()
            .expect("blocks hold PAIR_ROWS values per operator")
    }
    for (acc, &(a, b, un)) in acc.iter_mut().zip(pairs) {
        let (uu, ma, mb) = (row(ublk, un), row(mblk, a), row(mblk, b));
        let mut lanes = [0.0f64; 8];
        for r0 in (0..PAIR_ROWS).step_by(8) {
            for l in 0..8 {
                lanes[l] += uu[r0 + l] - ma[r0 + l] * mb[r0 + l];
            }
        }
        *acc += lanes.iter().sum::<f64>();
    }
}

/// Number of pairs `a ≤ b` of a basis's monomials that overlap (the conditional-covariance terms
/// of the Rao-Blackwellised self covariance).
pub(super) fn overlapping_pairs(basis: &OperatorBasis) -> usize {
    let mono = basis.monomials();
    let mut n = 0usize;
    for a in 0..mono.len() {
        for b in a..mono.len() {
            if intersects(&mono[a], &mono[b]) {
                n += 1;
            }
        }
    }
    n
}
