//! The input Fisher information of the output layer by its enumerated states (SPEC §6: the
//! direct estimator in the indicator basis of layer N, cheap where the operator basis is not).
//!
//! For a stack whose output layer has `n_N ≤ 12` units, enumerate its `2^{n_N}` states y:
//! * `q_N(y|x) = E[t_N(y|h_{N−1})]` over the classification network's samples of `h_{N−1}` given
//!   x, with `t_N(y|h) = Π_i σ_i^{y_i} (1 − σ_i)^{1−y_i}`, `σ = σ(W_N h + a_N)` (Rao-Blackwellised);
//! * only layer 1 depends on x directly, `∂ log q_1(h_1|x)/∂x = W_1ᵀ (h_1 − μ_1)` with
//!   `μ_1 = σ(W_1 x + a_1)`, so by the likelihood-ratio identity
//!   `d_y = ∂q_N(y|x)/∂x = W_1ᵀ E[t_N(y|h_{N−1}) (h_1 − μ_1)]`;
//! * `F = Σ_y d_y d_yᵀ / q_y` (`n_0 × n_0`), the Fisher information of `q_N(·|x)` w.r.t. x.
//!
//! Computed at the width of layer 1: with `e_y = E[t_N(y|h_{N−1}) (h_1 − μ_1)]`,
//! `G = Σ_y e_y e_yᵀ / q_y` (`n_1 × n_1`) and `F = W_1ᵀ G W_1`; with `G = U Λ Uᵀ` the factor
//! `B = Λ^{1/2} Uᵀ W_1` (`n_1 × n_0`) has `F = BᵀB`, so the top eigenpair comes from the
//! `n_1 × n_1` Gram matrix `B Bᵀ` ([`dense::top_eigen_of_gram`]) for the estimate and for every
//! jackknife replicate. Each chunk's sums are one product `Tᵀ C` of its `b × 2^{n_N}` matrix of
//! `t_N(y|h^{(s)})` and its `b × n_1` matrix of `h_1^{(s)} − μ_1`.
//!
//! For N = 1 there is nothing to sample: `q_1(y|x) = t_1(y|x)` and `d_y = t_1(y|x) W_1ᵀ (y − μ_1)`
//! exactly. The complete operator basis of layer N spans the same functions as the indicators, so
//! this is the direct estimator of [`super::fisher`] without its `2^{n_N} × 2^{n_N}` covariance
//! and inverse. The plug-in ratio is biased upward by O(1/S): a delete-one-block jackknife over
//! `blocks` blocks of samples gives standard errors and the bias-corrected `B θ̂ − (B − 1) θ̄`.

use faer::{Mat, MatRef};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::linalg::dense;
use crate::model::DeepRbm;
use crate::rg::correlators::jackknife;
use crate::sample::{ancestral_chunk, LaneRng, OutputMode, Predictor, CHUNK};
use crate::util::mix_seed;
use rand::SeedableRng;

/// Largest output layer that is enumerated.
pub const MAX_OUTPUT_UNITS: usize = 12;

/// The estimate of one input's Fisher information by the output states.
#[derive(Clone, Debug, Serialize)]
pub struct StateFisher {
    /// The factor `B` (`n_1 × n_0`) of `F = BᵀB` (module doc); [`StateFisher::value`] forms `F`
    /// on demand, since the depth study needs only its top eigenpair.
    #[serde(skip)]
    pub factor: Mat<f64>,
    /// Its top eigenvalue.
    pub top: f64,
    /// The top eigenvector (unit, sign as [`dense::orient_largest_positive`] fixes it).
    pub top_vector: Vec<f64>,
    /// Jackknife standard error of the top eigenvalue (`None` with one block or N = 1).
    pub top_std_err: Option<f64>,
    /// Jackknife bias-corrected top eigenvalue (`None` with one block or N = 1).
    pub top_bias_corrected: Option<f64>,
    /// Samples used (0 for N = 1, exact).
    pub samples: usize,
}

impl StateFisher {
    /// `F = BᵀB`, row-major `n_0 × n_0`.
    pub fn value(&self) -> Result<Vec<f64>> {
        let f = dense::mul_tn(self.factor.as_ref(), self.factor.as_ref())?;
        Ok(dense::to_row_major(f.as_ref()))
    }
}

/// Per-block sums: `Σ_s t(y|h^{(s)})` (length 2^{n_N}) and `Σ_s t(y|h^{(s)}) (h_1^{(s)} − μ_1)`
/// (row-major `2^{n_N} × n_1`), and the block's sample count.
struct BlockSums {
    q: Vec<f64>,
    e: Vec<f64>,
    n: usize,
}

/// The product-Bernoulli distribution over the `2^n` states of `n` units (unit i = bit i of the
/// state index) with unit means `p`, into `out` (length `2^n`), by doubling: `O(2^n)`, each
/// state's probability the product of its factors in unit order.
pub fn product_bernoulli(p: &[f64], out: &mut [f64]) {
    debug_assert_eq!(out.len(), 1 << p.len());
    out[0] = 1.0;
    let mut len = 1usize;
    for &pi in p {
        for s in 0..len {
            let v = out[s];
            out[s + len] = v * pi;
            out[s] = v * (1.0 - pi);
        }
        len <<= 1;
    }
}

/// The factor `B = Λ^{1/2} Uᵀ W_1` (`n_1 × n_0`) of `F = BᵀB`, from `q_y` and `e_y` (row-major
/// `2^{n_N} × n_1`) through `G = Σ_y e_y e_yᵀ / q_y = U Λ Uᵀ` (module doc). States with
/// `q_y = 0` have `e_y = 0` and add nothing.
fn fisher_factor(q: &[f64], e: &[f64], w1: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let n1 = w1.nrows();
    let scaled = Mat::from_fn(q.len(), n1, |y, j| {
        if q[y] > 0.0 {
            e[y * n1 + j] / q[y].sqrt()
        } else {
            0.0
        }
    });
    let g = dense::mul_tn(scaled.as_ref(), scaled.as_ref())?;
    if g.col_iter().any(|c| c.iter().any(|v| !v.is_finite())) {
        return Err(Error::invalid(
            "state Fisher: non-finite entries (a saturated output probability)",
        ));
    }
    let (vals, u) = dense::sym_eigen(g.as_ref())?;
    let l = Mat::from_fn(n1, n1, |i, j| vals[i].max(0.0).sqrt() * u[(j, i)]);
    dense::mul(l.as_ref(), w1)
}

/// Blocks are made of whole chunks of [`CHUNK`] samples (chunk c belongs to block c mod blocks),
/// so at most `⌈samples / CHUNK⌉` blocks can be filled: more would silently be fewer. An error
/// naming `what` unless `samples ≥ 2` and `1 ≤ blocks ≤ ⌈samples / CHUNK⌉`.
pub fn check_blocks(what: &str, samples: usize, blocks: usize) -> Result<()> {
    let chunks = samples.div_ceil(CHUNK);
    if samples < 2 || blocks == 0 || blocks > chunks {
        return Err(Error::invalid(format!(
            "{what}: {blocks} jackknife blocks for {samples} samples (blocks are whole chunks of \
             {CHUNK} samples: between 1 and {chunks} here, and S ≥ 2)"
        )));
    }
    Ok(())
}

/// The Fisher information of `q_N(·|x)` w.r.t. x by the output states (module doc), from
/// `samples` ancestral samples in `blocks` jackknife blocks, seeded from (model, `seed`, x) as the
/// served output is. Deterministic, and independent of the thread count.
pub fn state_fisher(
    model: &DeepRbm,
    x: &[f32],
    samples: usize,
    blocks: usize,
    seed: u64,
) -> Result<StateFisher> {
    let n = model.depth();
    let n_out = model.n_outputs();
    if n_out > MAX_OUTPUT_UNITS {
        return Err(Error::invalid(format!(
            "state Fisher: {n_out} output units exceed {MAX_OUTPUT_UNITS}"
        )));
    }
    if x.len() != model.n_inputs() {
        return Err(Error::shape(format!(
            "input has {} values, the model {} inputs",
            x.len(),
            model.n_inputs()
        )));
    }
    let r1 = model.rbm(1);
    let (n0, n1) = (r1.n_down, r1.n_up);
    let w1 = Mat::from_fn(n1, n0, |j, c| r1.w[j * n0 + c] as f64);
    let states = 1usize << n_out;
    let mu1 = r1.up_probs(x, 1);
    if n == 1 {
        let mut q = vec![0.0f64; states];
        product_bernoulli(&mu1.iter().map(|&v| v as f64).collect::<Vec<_>>(), &mut q);
        let mut e = vec![0.0f64; states * n1];
        for y in 0..states {
            for j in 0..n1 {
                let yj = ((y >> j) & 1) as f64;
                e[y * n1 + j] = q[y] * (yj - mu1[j] as f64);
            }
        }
        let b = fisher_factor(&q, &e, w1.as_ref())?;
        let (top, v) = dense::top_eigen_of_gram(b.as_ref())?;
        return Ok(StateFisher {
            factor: b,
            top,
            top_vector: v,
            top_std_err: None,
            top_bias_corrected: None,
            samples: 0,
        });
    }
    check_blocks("state Fisher", samples, blocks)?;
    let input_seed = Predictor::new(model, OutputMode::Served { samples, seed }).input_seed(x);
    // Chunks of CHUNK samples run in parallel on their own streams; chunk c belongs to block
    // c mod blocks, and the sums are added in chunk order (thread-count independent).
    let chunks = samples.div_ceil(CHUNK);
    let per_chunk: Vec<(usize, BlockSums)> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let b = CHUNK.min(samples - c * CHUNK);
            let mut rng = LaneRng::seed_from_u64(mix_seed(input_seed, c as u64));
            let (h1, py) = ancestral_chunk(model, &mu1, b, &mut rng);
            // T (b × 2^{n_N}): t_N(y|h^{(s)}); C (b × n_1): h_1^{(s)} − μ_1; the sums are Tᵀ1, TᵀC.
            let mut t = Mat::<f64>::zeros(b, states);
            let mut row = vec![0.0f64; states];
            let mut p = vec![0.0f64; n_out];
            for s in 0..b {
                for (pi, &v) in p.iter_mut().zip(&py[s * n_out..(s + 1) * n_out]) {
                    *pi = v as f64;
                }
                product_bernoulli(&p, &mut row);
                for (y, &v) in row.iter().enumerate() {
                    t[(s, y)] = v;
                }
            }
            let centred = Mat::from_fn(b, n1, |s, j| h1[s * n1 + j] as f64 - mu1[j] as f64);
            let e = dense::mul_tn(t.as_ref(), centred.as_ref())?;
            let sums = BlockSums {
                q: (0..states).map(|y| t.col(y).iter().sum()).collect(),
                e: dense::to_row_major(e.as_ref()),
                n: b,
            };
            Ok((c % blocks, sums))
        })
        .collect::<Result<_>>()?;
    let mut by_block: Vec<BlockSums> = (0..blocks)
        .map(|_| BlockSums {
            q: vec![0.0; states],
            e: vec![0.0; states * n1],
            n: 0,
        })
        .collect();
    for (bi, s) in per_chunk {
        let acc = &mut by_block[bi];
        acc.n += s.n;
        acc.q.iter_mut().zip(&s.q).for_each(|(a, b)| *a += b);
        acc.e.iter_mut().zip(&s.e).for_each(|(a, b)| *a += b);
    }
    let estimate = |skip: Option<usize>| -> Result<Mat<f64>> {
        let mut q = vec![0.0; states];
        let mut e = vec![0.0; states * n1];
        let mut m = 0usize;
        for (i, bs) in by_block.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            m += bs.n;
            q.iter_mut().zip(&bs.q).for_each(|(a, b)| *a += b);
            e.iter_mut().zip(&bs.e).for_each(|(a, b)| *a += b);
        }
        let m = m as f64;
        q.iter_mut().for_each(|v| *v /= m);
        e.iter_mut().for_each(|v| *v /= m);
        fisher_factor(&q, &e, w1.as_ref())
    };
    let b = estimate(None)?;
    let (top, v) = dense::top_eigen_of_gram(b.as_ref())?;
    // check_blocks guarantees every block at least one chunk.
    let (se, bc) = if blocks >= 2 {
        let jk = jackknife(blocks, |skip| match skip {
            None => Ok(vec![top]),
            Some(_) => Ok(vec![dense::top_eigen_of_gram(estimate(skip)?.as_ref())?.0]),
        })?;
        (Some(jk.std_err[0]), Some(jk.bias_corrected[0]))
    } else {
        (None, None)
    };
    Ok(StateFisher {
        factor: b,
        top,
        top_vector: v,
        top_std_err: se,
        top_bias_corrected: bc,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rg::fisher::top_eigen;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn stack(widths: &[usize], seed: u64) -> DeepRbm {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        DeepRbm::random(widths, 1.0, &mut rng).unwrap()
    }

    #[test]
    fn product_bernoulli_is_the_exact_distribution() {
        let p = [0.1, 0.7, 0.35, 0.9];
        let mut out = vec![0.0; 16];
        product_bernoulli(&p, &mut out);
        let exact = crate::exact::product_bernoulli(&p);
        for (a, b) in out.iter().zip(&exact) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }

    #[test]
    fn depth_one_is_exact() {
        let m = stack(&[6, 3], 1);
        let x = [1.0, 0.0, 1.0, 1.0, 0.0, 0.3];
        let s = state_fisher(&m, &x, 100, 4, 0).unwrap();
        let e = crate::exact::fisher_input(&m, &x).unwrap();
        for (a, b) in s.value().unwrap().iter().zip(&e) {
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn deep_estimate_converges_to_the_exact_fisher_and_the_jackknife_corrects_its_bias() {
        let m = stack(&[6, 4, 3, 3], 2);
        let x = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        let e = crate::exact::fisher_input(&m, &x).unwrap();
        let e_mat = Mat::from_fn(6, 6, |i, j| e[i * 6 + j]);
        let exact_top = top_eigen(e_mat.as_ref()).unwrap().0;
        let s = state_fisher(&m, &x, 200_000, 8, 3).unwrap();
        let se = s.top_std_err.unwrap();
        let bc = s.top_bias_corrected.unwrap();
        assert!(
            (bc - exact_top).abs() <= 4.0 * se + 1e-6,
            "bias-corrected {bc} ± {se} vs exact {exact_top} (raw {})",
            s.top
        );
        for (a, b) in s.value().unwrap().iter().zip(&e) {
            assert!((a - b).abs() < 0.05 * exact_top + 1e-6, "{a} vs {b}");
        }
        // Deterministic and seeded.
        let again = state_fisher(&m, &x, 200_000, 8, 3).unwrap();
        assert_eq!(again.value().unwrap(), s.value().unwrap());
        assert_ne!(
            state_fisher(&m, &x, 200_000, 8, 4)
                .unwrap()
                .value()
                .unwrap(),
            s.value().unwrap()
        );
    }

    #[test]
    fn refuses_wide_outputs_and_bad_inputs() {
        let m = stack(&[3, 2, 13], 1);
        assert!(state_fisher(&m, &[0.0; 3], 10, 1, 0).is_err());
        let m = stack(&[3, 2, 2], 1);
        assert!(state_fisher(&m, &[0.0; 4], 10, 1, 0).is_err());
        assert!(state_fisher(&m, &[0.0; 3], 10, 11, 0).is_err());
        // 600 samples make 3 chunks of 256: 4 blocks would leave one empty.
        let err = state_fisher(&m, &[0.0; 3], 600, 4, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 1 and 3"), "{err}");
        assert!(state_fisher(&m, &[0.0; 3], 600, 3, 0).is_ok());
    }
}
