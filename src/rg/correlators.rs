//! Connected correlators of operators between and within layers (SPEC §5, RG-NOTES §3.2), with
//! delete-d jackknife error bars.
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

use std::collections::HashMap;
use std::ops::Range;

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::rg::dense;
use crate::rg::operators::{intersects, prefix_table, union, OperatorBasis};
use crate::sample::LayerBatch;

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

/// Sample covariance `Cov(A, B)` of the columns of `a` (`S × m_a`) and `b` (`S × m_b`), computed
/// two-pass (means, then centred products), normalised by `S − 1` (RG-NOTES §3.2 "Plain").
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
    let ca = centred(a);
    let cb = centred(b);
    let mut c = dense::mul_tn(ca.as_ref(), cb.as_ref())?;
    let inv = 1.0 / (s - 1) as f64;
    for j in 0..c.ncols() {
        for i in 0..c.nrows() {
            c[(i, j)] *= inv;
        }
    }
    Ok(c)
}

fn centred(a: MatRef<'_, f64>) -> Mat<f64> {
    let s = a.nrows();
    let mut out = a.to_owned();
    for j in 0..a.ncols() {
        let mean = (0..s).map(|i| a[(i, j)]).sum::<f64>() / s as f64;
        for i in 0..s {
            out[(i, j)] -= mean;
        }
    }
    out
}

/// Binary operator values of `S` samples packed 64 samples to a `u64` word, one row of words per
/// operator (SPEC §5).
#[derive(Clone, Debug)]
pub struct PackedOperators {
    samples: usize,
    words: usize,
    ops: usize,
    bits: Vec<u64>,
    counts: Vec<u64>,
}

impl PackedOperators {
    /// Pack an `S × m` matrix whose entries are exactly 0 or 1 (any other value is an error).
    pub fn pack(values: MatRef<'_, f64>) -> Result<Self> {
        let (s, m) = (values.nrows(), values.ncols());
        let words = s.div_ceil(64);
        let mut bits = vec![0u64; m * words];
        let mut counts = vec![0u64; m];
        for a in 0..m {
            let row = &mut bits[a * words..(a + 1) * words];
            for r in 0..s {
                let v = values[(r, a)];
                if v == 1.0 {
                    row[r / 64] |= 1u64 << (r % 64);
                    counts[a] += 1;
                } else if v != 0.0 {
                    return Err(Error::invalid(format!(
                        "bit-packing: operator {a} has the non-binary value {v} in sample {r}"
                    )));
                }
            }
        }
        Ok(PackedOperators {
            samples: s,
            words,
            ops: m,
            bits,
            counts,
        })
    }

    /// Evaluate `basis` on binary states (row-major `s × width`) and pack the result.
    pub fn from_states(basis: &OperatorBasis, states: &[f32], s: usize) -> Result<Self> {
        Self::pack(basis.evaluate(states, s)?.as_ref())
    }

    /// Number of samples S.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Number of operators m.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// True when there are no operators.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// `Σ_s O_a(s)` for every operator (exact integer counts).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Exact co-occurrence counts `N_ab = Σ_s O_a(s) O'_b(s) = popcount(A_a AND B_b)`, row-major
    /// `m × m'`.
    pub fn co_occurrences(&self, other: &PackedOperators) -> Result<Vec<u64>> {
        if self.samples != other.samples {
            return Err(Error::shape(format!(
                "co-occurrences: {} samples against {}",
                self.samples, other.samples
            )));
        }
        let (m, mo, w) = (self.ops, other.ops, self.words);
        let mut out = vec![0u64; m * mo];
        for a in 0..m {
            let ra = &self.bits[a * w..(a + 1) * w];
            for b in 0..mo {
                let rb = &other.bits[b * w..(b + 1) * w];
                out[a * mo + b] = ra
                    .iter()
                    .zip(rb)
                    .map(|(x, y)| (x & y).count_ones() as u64)
                    .sum();
            }
        }
        Ok(out)
    }
}

/// `Cov(A, B)` from bit-packed binary operators: `(N_ab − N_a N_b / S)/(S − 1)` with exact integer
/// counts (SPEC §5). Equals [`covariance`] of the unpacked values up to float rounding.
pub fn covariance_bitpacked(a: &PackedOperators, b: &PackedOperators) -> Result<Mat<f64>> {
    let s = a.samples;
    if s < 2 {
        return Err(Error::invalid(format!(
            "covariance needs at least 2 samples, got {s}"
        )));
    }
    let n = a.co_occurrences(b)?;
    let (m, mo) = (a.ops, b.ops);
    let sf = s as f64;
    Ok(Mat::from_fn(m, mo, |i, j| {
        (n[i * mo + j] as f64 - a.counts[i] as f64 * b.counts[j] as f64 / sf) / (sf - 1.0)
    }))
}

/// The distinct unions `S_a ∪ S_b` of the overlapping operator pairs of a basis, for the
/// conditional-covariance part of the Rao-Blackwellised self term.
#[derive(Clone, Debug)]
struct UnionTable {
    unions: Vec<Vec<usize>>,
    prefix: Vec<Option<usize>>,
    /// `(a, b, u)` for `a ≤ b` with `S_a ∩ S_b ≠ ∅`, `u` the index of `S_a ∪ S_b` in `unions`.
    pairs: Vec<(u32, u32, u32)>,
}

impl UnionTable {
    fn new(basis: &OperatorBasis) -> Result<Self> {
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

    fn eval(&self, p: &[f64], out: &mut [f64]) {
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

    /// The correlators with every operator of flow layer j multiplied by `signs[j−1][α] = ±1`
    /// (a reparametrisation `O → D O` with D diagonal; used to test the sign conventions of
    /// RG-NOTES §1.4 and A6).
    pub fn with_operator_signs(&self, signs: &[Vec<f64>]) -> Result<Self> {
        self.validate()?;
        if signs.len() != self.depth() {
            return Err(Error::shape(
                "with_operator_signs: one sign vector per layer",
            ));
        }
        for (j, (s, c)) in signs.iter().zip(&self.self_cov).enumerate() {
            if s.len() != c.nrows() {
                return Err(Error::shape(format!(
                    "with_operator_signs: layer {} has {} operators, {} signs",
                    j + 1,
                    c.nrows(),
                    s.len()
                )));
            }
        }
        let scale = |c: &Mat<f64>, r: &[f64], k: &[f64]| {
            Mat::from_fn(c.nrows(), c.ncols(), |i, j| r[i] * c[(i, j)] * k[j])
        };
        let m = self.depth();
        Ok(FlowCorrelators {
            self_cov: (0..m)
                .map(|j| scale(&self.self_cov[j], &signs[j], &signs[j]))
                .collect(),
            cross_cov: (0..m - 1)
                .map(|i| scale(&self.cross_cov[i], &signs[i + 1], &signs[i]))
                .collect(),
            direct_cov: self
                .direct_cov
                .as_ref()
                .map(|d| scale(d, &signs[m - 1], &signs[0])),
        })
    }
}

/// Per-block sums from which the correlators of any union of blocks follow.
#[derive(Clone, Debug)]
struct BlockSums {
    n: usize,
    /// `Σ O(L_j)` (sampled values).
    sum_ops: Vec<Vec<f64>>,
    /// `Σ E[O(L_j)|L_{j−1}]` (Rao-Blackwell only).
    sum_means: Vec<Vec<f64>>,
    /// Plain: `Σ O Oᵀ`; Rao-Blackwell: `Σ μ μᵀ`.
    self_second: Vec<Mat<f64>>,
    /// Rao-Blackwell: `Σ Π_U p` for every union U of the layer's table.
    union_sums: Vec<Vec<f64>>,
    /// Plain: `Σ O_j O_{j−1}ᵀ`; Rao-Blackwell: `Σ μ_j O_{j−1}ᵀ` (j = 2…M).
    cross_second: Vec<Mat<f64>>,
    /// As `cross_second` between L_M and L_1 (only when M ≥ 3 and requested).
    direct_second: Option<Mat<f64>>,
}

impl BlockSums {
    fn zeros(sizes: &[usize], unions: &[Option<UnionTable>], rb: bool, direct: bool) -> Self {
        let m = sizes.len();
        BlockSums {
            n: 0,
            sum_ops: sizes.iter().map(|&k| vec![0.0; k]).collect(),
            sum_means: if rb {
                sizes.iter().map(|&k| vec![0.0; k]).collect()
            } else {
                Vec::new()
            },
            self_second: sizes.iter().map(|&k| Mat::zeros(k, k)).collect(),
            union_sums: unions
                .iter()
                .map(|u| vec![0.0; u.as_ref().map_or(0, |t| t.unions.len())])
                .collect(),
            cross_second: (1..m).map(|j| Mat::zeros(sizes[j], sizes[j - 1])).collect(),
            direct_second: if direct && m >= 3 {
                Some(Mat::zeros(sizes[m - 1], sizes[0]))
            } else {
                None
            },
        }
    }

    fn add(&mut self, o: &BlockSums, sign: f64) {
        self.n = if sign > 0.0 {
            self.n + o.n
        } else {
            self.n - o.n
        };
        let addv = |a: &mut Vec<f64>, b: &Vec<f64>| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += sign * y;
            }
        };
        let addm = |a: &mut Mat<f64>, b: &Mat<f64>| {
            for j in 0..a.ncols() {
                for i in 0..a.nrows() {
                    a[(i, j)] += sign * b[(i, j)];
                }
            }
        };
        for (a, b) in self.sum_ops.iter_mut().zip(&o.sum_ops) {
            addv(a, b);
        }
        for (a, b) in self.sum_means.iter_mut().zip(&o.sum_means) {
            addv(a, b);
        }
        for (a, b) in self.union_sums.iter_mut().zip(&o.union_sums) {
            addv(a, b);
        }
        for (a, b) in self.self_second.iter_mut().zip(&o.self_second) {
            addm(a, b);
        }
        for (a, b) in self.cross_second.iter_mut().zip(&o.cross_second) {
            addm(a, b);
        }
        if let (Some(a), Some(b)) = (self.direct_second.as_mut(), o.direct_second.as_ref()) {
            addm(a, b);
        }
    }
}

/// Rows processed at once when accumulating (bounds the memory of the operator matrices).
const ACC_ROWS: usize = 2048;

/// Sufficient statistics of S ancestral samples along a flow `L_1 … L_M`, split into contiguous
/// blocks so that the correlators of the full sample and of every delete-one-block subsample
/// (jackknife, RG-NOTES §3.2) are available without another pass over the samples.
///
/// Memory: about `blocks × (Σ_j m_j² + Σ_j m_j m_{j−1}) × 8` bytes.
#[derive(Clone, Debug)]
pub struct FlowMoments {
    estimator: Estimator,
    sizes: Vec<usize>,
    unions: Vec<Option<UnionTable>>,
    blocks: Vec<BlockSums>,
    total: BlockSums,
    direct: bool,
}

impl FlowMoments {
    /// Accumulate the moments of `s` samples. `layers[j−1]` holds flow layer j (states and the
    /// conditional unit probabilities they were drawn from, as returned by
    /// [`crate::sample::sample_up`] / [`crate::sample::sample_down`]); `bases[j−1]` is its operator
    /// basis. `blocks ≥ 1` contiguous blocks are kept for the jackknife (1 = no error bars).
    /// `direct` also accumulates `Cov(O(L_M), O(L_1))` for the direct estimator.
    pub fn accumulate(
        layers: &[LayerBatch],
        bases: &[OperatorBasis],
        s: usize,
        estimator: Estimator,
        blocks: usize,
        direct: bool,
    ) -> Result<Self> {
        let m = layers.len();
        if m == 0 || bases.len() != m {
            return Err(Error::shape(format!(
                "flow moments: {} layers of samples and {} bases",
                m,
                bases.len()
            )));
        }
        if blocks == 0 || s < 2 * blocks {
            return Err(Error::invalid(format!(
                "flow moments: {s} samples cannot fill {blocks} blocks of at least 2"
            )));
        }
        for (j, (l, b)) in layers.iter().zip(bases).enumerate() {
            let want = s * b.width();
            if l.states.len() != want || l.probs.len() != want {
                return Err(Error::shape(format!(
                    "flow layer {}: {} states and {} probabilities for {s} samples of width {}",
                    j + 1,
                    l.states.len(),
                    l.probs.len(),
                    b.width()
                )));
            }
        }
        let rb = estimator == Estimator::RaoBlackwell;
        let sizes: Vec<usize> = bases.iter().map(|b| b.len()).collect();
        let unions: Vec<Option<UnionTable>> = if rb {
            bases
                .iter()
                .map(|b| UnionTable::new(b).map(Some))
                .collect::<Result<_>>()?
        } else {
            vec![None; m]
        };
        let mut block_sums = Vec::with_capacity(blocks);
        for b in 0..blocks {
            let range = block_range(s, blocks, b);
            let mut sums = BlockSums::zeros(&sizes, &unions, rb, direct);
            let mut start = range.start;
            while start < range.end {
                let end = (start + ACC_ROWS).min(range.end);
                accumulate_rows(
                    &mut sums,
                    layers,
                    bases,
                    &unions,
                    estimator,
                    start..end,
                    direct,
                )?;
                start = end;
            }
            block_sums.push(sums);
        }
        let mut total = BlockSums::zeros(&sizes, &unions, rb, direct);
        for b in &block_sums {
            total.add(b, 1.0);
        }
        Ok(FlowMoments {
            estimator,
            sizes,
            unions,
            blocks: block_sums,
            total,
            direct,
        })
    }

    /// Number of jackknife blocks.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Total number of samples.
    pub fn samples(&self) -> usize {
        self.total.n
    }

    /// The estimator used.
    pub fn estimator(&self) -> Estimator {
        self.estimator
    }

    /// Correlators of all samples (`exclude = None`) or of all samples but block `b`
    /// (`Some(b)`, the delete-d jackknife subsample).
    pub fn correlators(&self, exclude: Option<usize>) -> Result<FlowCorrelators> {
        let sums = match exclude {
            None => self.total.clone(),
            Some(b) => {
                let blk = self.blocks.get(b).ok_or_else(|| {
                    Error::invalid(format!(
                        "jackknife block {b} of {} does not exist",
                        self.blocks.len()
                    ))
                })?;
                if self.blocks.len() < 2 {
                    return Err(Error::invalid(
                        "jackknife: a single block cannot be left out",
                    ));
                }
                let mut t = self.total.clone();
                t.add(blk, -1.0);
                t
            }
        };
        let n = sums.n as f64;
        let m = self.sizes.len();
        let rb = self.estimator == Estimator::RaoBlackwell;
        let cov_from = |sxy: &Mat<f64>, sx: &[f64], sy: &[f64]| {
            Mat::from_fn(sxy.nrows(), sxy.ncols(), |i, j| {
                (sxy[(i, j)] - sx[i] * sy[j] / n) / (n - 1.0)
            })
        };
        let mut self_cov = Vec::with_capacity(m);
        for j in 0..m {
            let mean_sums = if rb {
                &sums.sum_means[j]
            } else {
                &sums.sum_ops[j]
            };
            let mut c = cov_from(&sums.self_second[j], mean_sums, mean_sums);
            if let Some(t) = &self.unions[j] {
                // E[Cov(O|prev)]: (Σ Π_{S∪T} p − Σ μ_S μ_T)/n on overlapping pairs.
                for &(a, b, u) in &t.pairs {
                    let (a, b) = (a as usize, b as usize);
                    let e = (sums.union_sums[j][u as usize] - sums.self_second[j][(a, b)]) / n;
                    c[(a, b)] += e;
                    if a != b {
                        c[(b, a)] += e;
                    }
                }
            }
            self_cov.push(c);
        }
        let mut cross_cov = Vec::with_capacity(m.saturating_sub(1));
        for j in 1..m {
            let rows = if rb {
                &sums.sum_means[j]
            } else {
                &sums.sum_ops[j]
            };
            cross_cov.push(cov_from(
                &sums.cross_second[j - 1],
                rows,
                &sums.sum_ops[j - 1],
            ));
        }
        let direct_cov = if !self.direct {
            None
        } else if m == 1 {
            Some(self_cov[0].clone())
        } else if m == 2 {
            Some(cross_cov[0].clone())
        } else {
            let rows = if rb {
                &sums.sum_means[m - 1]
            } else {
                &sums.sum_ops[m - 1]
            };
            let d = sums
                .direct_second
                .as_ref()
                .ok_or_else(|| Error::invalid("direct moments were not accumulated"))?;
            Some(cov_from(d, rows, &sums.sum_ops[0]))
        };
        Ok(FlowCorrelators {
            self_cov,
            cross_cov,
            direct_cov,
        })
    }
}

fn slice_rows(v: &[f32], width: usize, rows: &Range<usize>) -> Vec<f32> {
    v[rows.start * width..rows.end * width].to_vec()
}

/// `acc += Aᵀ B` (sequential).
fn add_atb(acc: &mut Mat<f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<()> {
    let p = dense::mul_tn(a, b)?;
    for j in 0..acc.ncols() {
        for i in 0..acc.nrows() {
            acc[(i, j)] += p[(i, j)];
        }
    }
    Ok(())
}

fn col_sums(a: MatRef<'_, f64>, out: &mut [f64]) {
    for j in 0..a.ncols() {
        out[j] += (0..a.nrows()).map(|i| a[(i, j)]).sum::<f64>();
    }
}

fn accumulate_rows(
    sums: &mut BlockSums,
    layers: &[LayerBatch],
    bases: &[OperatorBasis],
    unions: &[Option<UnionTable>],
    estimator: Estimator,
    rows: Range<usize>,
    direct: bool,
) -> Result<()> {
    let m = layers.len();
    let r = rows.len();
    let mut ops = Vec::with_capacity(m);
    for (l, b) in layers.iter().zip(bases) {
        ops.push(b.evaluate(&slice_rows(&l.states, b.width(), &rows), r)?);
    }
    sums.n += r;
    for j in 0..m {
        col_sums(ops[j].as_ref(), &mut sums.sum_ops[j]);
    }
    match estimator {
        Estimator::Plain => {
            for j in 0..m {
                add_atb(&mut sums.self_second[j], ops[j].as_ref(), ops[j].as_ref())?;
                if j >= 1 {
                    add_atb(
                        &mut sums.cross_second[j - 1],
                        ops[j].as_ref(),
                        ops[j - 1].as_ref(),
                    )?;
                }
            }
            if let Some(d) = sums.direct_second.as_mut() {
                add_atb(d, ops[m - 1].as_ref(), ops[0].as_ref())?;
            }
        }
        Estimator::BitPacked => {
            let packed = ops
                .iter()
                .map(|o| PackedOperators::pack(o.as_ref()))
                .collect::<Result<Vec<_>>>()?;
            let add_counts = |acc: &mut Mat<f64>, a: &PackedOperators, b: &PackedOperators| {
                let c = a.co_occurrences(b)?;
                let nb = b.len();
                for i in 0..acc.nrows() {
                    for j in 0..acc.ncols() {
                        acc[(i, j)] += c[i * nb + j] as f64;
                    }
                }
                Ok::<(), Error>(())
            };
            for j in 0..m {
                add_counts(&mut sums.self_second[j], &packed[j], &packed[j])?;
                if j >= 1 {
                    add_counts(&mut sums.cross_second[j - 1], &packed[j], &packed[j - 1])?;
                }
            }
            if let Some(d) = sums.direct_second.as_mut() {
                add_counts(d, &packed[m - 1], &packed[0])?;
            }
        }
        Estimator::RaoBlackwell => {
            let mut means = Vec::with_capacity(m);
            for (l, b) in layers.iter().zip(bases) {
                means.push(b.conditional_means(&slice_rows(&l.probs, b.width(), &rows), r)?);
            }
            for j in 0..m {
                col_sums(means[j].as_ref(), &mut sums.sum_means[j]);
                add_atb(
                    &mut sums.self_second[j],
                    means[j].as_ref(),
                    means[j].as_ref(),
                )?;
                if j >= 1 {
                    add_atb(
                        &mut sums.cross_second[j - 1],
                        means[j].as_ref(),
                        ops[j - 1].as_ref(),
                    )?;
                }
                if let Some(t) = &unions[j] {
                    let w = bases[j].width();
                    let mut p = vec![0.0f64; w];
                    let mut u = vec![0.0f64; t.unions.len()];
                    for row in rows.clone() {
                        for (pi, &x) in p.iter_mut().zip(&layers[j].probs[row * w..(row + 1) * w]) {
                            *pi = x as f64;
                        }
                        t.eval(&p, &mut u);
                        for (acc, &v) in sums.union_sums[j].iter_mut().zip(&u) {
                            *acc += v;
                        }
                    }
                }
            }
            if direct {
                if let Some(d) = sums.direct_second.as_mut() {
                    add_atb(d, means[m - 1].as_ref(), ops[0].as_ref())?;
                }
            }
        }
    }
    Ok(())
}

/// The samples of block `b` when `s` samples are split into `blocks` contiguous blocks.
pub fn block_range(s: usize, blocks: usize, b: usize) -> Range<usize> {
    (b * s / blocks)..((b + 1) * s / blocks)
}

/// A delete-d jackknife estimate of a vector-valued statistic (RG-NOTES §3.2, §5 A11).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Jackknife {
    /// The statistic on all samples.
    pub estimate: Vec<f64>,
    /// Mean of the delete-one-block values `θ̄`.
    pub mean: Vec<f64>,
    /// Bias-corrected estimate `B θ̂ − (B − 1) θ̄` (removes the O(1/S) bias of ratio estimators).
    pub bias_corrected: Vec<f64>,
    /// Standard error `sqrt((B − 1)/B · Σ_b (θ_b − θ̄)²)`.
    pub std_err: Vec<f64>,
    /// Number of blocks B.
    pub blocks: usize,
}

/// Delete-d jackknife of any statistic: `f(None)` is its value on all samples, `f(Some(b))` its
/// value with block b left out (b = 0…blocks−1); every call must return a vector of the same
/// length (flatten matrices row-major). `blocks ≥ 2`.
pub fn jackknife<F>(blocks: usize, mut f: F) -> Result<Jackknife>
where
    F: FnMut(Option<usize>) -> Result<Vec<f64>>,
{
    if blocks < 2 {
        return Err(Error::invalid(format!(
            "jackknife needs at least 2 blocks, got {blocks}"
        )));
    }
    let estimate = f(None)?;
    let k = estimate.len();
    let mut loo = Vec::with_capacity(blocks);
    for b in 0..blocks {
        let v = f(Some(b))?;
        if v.len() != k {
            return Err(Error::shape(format!(
                "jackknife: block {b} gave {} values, the full sample {k}",
                v.len()
            )));
        }
        loo.push(v);
    }
    let bf = blocks as f64;
    let mean: Vec<f64> = (0..k)
        .map(|i| loo.iter().map(|v| v[i]).sum::<f64>() / bf)
        .collect();
    let std_err = (0..k)
        .map(|i| {
            let ss: f64 = loo.iter().map(|v| (v[i] - mean[i]).powi(2)).sum();
            ((bf - 1.0) / bf * ss).sqrt()
        })
        .collect();
    let bias_corrected = (0..k)
        .map(|i| bf * estimate[i] - (bf - 1.0) * mean[i])
        .collect();
    Ok(Jackknife {
        estimate,
        mean,
        bias_corrected,
        std_err,
        blocks,
    })
}

/// Delete-d jackknife of a statistic of the samples themselves: `f` receives the indices of the
/// samples to use (all of them, then all but block b).
pub fn jackknife_samples<F>(s: usize, blocks: usize, mut f: F) -> Result<Jackknife>
where
    F: FnMut(&[usize]) -> Result<Vec<f64>>,
{
    if s < blocks {
        return Err(Error::invalid(format!(
            "jackknife: {s} samples cannot fill {blocks} blocks"
        )));
    }
    jackknife(blocks, |ex| {
        let idx: Vec<usize> = match ex {
            None => (0..s).collect(),
            Some(b) => {
                let r = block_range(s, blocks, b);
                (0..s).filter(|i| !r.contains(i)).collect()
            }
        };
        f(&idx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeepRbm;
    use crate::sample::sample_up;
    use rand::SeedableRng;
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
