//! Delete-one-block jackknife error bars (RG-NOTES §3.2, §5 A11).

use std::ops::Range;

use crate::error::{Error, Result};

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
