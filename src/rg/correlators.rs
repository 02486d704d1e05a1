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

use std::collections::HashMap;
use std::ops::Range;

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::linalg::dense;
use crate::model::Rbm;
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
        for a in 0..m {
            let row = &mut bits[a * words..(a + 1) * words];
            for r in 0..s {
                let v = values[(r, a)];
                if v == 1.0 {
                    row[r / 64] |= 1u64 << (r % 64);
                } else if v != 0.0 {
                    return Err(Error::invalid(format!(
                        "bit-packing: operator {a} has the non-binary value {v} in sample {r}"
                    )));
                }
            }
        }
        Ok(Self::from_bits(s, words, m, bits))
    }

    /// The packed operators from their bit rows (`m` rows of `words` words), counting each row.
    fn from_bits(samples: usize, words: usize, ops: usize, bits: Vec<u64>) -> Self {
        let counts = (0..ops)
            .map(|a| {
                bits[a * words..(a + 1) * words]
                    .iter()
                    .map(|w| w.count_ones() as u64)
                    .sum()
            })
            .collect();
        PackedOperators {
            samples,
            words,
            ops,
            bits,
            counts,
        }
    }

    /// Evaluate `basis` on binary states (row-major `s × width`, entries exactly 0 or 1) and pack
    /// the result: the units are packed once and each monomial's row is the AND of its units' rows
    /// (`O_S = Π_{i∈S} h_i` on {0,1}), built from its prefix monomial when that comes earlier.
    pub fn from_states(basis: &OperatorBasis, states: &[f32], s: usize) -> Result<Self> {
        let width = basis.width();
        if states.len() != s * width {
            return Err(Error::shape(format!(
                "bit-packing: {} values for {s} samples of a {width}-unit layer",
                states.len()
            )));
        }
        let words = s.div_ceil(64);
        let mut units = vec![0u64; width * words];
        for (r, row) in states.chunks_exact(width.max(1)).enumerate() {
            let (word, bit) = (r / 64, 1u64 << (r % 64));
            for (i, &v) in row.iter().enumerate() {
                if v == 1.0 {
                    units[i * words + word] |= bit;
                } else if v != 0.0 {
                    return Err(Error::invalid(format!(
                        "bit-packing: unit {i} has the non-binary value {v} in sample {r}"
                    )));
                }
            }
        }
        let mono = basis.monomials();
        let prefix = basis.prefixes();
        let m = mono.len();
        let mut bits = vec![0u64; m * words];
        for a in 0..m {
            let (done, rest) = bits.split_at_mut(a * words);
            let row = &mut rest[..words];
            let last = mono[a][mono[a].len() - 1];
            let unit = &units[last * words..(last + 1) * words];
            match prefix[a] {
                Some(p) => {
                    let pre = &done[p * words..(p + 1) * words];
                    for ((o, &x), &y) in row.iter_mut().zip(pre).zip(unit) {
                        *o = x & y;
                    }
                }
                None => {
                    row.copy_from_slice(unit);
                    for &i in &mono[a][..mono[a].len() - 1] {
                        for (o, &y) in row.iter_mut().zip(&units[i * words..(i + 1) * words]) {
                            *o &= y;
                        }
                    }
                }
            }
        }
        Ok(Self::from_bits(s, words, m, bits))
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
    /// `m × m'`. Counted in 4×4 tiles of operator rows over blocks of words that stay in cache,
    /// tiles in parallel (rayon), with the CPU's popcount instructions when it has them
    /// (AVX-512 VPOPCNTDQ, else POPCNT; detected at run time). When `other` is `self` only the
    /// upper triangle of tiles is counted and mirrored.
    pub fn co_occurrences(&self, other: &PackedOperators) -> Result<Vec<u64>> {
        if self.samples != other.samples {
            return Err(Error::shape(format!(
                "co-occurrences: {} samples against {}",
                self.samples, other.samples
            )));
        }
        let (m, mo, w) = (self.ops, other.ops, self.words);
        let symmetric = std::ptr::eq(self, other);
        let mut out = vec![0u64; m * mo];
        if m == 0 || mo == 0 || w == 0 {
            return Ok(out);
        }
        let kernel = popcount::select();
        let mut start = 0;
        while start < w {
            let end = (start + popcount::WORD_BLOCK).min(w);
            out.par_chunks_mut(popcount::TILE * mo)
                .enumerate()
                .for_each(|(t, rows)| {
                    let a0 = t * popcount::TILE;
                    let b_from = if symmetric { a0 } else { 0 };
                    popcount::count_rows(
                        kernel,
                        &self.bits,
                        a0,
                        rows.len() / mo,
                        &other.bits,
                        b_from,
                        mo,
                        w,
                        start..end,
                        rows,
                    );
                });
            start = end;
        }
        if symmetric {
            for a in 0..m {
                let tile_start = a - a % popcount::TILE;
                for b in 0..tile_start {
                    out[a * mo + b] = out[b * mo + a];
                }
            }
        }
        Ok(out)
    }
}

/// The AND + popcount kernels of [`PackedOperators::co_occurrences`].
mod popcount {
    use std::ops::Range;

    /// Operator rows per tile side.
    pub const TILE: usize = 4;
    /// Words per cache block: 64 words = 512 bytes per row, so one block of 2080 rows is 1 MiB.
    pub const WORD_BLOCK: usize = 64;

    /// A 4×4 tile kernel: `acc[i][j] += Σ_w popcount(a_i[w] & b_j[w])` over the given words.
    pub type Tile = fn(&[&[u64]; TILE], &[&[u64]; TILE], &mut [[u64; TILE]; TILE]);

    #[inline(always)]
    fn tile_body(a: &[&[u64]; TILE], b: &[&[u64]; TILE], acc: &mut [[u64; TILE]; TILE]) {
        let n = a[0].len();
        let a = [&a[0][..n], &a[1][..n], &a[2][..n], &a[3][..n]];
        let b = [&b[0][..n], &b[1][..n], &b[2][..n], &b[3][..n]];
        for w in 0..n {
            for i in 0..TILE {
                let x = a[i][w];
                for j in 0..TILE {
                    acc[i][j] += (x & b[j][w]).count_ones() as u64;
                }
            }
        }
    }

    fn tile_generic(a: &[&[u64]; TILE], b: &[&[u64]; TILE], acc: &mut [[u64; TILE]; TILE]) {
        tile_body(a, b, acc)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn tile_popcnt_impl(a: &[&[u64]; TILE], b: &[&[u64]; TILE], acc: &mut [[u64; TILE]; TILE]) {
        tile_body(a, b, acc)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
    fn tile_avx512_impl(a: &[&[u64]; TILE], b: &[&[u64]; TILE], acc: &mut [[u64; TILE]; TILE]) {
        tile_body(a, b, acc)
    }

    #[cfg(target_arch = "x86_64")]
    fn tile_popcnt(a: &[&[u64]; TILE], b: &[&[u64]; TILE], acc: &mut [[u64; TILE]; TILE]) {
        // SAFETY: selected by `select` only when the CPU reports POPCNT.
        unsafe { tile_popcnt_impl(a, b, acc) }
    }

    #[cfg(target_arch = "x86_64")]
    fn tile_avx512(a: &[&[u64]; TILE], b: &[&[u64]; TILE], acc: &mut [[u64; TILE]; TILE]) {
        // SAFETY: selected by `select` only when the CPU reports AVX-512F and VPOPCNTDQ.
        unsafe { tile_avx512_impl(a, b, acc) }
    }

    /// The fastest tile kernel this CPU runs.
    pub fn select() -> Tile {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                return tile_avx512;
            }
            if std::arch::is_x86_feature_detected!("popcnt") {
                return tile_popcnt;
            }
        }
        tile_generic
    }

    /// Add the counts of rows `a0 .. a0+na` of `a` against rows `b_from .. mo` of `b` over the
    /// words `words` into `out` (`na × mo`, row-major). Edge rows repeat the last row of the tile
    /// and their counts are dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn count_rows(
        kernel: Tile,
        a: &[u64],
        a0: usize,
        na: usize,
        b: &[u64],
        b_from: usize,
        mo: usize,
        w: usize,
        words: Range<usize>,
        out: &mut [u64],
    ) {
        fn row<'a>(bits: &'a [u64], r: usize, w: usize, words: &Range<usize>) -> &'a [u64] {
            &bits[r * w + words.start..r * w + words.end]
        }
        let ra: [&[u64]; TILE] = std::array::from_fn(|i| row(a, a0 + i.min(na - 1), w, &words));
        let mut b0 = b_from;
        while b0 < mo {
            let nb = (mo - b0).min(TILE);
            let rb: [&[u64]; TILE] = std::array::from_fn(|j| row(b, b0 + j.min(nb - 1), w, &words));
            let mut acc = [[0u64; TILE]; TILE];
            kernel(&ra, &rb, &mut acc);
            for i in 0..na {
                for j in 0..nb {
                    out[i * mo + b0 + j] += acc[i][j];
                }
            }
            b0 += TILE;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_kernel_counts_the_same() {
            // The selected kernel (AVX-512 or POPCNT on most CPUs) against the portable one.
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let rows: Vec<Vec<u64>> = (0..8).map(|_| (0..37).map(|_| next()).collect()).collect();
            let a: [&[u64]; TILE] = std::array::from_fn(|i| rows[i].as_slice());
            let b: [&[u64]; TILE] = std::array::from_fn(|j| rows[4 + j].as_slice());
            let mut want = [[0u64; TILE]; TILE];
            for i in 0..TILE {
                for j in 0..TILE {
                    want[i][j] = a[i]
                        .iter()
                        .zip(b[j])
                        .map(|(p, q)| (p & q).count_ones() as u64)
                        .sum();
                }
            }
            let mut kernels: Vec<Tile> = vec![tile_generic, select()];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("popcnt") {
                kernels.push(tile_popcnt);
            }
            for k in kernels {
                let mut acc = [[0u64; TILE]; TILE];
                k(&a, &b, &mut acc);
                assert_eq!(acc, want);
            }
        }
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
    let mut c = Mat::from_fn(m, mo, |i, j| n[i * mo + j] as f64);
    let ca: Vec<f64> = a.counts.iter().map(|&v| v as f64).collect();
    let cb: Vec<f64> = b.counts.iter().map(|&v| v as f64).collect();
    covariance_from_sums(&mut c, &ca, &cb, s)?;
    Ok(c)
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
}

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

/// Direction of a flow kernel through an RBM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepDir {
    /// `σ(W h + a)`: lower layer → upper layer (classification).
    Up,
    /// `σ(Wᵀ h + b)`: upper layer → lower layer (generation).
    Down,
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
            let (src, dst) = match d {
                StepDir::Up => (r.n_down, r.n_up),
                StepDir::Down => (r.n_up, r.n_down),
            };
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
        out.extend(crate::exact::step_probs(r, *d, &parent));
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
        Ok(FlowCorrelators {
            self_cov,
            cross_cov,
            direct_cov,
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
/// `(Σ_j m_j² + Σ_j m_j m_{j−1} [+ m_M m_1] + overlapping pairs) × 8` bytes (total, scratch, and
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
        let mut words: usize = 0;
        for j in 0..m {
            words = words
                .saturating_add(sq(sizes[j], sizes[j]))
                .saturating_add(2 * sizes[j]);
            if j >= 1 {
                words = words.saturating_add(sq(sizes[j], sizes[j - 1]));
            }
        }
        if direct && m >= 3 {
            words = words.saturating_add(sq(sizes[m - 1], sizes[0]));
        }
        words = words.saturating_add(pairs.iter().sum::<usize>());
        let rb = estimator == Estimator::RaoBlackwell;
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
                 FlowConfig::memory_budget",
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

/// Rows per block of the Rao-Blackwellised conditional covariances.
const PAIR_ROWS: usize = 32;

/// `acc[pair] += Σ_{r < PAIR_ROWS} (U[u][r] − M[a][r] M[b][r])` for each overlapping pair
/// `(a, b, u)`, with `U` (unions) and `M` (means) stored operator-major in blocks of
/// [`PAIR_ROWS`] rows (rows past the last filled one are zero in both, so they add nothing).
/// Eight lane sums let the compiler vectorise.
fn add_conditional_covariances(
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
fn overlapping_pairs(basis: &OperatorBasis) -> usize {
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

/// The samples of block `b` when `s` samples are split into `blocks` contiguous blocks.
pub fn block_range(s: usize, blocks: usize, b: usize) -> Range<usize> {
    (b * s / blocks)..((b + 1) * s / blocks)
}

/// A delete-one-block jackknife estimate of a vector-valued statistic (RG-NOTES §3.2, §5 A11).
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

/// Delete-one-block jackknife of any statistic: `f(None)` is its value on all samples, `f(Some(b))` its
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
    // Streamed over the replicates (no B copies of the statistic): sums of d_b = θ_b − θ̂ and d_b²;
    // the shift by θ̂ keeps `Σd² − (Σd)²/B` free of cancellation.
    let mut sd = vec![0.0f64; k];
    let mut sdd = vec![0.0f64; k];
    for b in 0..blocks {
        let v = f(Some(b))?;
        if v.len() != k {
            return Err(Error::shape(format!(
                "jackknife: block {b} gave {} values, the full sample {k}",
                v.len()
            )));
        }
        for i in 0..k {
            let d = v[i] - estimate[i];
            sd[i] += d;
            sdd[i] += d * d;
        }
    }
    let bf = blocks as f64;
    let mean: Vec<f64> = (0..k).map(|i| estimate[i] + sd[i] / bf).collect();
    let std_err = (0..k)
        .map(|i| {
            let ss = (sdd[i] - sd[i] * sd[i] / bf).max(0.0);
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

/// Delete-one-block jackknife of a statistic of the samples themselves: `f` receives the indices of the
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
        assert_eq!(p7.bits, q7.bits, "direct packing equals pack(evaluate)");
        assert_eq!(p7.counts, q7.counts);
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
