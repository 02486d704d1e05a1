//! The sufficient statistics of S ancestral samples along a flow `L_1 … L_M`, and the correlators
//! (of all samples or of a delete-one-block subsample) that follow from them.

use std::ops::Range;

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::linalg::dense;
use crate::model::kernels::{step_probs, StepDir};
use crate::model::Rbm;
use crate::rg::operators::OperatorBasis;
use crate::sample::LayerBatch;

use super::*;

/// Flow layer 1's unit probabilities in f64, for the Rao-Blackwellised terms.
#[derive(Clone, Debug)]
pub enum FirstProbs {
    /// One probability row shared by every sample (classification: `σ(W_1 x + a_1)`; reading (P):
    /// `σ(W_Nᵀ y + b_N)`).
    Shared(Vec<f64>),
    /// One row per class; `class[r]` is the class sample r was drawn from (reading (C)).
    PerClass {
        /// `t_N(·|e_c)`'s unit probabilities, one row per class c.
        rows: Vec<Vec<f64>>,
        /// The class of every sample.
        class: Vec<usize>,
    },
}

/// The kernels of a flow, so that the conditional unit probabilities of the Rao-Blackwellised
/// estimator are recomputed in f64 from the parent states (one f64 product per layer). The f32
/// probabilities the sampler keeps saturate to exactly 1 for pre-activations above ≈ 16.6, which
/// would zero the conditional variances `p(1−p)`.
#[derive(Clone, Debug)]
pub struct FlowKernels {
    /// Unit probabilities of flow layer 1.
    pub first: FirstProbs,
    /// `steps[j−2]`: the RBM and direction producing flow layer j from layer j−1 (j = 2…M).
    pub steps: Vec<(Rbm, StepDir)>,
}

impl FlowKernels {
    fn validate(&self, widths: &[usize], s: usize) -> Result<()> {
        let m = widths.len();
        if self.steps.len() + 1 != m {
            return Err(Error::shape(format!(
                "flow kernels: {} steps for {m} layers",
                self.steps.len()
            )));
        }
        let first_ok = match &self.first {
            FirstProbs::Shared(p) => p.len() == widths[0],
            FirstProbs::PerClass { rows, class } => {
                rows.iter().all(|r| r.len() == widths[0])
                    && class.len() == s
                    && class.iter().all(|&c| c < rows.len())
            }
        };
        if !first_ok {
            return Err(Error::shape(
                "flow kernels: layer-1 probabilities do not fit the layer width or sample count",
            ));
        }
        for (i, (r, d)) in self.steps.iter().enumerate() {
            let (src, dst) = d.widths(r);
            if src != widths[i] || dst != widths[i + 1] {
                return Err(Error::shape(format!(
                    "flow kernel {}: {src} → {dst} units between layers of widths {} → {}",
                    i + 2,
                    widths[i],
                    widths[i + 1]
                )));
            }
        }
        Ok(())
    }

    /// f64 unit probabilities of flow layer `j` (0-based) in sample `row`.
    fn probs(&self, j: usize, layers: &[LayerBatch], row: usize, out: &mut Vec<f64>) {
        out.clear();
        if j == 0 {
            match &self.first {
                FirstProbs::Shared(p) => out.extend_from_slice(p),
                FirstProbs::PerClass { rows, class } => out.extend_from_slice(&rows[class[row]]),
            }
            return;
        }
        let (r, d) = &self.steps[j - 1];
        let wp = match d {
            StepDir::Up => r.n_down,
            StepDir::Down => r.n_up,
        };
        let parent: Vec<f64> = layers[j - 1].states[row * wp..(row + 1) * wp]
            .iter()
            .map(|&v| v as f64)
            .collect();
        out.extend(step_probs(r, *d, &parent));
    }
}

/// Sums of S samples (shifted by fixed pilot means, see [`FlowMoments`]) from which the
/// correlators follow; additive over disjoint sets of samples.
#[derive(Clone, Debug)]
struct BlockSums {
    n: usize,
    /// `Σ (O(L_j) − c_j)` (sampled values).
    sum_ops: Vec<Vec<f64>>,
    /// `Σ (E[O(L_j)|L_{j−1}] − c̄_j)` (Rao-Blackwell only).
    sum_means: Vec<Vec<f64>>,
    /// Plain: `Σ (O − c)(O − c)ᵀ`; Rao-Blackwell: `Σ (μ − c̄)(μ − c̄)ᵀ`.
    self_second: Vec<Mat<f64>>,
    /// Rao-Blackwell only: `Σ (O_j − c)(O_j − c)ᵀ` of the sampled values of layers j = 1…M−1 (the
    /// source sides of the steps), for the positive semi-definite joint estimate of the canonical
    /// correlations ([`FlowCorrelators::source_cov`]).
    source_second: Vec<Mat<f64>>,
    /// Rao-Blackwell: `Σ Cov(O_a, O_b | L_{j−1}) = Σ (Π_{S_a∪S_b} p − μ_a μ_b)` on the overlapping
    /// pairs of the layer's union table (in its order).
    cond_cov: Vec<Vec<f64>>,
    /// Plain: `Σ (O_j − c)(O_{j−1} − c)ᵀ`; Rao-Blackwell: `Σ (μ_j − c̄)(O_{j−1} − c)ᵀ` (j = 2…M).
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
            source_second: if rb {
                sizes[..m.saturating_sub(1)]
                    .iter()
                    .map(|&k| Mat::zeros(k, k))
                    .collect()
            } else {
                Vec::new()
            },
            cond_cov: unions
                .iter()
                .map(|u| vec![0.0; u.as_ref().map_or(0, |t| t.pairs.len())])
                .collect(),
            cross_second: (1..m).map(|j| Mat::zeros(sizes[j], sizes[j - 1])).collect(),
            direct_second: if direct && m >= 3 {
                Some(Mat::zeros(sizes[m - 1], sizes[0]))
            } else {
                None
            },
        }
    }

    /// `self ← total − self` in place (the sums of the complement of this block).
    fn complement_in(&mut self, total: &BlockSums) {
        self.n = total.n - self.n;
        let subv = |a: &mut Vec<f64>, t: &Vec<f64>| {
            for (x, y) in a.iter_mut().zip(t) {
                *x = y - *x;
            }
        };
        let subm = |a: &mut Mat<f64>, t: &Mat<f64>| {
            for j in 0..a.ncols() {
                for i in 0..a.nrows() {
                    a[(i, j)] = t[(i, j)] - a[(i, j)];
                }
            }
        };
        for (a, t) in self.sum_ops.iter_mut().zip(&total.sum_ops) {
            subv(a, t);
        }
        for (a, t) in self.sum_means.iter_mut().zip(&total.sum_means) {
            subv(a, t);
        }
        for (a, t) in self.cond_cov.iter_mut().zip(&total.cond_cov) {
            subv(a, t);
        }
        for (a, t) in self.self_second.iter_mut().zip(&total.self_second) {
            subm(a, t);
        }
        for (a, t) in self.source_second.iter_mut().zip(&total.source_second) {
            subm(a, t);
        }
        for (a, t) in self.cross_second.iter_mut().zip(&total.cross_second) {
            subm(a, t);
        }
        if let (Some(a), Some(t)) = (self.direct_second.as_mut(), total.direct_second.as_ref()) {
            subm(a, t);
        }
    }

    /// The correlators, computed in place from the sums (no further copy of the m×m matrices).
    fn into_correlators(
        self,
        unions: &[Option<UnionTable>],
        rb: bool,
        direct: bool,
    ) -> Result<FlowCorrelators> {
        let n = self.n;
        let BlockSums {
            sum_ops,
            sum_means,
            self_second,
            source_second,
            cond_cov,
            cross_second,
            direct_second,
            ..
        } = self;
        let m = sum_ops.len();
        let rows_of = |j: usize| if rb { &sum_means[j] } else { &sum_ops[j] };
        let mut self_cov = Vec::with_capacity(m);
        for (j, mut c) in self_second.into_iter().enumerate() {
            covariance_from_sums(&mut c, rows_of(j), rows_of(j), n)?;
            if let Some(t) = &unions[j] {
                // Law of total covariance: + E[Cov(O|prev)] on the overlapping pairs.
                for (&(a, b, _), &e) in t.pairs.iter().zip(&cond_cov[j]) {
                    let (a, b) = (a as usize, b as usize);
                    let e = e / n as f64;
                    c[(a, b)] += e;
                    if a != b {
                        c[(b, a)] += e;
                    }
                }
            }
            self_cov.push(c);
        }
        let mut cross_cov = Vec::with_capacity(m.saturating_sub(1));
        for (i, mut c) in cross_second.into_iter().enumerate() {
            covariance_from_sums(&mut c, rows_of(i + 1), &sum_ops[i], n)?;
            cross_cov.push(c);
        }
        let direct_cov = if !direct {
            None
        } else if m == 1 {
            Some(self_cov[0].clone())
        } else if m == 2 {
            Some(cross_cov[0].clone())
        } else {
            let mut d = direct_second
                .ok_or_else(|| Error::invalid("direct moments were not accumulated"))?;
            covariance_from_sums(&mut d, rows_of(m - 1), &sum_ops[0], n)?;
            Some(d)
        };
        let source_cov = if rb {
            let mut out = Vec::with_capacity(source_second.len());
            for (j, mut c) in source_second.into_iter().enumerate() {
                covariance_from_sums(&mut c, &sum_ops[j], &sum_ops[j], n)?;
                out.push(c);
            }
            Some(out)
        } else {
            None
        };
        Ok(FlowCorrelators {
            self_cov,
            cross_cov,
            direct_cov,
            source_cov,
        })
    }
}

/// Rows processed at once when accumulating (bounds the memory of the operator matrices).
const ACC_ROWS: usize = 2048;

/// Rows of the pilot from which the accumulation shifts are taken.
const PILOT_ROWS: usize = 256;

/// Default memory budget of [`FlowMoments`]: 2 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 2 << 30;

/// Options of [`FlowMoments::accumulate_with`].
#[derive(Clone, Debug)]
pub struct MomentOptions {
    /// Correlator estimator.
    pub estimator: Estimator,
    /// Contiguous jackknife blocks (≥ 1; 1 = no error bars).
    pub blocks: usize,
    /// Also accumulate `Cov(O(L_M), O(L_1))` for the direct estimator.
    pub direct: bool,
    /// Largest number of bytes the moments may need (see [`FlowMoments::estimated_bytes`]).
    pub memory_budget: usize,
    /// The flow's kernels, for f64 conditional probabilities (Rao-Blackwell); `None` uses the f32
    /// probabilities stored with the samples.
    pub kernels: Option<FlowKernels>,
}

/// Sufficient statistics of S ancestral samples along a flow `L_1 … L_M`, from which the
/// correlators of the full sample and of every delete-one-block subsample (jackknife, RG-NOTES
/// §3.2) follow.
///
/// **Memory.** Only the sums of all samples are kept, with the samples themselves; the sums of a
/// delete-one-block subsample are formed in one scratch copy by re-accumulating that block and
/// subtracting it from the total. The peak is about three copies of
/// `(Σ_j m_j² [+ Σ_{j<M} m_j², Rao-Blackwell] + Σ_j m_j m_{j−1} [+ m_M m_1] + overlapping pairs) × 8`
/// bytes (total, scratch, and
/// the full-sample correlators a caller holds meanwhile); [`FlowMoments::estimated_bytes`] gives
/// it, and accumulation refuses to start beyond the budget.
///
/// **Numerics.** Every sum is of values shifted by fixed pilot means (the mean of the first
/// `min(S, 256)` samples), so `Σxy − Σx Σy / S` does not cancel catastrophically; the shift is the
/// same for every block, which keeps the sums additive.
#[derive(Clone, Debug)]
pub struct FlowMoments {
    estimator: Estimator,
    layers: Vec<LayerBatch>,
    bases: Vec<OperatorBasis>,
    kernels: Option<FlowKernels>,
    unions: Vec<Option<UnionTable>>,
    shift_ops: Vec<Vec<f64>>,
    shift_means: Vec<Vec<f64>>,
    s: usize,
    blocks: usize,
    total: BlockSums,
    direct: bool,
}

impl FlowMoments {
    /// Accumulate the moments of `s` samples. `layers[j−1]` holds flow layer j (states and the
    /// conditional unit probabilities they were drawn from, as returned by
    /// [`crate::sample::sample_up`] / [`crate::sample::sample_down`]); `bases[j−1]` is its operator
    /// basis. `blocks ≥ 1` contiguous blocks are used for the jackknife (1 = no error bars).
    /// `direct` also accumulates `Cov(O(L_M), O(L_1))` for the direct estimator. Uses the f32
    /// probabilities of `layers` and the default memory budget; see [`FlowMoments::accumulate_with`].
    pub fn accumulate(
        layers: &[LayerBatch],
        bases: &[OperatorBasis],
        s: usize,
        estimator: Estimator,
        blocks: usize,
        direct: bool,
    ) -> Result<Self> {
        Self::accumulate_with(
            layers.to_vec(),
            bases,
            s,
            MomentOptions {
                estimator,
                blocks,
                direct,
                memory_budget: DEFAULT_MEMORY_BUDGET,
                kernels: None,
            },
        )
    }

    /// Bytes the moments of a flow with operator counts `sizes` need at their peak (three copies of
    /// the sums, see the type's doc, plus the per-chunk operator values); `pairs[j]` is the number
    /// of overlapping operator pairs of layer j (Rao-Blackwell only, else 0).
    pub fn estimated_bytes(
        sizes: &[usize],
        pairs: &[usize],
        estimator: Estimator,
        direct: bool,
    ) -> usize {
        let m = sizes.len();
        let sq = |a: usize, b: usize| a.saturating_mul(b);
        let rb = estimator == Estimator::RaoBlackwell;
        let mut words: usize = 0;
        for j in 0..m {
            words = words
                .saturating_add(sq(sizes[j], sizes[j]))
                .saturating_add(2 * sizes[j]);
            if j >= 1 {
                words = words.saturating_add(sq(sizes[j], sizes[j - 1]));
            }
            if rb && j + 1 < m {
                // The plain covariance of the source layer (canonical correlations).
                words = words.saturating_add(sq(sizes[j], sizes[j]));
            }
        }
        if direct && m >= 3 {
            words = words.saturating_add(sq(sizes[m - 1], sizes[0]));
        }
        words = words.saturating_add(pairs.iter().sum::<usize>());
        let chunk =
            sq(ACC_ROWS, sizes.iter().sum::<usize>()).saturating_mul(if rb { 2 } else { 1 });
        // Union tables: (a, b, u) triples of 12 bytes per pair.
        let tables = pairs.iter().sum::<usize>().saturating_mul(12);
        words
            .saturating_mul(3)
            .saturating_add(chunk)
            .saturating_mul(8)
            .saturating_add(tables)
    }

    /// [`FlowMoments::accumulate`] with all options (taking the samples by value).
    pub fn accumulate_with(
        layers: Vec<LayerBatch>,
        bases: &[OperatorBasis],
        s: usize,
        opts: MomentOptions,
    ) -> Result<Self> {
        let MomentOptions {
            estimator,
            blocks,
            direct,
            memory_budget,
            kernels,
        } = opts;
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
        let widths: Vec<usize> = bases.iter().map(|b| b.width()).collect();
        if let Some(k) = &kernels {
            k.validate(&widths, s)?;
        }
        let rb = estimator == Estimator::RaoBlackwell;
        let sizes: Vec<usize> = bases.iter().map(|b| b.len()).collect();
        let pairs: Vec<usize> = if rb {
            bases.iter().map(overlapping_pairs).collect()
        } else {
            vec![0; m]
        };
        let need = Self::estimated_bytes(&sizes, &pairs, estimator, direct);
        if need > memory_budget {
            return Err(Error::invalid(format!(
                "flow moments: operator counts {sizes:?} (overlapping pairs {pairs:?}) need about \
                 {:.2} GiB, over the memory budget of {:.2} GiB; use smaller bases or raise \
                 FlowParams::memory_budget",
                need as f64 / (1u64 << 30) as f64,
                memory_budget as f64 / (1u64 << 30) as f64
            )));
        }
        let unions: Vec<Option<UnionTable>> = if rb {
            bases
                .iter()
                .map(|b| UnionTable::new(b).map(Some))
                .collect::<Result<_>>()?
        } else {
            vec![None; m]
        };
        let mut fm = FlowMoments {
            estimator,
            layers,
            bases: bases.to_vec(),
            kernels,
            shift_ops: sizes.iter().map(|&k| vec![0.0; k]).collect(),
            shift_means: sizes.iter().map(|&k| vec![0.0; k]).collect(),
            total: BlockSums::zeros(&[], &[], false, false),
            unions,
            s,
            blocks,
            direct,
        };
        // Pilot shifts (exact 0/1 counts need none: bit-packed sums stay unshifted).
        if estimator != Estimator::BitPacked {
            let pilot = fm.sums_of(0..s.min(PILOT_ROWS))?;
            let inv = 1.0 / pilot.n as f64;
            fm.shift_ops = pilot
                .sum_ops
                .iter()
                .map(|v| v.iter().map(|x| x * inv).collect())
                .collect();
            if rb {
                fm.shift_means = pilot
                    .sum_means
                    .iter()
                    .map(|v| v.iter().map(|x| x * inv).collect())
                    .collect();
            }
        }
        fm.total = fm.sums_of(0..s)?;
        Ok(fm)
    }

    /// Number of jackknife blocks.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Total number of samples.
    pub fn samples(&self) -> usize {
        self.total.n
    }

    /// The estimator used.
    pub fn estimator(&self) -> Estimator {
        self.estimator
    }

    /// Correlators of all samples (`exclude = None`) or of all samples but block `b` (`Some(b)`,
    /// the delete-one-block jackknife subsample, formed by re-accumulating block b into one scratch
    /// copy and subtracting it from the total).
    pub fn correlators(&self, exclude: Option<usize>) -> Result<FlowCorrelators> {
        let rb = self.estimator == Estimator::RaoBlackwell;
        let sums = match exclude {
            None => self.total.clone(),
            Some(b) => {
                if b >= self.blocks {
                    return Err(Error::invalid(format!(
                        "jackknife block {b} of {} does not exist",
                        self.blocks
                    )));
                }
                if self.blocks < 2 {
                    return Err(Error::invalid(
                        "jackknife: a single block cannot be left out",
                    ));
                }
                let mut scratch = self.sums_of(block_range(self.s, self.blocks, b))?;
                scratch.complement_in(&self.total);
                scratch
            }
        };
        sums.into_correlators(&self.unions, rb, self.direct)
    }

    /// The (shifted) sums of the samples in `rows`, accumulated `ACC_ROWS` at a time.
    fn sums_of(&self, rows: Range<usize>) -> Result<BlockSums> {
        let sizes: Vec<usize> = self.bases.iter().map(|b| b.len()).collect();
        let rb = self.estimator == Estimator::RaoBlackwell;
        let mut sums = BlockSums::zeros(&sizes, &self.unions, rb, self.direct);
        let mut start = rows.start;
        while start < rows.end {
            let end = (start + ACC_ROWS).min(rows.end);
            self.accumulate_rows(&mut sums, start..end)?;
            start = end;
        }
        Ok(sums)
    }

    fn accumulate_rows(&self, sums: &mut BlockSums, rows: Range<usize>) -> Result<()> {
        let (layers, bases) = (&self.layers, &self.bases);
        let m = layers.len();
        let r = rows.len();
        let mut ops = Vec::with_capacity(m);
        for (l, b) in layers.iter().zip(bases) {
            ops.push(b.evaluate(&slice_rows(&l.states, b.width(), &rows), r)?);
        }
        sums.n += r;
        if self.estimator == Estimator::BitPacked {
            for j in 0..m {
                col_sums(ops[j].as_ref(), &mut sums.sum_ops[j]);
            }
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
            return Ok(());
        }
        for j in 0..m {
            shift_columns(&mut ops[j], &self.shift_ops[j]);
            col_sums(ops[j].as_ref(), &mut sums.sum_ops[j]);
        }
        if self.estimator == Estimator::Plain {
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
            return Ok(());
        }
        // Rao-Blackwell: conditional means μ = Π p and conditional covariances, from f64 p.
        let mut means = Vec::with_capacity(m);
        let mut p = Vec::new();
        for j in 0..m {
            let b = &bases[j];
            let w = b.width();
            let mut mu = Mat::<f64>::zeros(r, b.len());
            let mut row_mu = vec![0.0f64; b.len()];
            let t = self.unions[j].as_ref();
            let n_u = t.map_or(0, |t| t.unions.len());
            let mut u = vec![0.0f64; n_u];
            // Conditional covariances in blocks of PAIR_ROWS rows: union products and means are
            // stored operator-major so that each pair's sum over the block is one contiguous,
            // vectorisable loop (same per-row terms `Π_{S∪T} p − μ_S μ_T` as row by row).
            let mut ublk = vec![0.0f64; if t.is_some() { n_u * PAIR_ROWS } else { 0 }];
            let mut mblk = vec![0.0f64; if t.is_some() { b.len() * PAIR_ROWS } else { 0 }];
            let mut filled = 0usize;
            for (i, row) in rows.clone().enumerate() {
                match &self.kernels {
                    Some(k) => k.probs(j, layers, row, &mut p),
                    None => {
                        p.clear();
                        p.extend(
                            layers[j].probs[row * w..(row + 1) * w]
                                .iter()
                                .map(|&v| v as f64),
                        );
                    }
                }
                b.evaluate_one(&p, &mut row_mu);
                if let Some(t) = t {
                    t.eval(&p, &mut u);
                    for (k, &v) in u.iter().enumerate() {
                        ublk[k * PAIR_ROWS + filled] = v;
                    }
                    for (k, &v) in row_mu.iter().enumerate() {
                        mblk[k * PAIR_ROWS + filled] = v;
                    }
                    filled += 1;
                    if filled == PAIR_ROWS || i + 1 == r {
                        if filled < PAIR_ROWS {
                            for blk in [&mut ublk, &mut mblk] {
                                for chunk in blk.chunks_exact_mut(PAIR_ROWS) {
                                    chunk[filled..].fill(0.0);
                                }
                            }
                        }
                        add_conditional_covariances(&mut sums.cond_cov[j], &t.pairs, &ublk, &mblk);
                        filled = 0;
                    }
                }
                for (a, (&v, &c)) in row_mu.iter().zip(&self.shift_means[j]).enumerate() {
                    mu[(i, a)] = v - c;
                }
            }
            col_sums(mu.as_ref(), &mut sums.sum_means[j]);
            add_atb(&mut sums.self_second[j], mu.as_ref(), mu.as_ref())?;
            if j + 1 < m {
                add_atb(&mut sums.source_second[j], ops[j].as_ref(), ops[j].as_ref())?;
            }
            if j >= 1 {
                add_atb(
                    &mut sums.cross_second[j - 1],
                    mu.as_ref(),
                    ops[j - 1].as_ref(),
                )?;
            }
            means.push(mu);
        }
        if let Some(d) = sums.direct_second.as_mut() {
            add_atb(d, means[m - 1].as_ref(), ops[0].as_ref())?;
        }
        Ok(())
    }
}

fn shift_columns(a: &mut Mat<f64>, c: &[f64]) {
    for (j, &cj) in c.iter().enumerate() {
        if cj != 0.0 {
            for i in 0..a.nrows() {
                a[(i, j)] -= cj;
            }
        }
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
