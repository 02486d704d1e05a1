//! The Renormalisation-Group reading of a deep RBM (SPEC §4–7, RG-NOTES §1, §3, §4).
//!
//! For a fixed input x the classification network is a Markov chain `x → h_1 → … → h_N`; each
//! layer's distribution `q_k(·|x) = exp(−Σ_α g_α^{(k)} O_α)/Z` defines couplings `g^{(k)}` on an
//! operator basis ([`operators`], chosen per layer by [`basis`]). Perturbing the couplings of layer k−1 moves those of layer k by
//! the stability matrix `T^{(k)} = C_{k,k}^{-1} C_{k,k−1}` ([`stability`]), estimated from connected
//! correlators of exact ancestral samples ([`correlators`]). Chaining them gives the Fisher
//! information of the output with respect to the input, and, on the generation network, with
//! respect to the served output — the poison direction ([`fisher`]). The couplings themselves are
//! fitted by pseudo-likelihood for plotting their flow ([`couplings`]).
//!
//! Everything is f64; samples are the f32 {0,1} states of [`crate::sample`]. Decompositions run with
//! `faer::Par::Seq`, and the samplers are seeded from (model, seed, input), so every result is
//! bit-identical from run to run. The tests check every estimator against `crate::exact`, which
//! enumerates tiny stacks (exact correlators and Fisher matrices); nothing here depends on it.

pub mod basis;
pub mod correlators;
pub mod couplings;
pub mod fisher;
pub mod operators;
pub mod stability;
pub mod state_fisher;

pub use basis::{BasisChoice, BasisPlan};
pub use correlators::{Estimator, FlowCorrelators, FlowMoments, Jackknife};
pub use fisher::{InputFisherReport, MeanFieldReading, OutputFisherReport, PoisonDirection};
pub use operators::{BasisKind, OperatorBasis};
pub use stability::{FlowParams, Regularisation, Spectra, Stability, StabilityStep};

use crate::error::{Error, Result};

/// How a real-valued output y enters the generation network (SPEC §7, RG-NOTES §5 A2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OutputReading {
    /// (P) plug-in: `q̃_{N−1}(h|y) = t_N(h|y) = Π_j Bern(σ(W_Nᵀ y + b_N)_j)` — paper eq. 23
    /// literally; `∂g̃^{(N−1)}/∂y = −W_Nᵀ` on order-1 operators. The paper's default.
    PlugIn,
    /// (C) categorical mixture: `q̃_{N−1}(h|y) = Σ_c y_c t_N(h|e_c)` — what a clone trained by eq. 14
    /// on soft labels sees. y must be a probability vector.
    Mixture,
}

/// Label smoothing η of the reading-(C) class anchor ([`OutputReading::class_anchor`]).
///
/// **decision:** η = 0.1. At a one-hot `y = e_c` the Fisher information of reading (C) is not
/// bounded by anything the estimators can resolve: along `e_d − e_c` it is the χ² divergence of
/// the class-conditional distributions, astronomically large for wide layers, and the sampled
/// estimates only measure how ill-conditioned `C̃_{N−1,N−1}` is under class c alone (chain and
/// direct estimates disagreed, 23.4 against 61.3, and the value depended on the basis, 3.4 to
/// 5594). At `(1 − η) e_c + η/K` the class label that (C) mixes over carries Fisher information
/// `diag(1/y)` on sum-zero directions, so by data processing every layer's exact
/// `P F̃ P ⪯ P diag(1/y) P` ([`mixture_bound`]),
/// whose top eigenvalue is about K/η (100 for ten classes). η = 0.1 is the usual label-smoothing
/// value (what a clone trained on smoothed labels sees), and it gives each other class 1% of the
/// samples at K = 10.
pub const MIXTURE_SMOOTHING: f32 = 0.1;

impl OutputReading {
    /// The output at which the output Fisher information of class c (of `n` classes) is evaluated
    /// and poison directions are cached (SPEC §7–8): (P) the one-hot `e_c`; (C) the smoothed
    /// one-hot `(1 − η) e_c + η/n` with η = [`MIXTURE_SMOOTHING`] (see there for why).
    pub fn class_anchor(self, c: usize, n: usize) -> Vec<f32> {
        let eta = match self {
            OutputReading::PlugIn => 0.0,
            OutputReading::Mixture => MIXTURE_SMOOTHING,
        };
        let mut y = vec![eta / n as f32; n];
        y[c] += 1.0 - eta;
        y
    }

    /// A description of [`OutputReading::class_anchor`], as poison caches record it.
    pub fn anchor_label(self) -> String {
        match self {
            OutputReading::PlugIn => "one-hot e_c".to_string(),
            OutputReading::Mixture => {
                format!("smoothed one-hot (1 - eta) e_c + eta/K, eta = {MIXTURE_SMOOTHING}")
            }
        }
    }
}

/// The data-processing bound of reading (C) at a probability vector y: `P diag(1/y) P`
/// (`P = I − 11ᵀ/n`), the Fisher information of the class label itself on sum-zero directions.
/// The projected output Fisher information `P F̃_y P` of every layer is ⪯ this
/// ([`MIXTURE_SMOOTHING`]). An error when a weight of y is 0 (the bound is infinite there).
pub fn mixture_bound(y: &[f32]) -> Result<faer::Mat<f64>> {
    let w = mixture_weights(y)?;
    if let Some(i) = w.iter().position(|&v| v <= 0.0) {
        return Err(Error::invalid(format!(
            "the reading-(C) bound P diag(1/y) P is infinite: y[{i}] = 0"
        )));
    }
    let d = faer::Mat::from_fn(
        w.len(),
        w.len(),
        |i, j| if i == j { 1.0 / w[i] } else { 0.0 },
    );
    fisher::project_sum_zero(d.as_ref())
}

/// The mixture weights of reading (C): y must be finite, non-negative and sum to 1 within 1e-4
/// (f32 soft labels); it is returned renormalised to sum exactly to 1 in f64.
pub fn mixture_weights(y: &[f32]) -> Result<Vec<f64>> {
    if let Some(i) = y.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::invalid(format!(
            "reading (C) needs a probability vector; y[{i}] = {}",
            y[i]
        )));
    }
    let s: f64 = y.iter().map(|&v| v as f64).sum();
    if (s - 1.0).abs() > 1e-4 {
        return Err(Error::invalid(format!(
            "reading (C) needs a probability vector; y sums to {s}"
        )));
    }
    Ok(y.iter().map(|&v| v as f64 / s).collect())
}
