//! Binary operators packed 64 samples to a word, and their exact co-occurrence counts by AND +
//! popcount (SPEC §5: "bit-packed AND + popcount computes them exactly and fast").

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rg::operators::OperatorBasis;

use super::*;

/// Binary operator values of `S` samples packed 64 samples to a `u64` word, one row of words per
/// operator (SPEC §5).
#[derive(Clone, Debug, PartialEq)]
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
