//! `rgshield bench rg`: the correlators and stability matrix of one layer, bit-packed beside float
//! GEMM, in one run.

use serde::Serialize;

use super::npy;
use crate::error::Result;
use crate::params::Params;

/// Settings of `rgshield bench rg` (RG engine issue: one layer, width 64, order 2 = 2080
/// operators, 20 000 samples).
#[derive(Clone, Debug)]
pub struct RgBenchConfig {
    /// Width of the two layers whose correlators are timed.
    pub width: usize,
    /// Ancestral samples S.
    pub samples: usize,
    /// Seed of the random stack and of the samples.
    pub seed: u64,
    /// Repetitions; the fastest is reported.
    pub reps: usize,
    /// Write the two layers' states (`hi.npy`, `lo.npy`, 0/1 `u8`, S × width) and the bit-packed
    /// `C_kk`, `C_k,k-1` (`rust_ckk.npy`, `rust_ckl.npy`, f64) here, for the numpy reference.
    pub dump: Option<std::path::PathBuf>,
}

/// Timings of one `bench rg` run, in seconds (fastest of the repetitions).
#[derive(Clone, Debug, Serialize)]
pub struct RgBenchReport {
    /// Width of the two layers.
    pub width: usize,
    /// Operators per layer (order 2: w(w+1)/2).
    pub operators: usize,
    /// Ancestral samples S.
    pub samples: usize,
    /// Evaluating the operators of both layers and packing them 64 samples to a word.
    pub pack_seconds: f64,
    /// `C_kk` and `C_{k,k−1}` by AND + popcount.
    pub bitpacked_seconds: f64,
    /// Evaluating the operators of both layers as f64 matrices (the float path's input).
    pub evaluate_seconds: f64,
    /// `C_kk` and `C_{k,k−1}` by centred f64 GEMM (faer), the straightforward float version.
    pub float_seconds: f64,
    /// `C_kk` and `C_{k,k−1}` from raw f32 GEMM counts (`O Oᵀ` of the 0/1 values, exact for
    /// S < 2²⁴) and the column sums: the fastest float version, beside the f64 one.
    pub float32_seconds: f64,
    /// `T = C_kk^{-1} C_{k,k−1}` with the default ridge, from the bit-packed correlators.
    pub stability_seconds: f64,
    /// Largest |difference| between the bit-packed and the float correlators.
    pub max_abs_difference: f64,
    /// (float evaluate + float GEMM) / (pack + bit-packed): the ratio, goal ≥ 5.
    pub ratio: f64,
    /// Float GEMM alone over bit-packed counting alone.
    pub ratio_kernels: f64,
    /// f32 raw-count GEMM over bit-packed counting alone.
    pub ratio_kernels_f32: f64,
    /// Threads rayon used.
    pub threads: usize,
}

/// The goal of `bench rg`: the bit-packed correlators ≥ 5× the float GEMM version.
pub const RG_BENCH_GOAL: f64 = 5.0;

/// The fastest of `reps` (at least 1) runs of `f`: (seconds, its last result).
pub(crate) fn fastest<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..reps.max(1) {
        let t0 = std::time::Instant::now();
        let v = f()?;
        best = best.min(t0.elapsed().as_secs_f64());
        out = Some(v);
    }
    let v = out.ok_or_else(|| crate::error::Error::invalid("bench: zero repetitions"))?;
    Ok((best, v))
}

/// The order-2 basis of width `width` and exact ancestral samples of layers 1 (`lo`) and 2 (`hi`),
/// `samples × width` each, of `bench rg`'s random stack given its random binary input.
pub(crate) fn rg_bench_states(
    width: usize,
    samples: usize,
    seed: u64,
) -> Result<(crate::rg::OperatorBasis, Vec<f32>, Vec<f32>)> {
    use crate::model::DeepRbm;
    use crate::rg::{FlowParams, OperatorBasis};
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    let w = width;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let model = DeepRbm::random(&[w, w, w], 4.0 / (w as f32).sqrt(), &mut rng)?;
    let x: Vec<f32> = (0..w)
        .map(|_| if rng.random::<bool>() { 1.0 } else { 0.0 })
        .collect();
    let fc = FlowParams {
        samples,
        seed,
        blocks: 1,
        ..FlowParams::default()
    }
    .check()?;
    let mut layers = crate::rg::stability::sample_classification(&model, &x, &fc)?;
    let hi = layers.swap_remove(1).states;
    let lo = layers.swap_remove(0).states;
    Ok((OperatorBasis::order2(w)?, lo, hi))
}

/// The order-2 operators of a layer of `width` units, `w(w+1)/2`, and `(m × S, m × m)` for `S`
/// samples (`None` on overflow).
fn operator_sizes(width: usize, samples: usize) -> Option<(u64, u64)> {
    let w = width as u64;
    let m = w.checked_mul(w + 1)? / 2;
    Some((m.checked_mul(samples as u64)?, m.checked_mul(m)?))
}

/// Estimated peak memory of [`rg_bench`] at `width` and `samples`, in bytes (`None` on
/// overflow): the flow's samples ([`crate::rg::stability::flow_sample_bytes`]), the two operator
/// matrices in f64 (m × S each, m = w(w+1)/2) and one more for the centring of the covariance,
/// their operator-major f32 copies, and six m × m f64 matrices (the bit-packed and the float
/// correlators, the raw counts, the stability solve). At width 64, S = 20 000 it gives 1.6 GB,
/// beside a measured peak of 1.5 GiB (`docs/results/2026-11-25/perf.md`).
pub fn rg_bench_bytes(width: usize, samples: usize) -> Option<u64> {
    let (ms, mm) = operator_sizes(width, samples)?;
    crate::rg::stability::flow_sample_bytes(&[width, width, width], samples)?
        .checked_add(ms.checked_mul(3 * 8 + 2 * 4)?)?
        .checked_add(mm.checked_mul(6 * 8)?)
}

/// Estimated peak memory of the bit-packed path alone (`bench perf`'s bit-packed job): the
/// flow's samples, both layers' packed operators (m rows of ⌈S/64⌉ words) and four m × m f64
/// matrices (the two correlators and their tiles' partial sums). `None` on overflow.
pub fn bitpacked_bytes(width: usize, samples: usize) -> Option<u64> {
    let (_, mm) = operator_sizes(width, samples)?;
    let m = (width as u64).checked_mul(width as u64 + 1)? / 2;
    let words = (samples as u64).div_ceil(64);
    crate::rg::stability::flow_sample_bytes(&[width, width, width], samples)?
        .checked_add(m.checked_mul(words)?.checked_mul(2 * 8)?)?
        .checked_add(mm.checked_mul(4 * 8)?)
}

/// The bit-packed path's timings (fastest of `reps`) and its `C_kk`, `C_k,k-1`.
pub(crate) struct BitPackedTiming {
    pub pack_seconds: f64,
    pub bitpacked_seconds: f64,
    pub ckk: faer::Mat<f64>,
    pub ckl: faer::Mat<f64>,
}

/// Pack both layers' operators (`hi` = layer k, `lo` = layer k−1, S × width each) and form
/// `C_kk`, `C_k,k-1` by AND + popcount, each stage timed.
pub(crate) fn time_bitpacked(
    basis: &crate::rg::OperatorBasis,
    lo: &[f32],
    hi: &[f32],
    samples: usize,
    reps: usize,
) -> Result<BitPackedTiming> {
    use crate::rg::correlators::{covariance_bitpacked, PackedOperators};
    let (pack_seconds, (pk, pl)) = fastest(reps, || {
        Ok((
            PackedOperators::from_states(basis, hi, samples)?,
            PackedOperators::from_states(basis, lo, samples)?,
        ))
    })?;
    let (bitpacked_seconds, (ckk, ckl)) = fastest(reps, || {
        Ok((
            covariance_bitpacked(&pk, &pk)?,
            covariance_bitpacked(&pk, &pl)?,
        ))
    })?;
    Ok(BitPackedTiming {
        pack_seconds,
        bitpacked_seconds,
        ckk,
        ckl,
    })
}

/// Time the correlators and the stability matrix of one layer (SPEC §5) on a random stack
/// `width-width-width` (weights N(0, 1/width)·4, a strongly coupled regime), from exact ancestral
/// samples of layers 1 and 2 given a random binary input; bit-packed and float in the same run.
pub fn rg_bench(cfg: &RgBenchConfig) -> Result<RgBenchReport> {
    use crate::rg::correlators::covariance;
    use crate::rg::{stability::stability_matrix, Regularisation};

    let w = cfg.width;
    let (basis, lo, hi) = rg_bench_states(w, cfg.samples, cfg.seed)?;
    let (s, lo, hi) = (cfg.samples, &lo, &hi);

    let BitPackedTiming {
        pack_seconds,
        bitpacked_seconds,
        ckk,
        ckl,
    } = time_bitpacked(&basis, lo, hi, s, cfg.reps)?;
    let (evaluate_seconds, (fk, fl)) = fastest(cfg.reps, || {
        Ok((basis.evaluate(hi, s)?, basis.evaluate(lo, s)?))
    })?;
    let (float_seconds, (gkk, gkl)) = fastest(cfg.reps, || {
        Ok((
            covariance(fk.as_ref(), fk.as_ref())?,
            covariance(fk.as_ref(), fl.as_ref())?,
        ))
    })?;
    // Operator-major f32 copies (m × S row-major) for the raw-count GEMM.
    let op_major = |f: &faer::Mat<f64>| -> Vec<f32> {
        let mut v = Vec::with_capacity(f.nrows() * f.ncols());
        for a in 0..f.ncols() {
            v.extend(f.col_as_slice(a).iter().map(|&x| x as f32));
        }
        v
    };
    let (ok, ol) = (op_major(&fk), op_major(&fl));
    let m = basis.len();
    let (float32_seconds, _) = fastest(cfg.reps, || {
        let mut out = Vec::new();
        for other in [&ok, &ol] {
            let mut n = vec![0.0f32; m * m];
            crate::linalg::gemm_abt(&mut n, &ok, other, m, s, m);
            let sums = |o: &[f32]| -> Vec<f64> {
                o.chunks_exact(s)
                    .map(|r| r.iter().map(|&x| x as f64).sum())
                    .collect()
            };
            let mut c = faer::Mat::from_fn(m, m, |i, j| n[i * m + j] as f64);
            crate::rg::correlators::covariance_from_sums(&mut c, &sums(&ok), &sums(other), s)?;
            out.push(c);
        }
        Ok(out)
    })?;
    let (stability_seconds, _) = fastest(cfg.reps, || {
        stability_matrix(ckk.as_ref(), ckl.as_ref(), Regularisation::default())
    })?;
    if let Some(dir) = &cfg.dump {
        npy::write_u8(&dir.join("hi.npy"), hi, s, w)?;
        npy::write_u8(&dir.join("lo.npy"), lo, s, w)?;
        for (name, c) in [("rust_ckk.npy", &ckk), ("rust_ckl.npy", &ckl)] {
            npy::write_f64(&dir.join(name), c.nrows(), c.ncols(), |i, j| c[(i, j)])?;
        }
    }
    let mut max_abs_difference = 0.0f64;
    for (a, b) in [(&ckk, &gkk), (&ckl, &gkl)] {
        for j in 0..a.ncols() {
            for i in 0..a.nrows() {
                max_abs_difference = max_abs_difference.max((a[(i, j)] - b[(i, j)]).abs());
            }
        }
    }
    Ok(RgBenchReport {
        width: w,
        operators: basis.len(),
        samples: s,
        pack_seconds,
        bitpacked_seconds,
        evaluate_seconds,
        float_seconds,
        float32_seconds,
        stability_seconds,
        max_abs_difference,
        ratio: (evaluate_seconds + float_seconds) / (pack_seconds + bitpacked_seconds),
        ratio_kernels: float_seconds / bitpacked_seconds,
        ratio_kernels_f32: float32_seconds / bitpacked_seconds,
        threads: rayon::current_num_threads(),
    })
}

/// The `bench rg` table (Markdown) with the goal beside the ratio.
pub fn rg_bench_table(r: &RgBenchReport) -> String {
    let verdict = if r.ratio >= RG_BENCH_GOAL {
        "met"
    } else {
        "MISSED"
    };
    format!(
        "bench rg: one layer, width {w}, order 2 = {m} operators, {s} samples, {t} threads\n\n\
         | stage | bit-packed (s) | float GEMM (s) |\n|---|---|---|\n\
         | evaluate operators (+ pack) | {:.3} | {:.3} |\n\
         | C_kk and C_k,k-1 | {:.3} | {:.3} |\n\
         | total | {:.3} | {:.3} |\n\n\
         ratio float/bit-packed: total {:.2}× (goal ≥ {:.0}×: {verdict}), kernels alone {:.2}×\n\
         raw-count f32 GEMM (exact for S < 2^24) for C_kk and C_k,k-1: {:.3} s, {:.2}× the bit-packed kernel\n\
         stability matrix T = C_kk^-1 C_k,k-1 ({m}×{m}, ridge): {:.3} s\n\
         max |bit-packed − float| over both correlators: {:.2e}",
        r.pack_seconds,
        r.evaluate_seconds,
        r.bitpacked_seconds,
        r.float_seconds,
        r.pack_seconds + r.bitpacked_seconds,
        r.evaluate_seconds + r.float_seconds,
        r.ratio,
        RG_BENCH_GOAL,
        r.ratio_kernels,
        r.float32_seconds,
        r.ratio_kernels_f32,
        r.stability_seconds,
        r.max_abs_difference,
        w = r.width,
        m = r.operators,
        s = r.samples,
        t = r.threads,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_estimates_by_hand() {
        // Width 4: m = 10 operators; S = 64: flow samples 2 layers × 4 units × 64 × 16 bytes.
        let flow = 2 * 4 * 64 * 16;
        assert_eq!(rg_bench_bytes(4, 64), Some(flow + 640 * 32 + 100 * 48));
        assert_eq!(bitpacked_bytes(4, 64), Some(flow + 10 * 16 + 100 * 32));
        // The float path grows with S and dominates; the bit-packed one stays far below it.
        let (a, b) = (
            rg_bench_bytes(64, 20_000).unwrap(),
            bitpacked_bytes(64, 20_000).unwrap(),
        );
        assert!(a > 1_500_000_000 && a < 1_700_000_000, "{a}");
        assert!(b < a / 8, "{b}");
        assert_eq!(rg_bench_bytes(usize::MAX, 2), None);
    }
}
