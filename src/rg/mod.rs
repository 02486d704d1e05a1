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
