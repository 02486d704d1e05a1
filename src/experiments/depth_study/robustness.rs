//! The depth study's primary measurement (SPEC §10, issue 14 item 3): the **minimal adversarial
//! L2 norm** of each input, against depth.
//!
//! For one model and one input x of label c (served correctly), three attacks are bisected
//! ([`minimal_budget`]) on the actual L2 norm ε ∈ (0, `max`]:
//! * **Fisher direction**: `x'(ε) = step_to_norm(x, s v, ε)` with v the top eigenvector of the
//!   input Fisher information of the output layer ([`state_fisher`]: S ancestral samples,
//!   jackknife blocks) and s its margin sign (the `attack` command's rule, [`fisher_sign`]);
//! * **random direction**: the same with a seeded Gaussian direction (a control);
//! * **PGD**: L2 projected gradient descent on the mean-field margin at budget ε ([`pgd`]).
//!
//! Success is judged by the served output (S = `judge_samples`, seeded): its argmax differs from
//! c. The same predictor selected the inputs (every model serves them correctly), so every
//! attacked input starts on the right side. Beside the norms each input records its served margin
//! `ŷ_c − max_{j≠c} ŷ_j` (for matched-confidence bins), success at a fixed ε, the top input-Fisher
//! eigenvalue raw and jackknife bias-corrected, the first-layer bound, and the mean-field
//! reading's top Fisher eigenvalue and top Jacobian singular value `σ_max(∂μ_N/∂x)`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::linalg::dense::top_eigen_of_gram;
use crate::linalg::norm2;
use crate::perturb::{
    mean_field_margin, minimal_budget, pgd, random_unit_direction, signed_direction, step_to_norm,
    Bisection, MinimalBudget,
};
use crate::rg::fisher::{first_layer_bound_factor, mean_field_reading};
use crate::rg::state_fisher::state_fisher;
use crate::sample::{argmax, Predictor};
use crate::util::mix_seed;
use crate::DeepRbm;

/// What one input measured (module doc).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputRobustness {
    /// Test-split index.
    pub index: usize,
    /// True label.
    pub label: u32,
    /// Served margin `ŷ_c − max_{j≠c} ŷ_j` of the clean input (judging S).
    pub served_margin: f64,
    /// Mean-field margin of the clean input.
    pub mean_field_margin: f64,
    /// Top eigenvalue of the input-Fisher estimate ([`state_fisher`]).
    pub fisher_top: f64,
    /// Its jackknife standard error (`None` with one block).
    pub fisher_top_std_err: Option<f64>,
    /// Its jackknife bias-corrected value (`None` with one block).
    pub fisher_top_bias_corrected: Option<f64>,
    /// Top eigenvalue of the first-layer bound `W_1ᵀ diag(μ_1(1−μ_1)) W_1`.
    pub fisher_bound: f64,
    /// Top eigenvalue of the mean-field reading's Fisher matrix.
    pub mean_field_fisher_top: f64,
    /// Largest singular value of the mean-field Jacobian `∂μ_N/∂x`.
    pub mean_field_jacobian_top: f64,
    /// Minimal norm along the signed Fisher direction (`None`: no success up to `max`).
    pub fisher: Option<MinimalBudget>,
    /// Minimal norm along a seeded random direction.
    pub random: Option<MinimalBudget>,
    /// Minimal norm of PGD.
    pub pgd: Option<MinimalBudget>,
    /// Success of the Fisher direction at the fixed ε.
    pub fisher_success_at_epsilon: bool,
    /// Success of PGD at the fixed ε.
    pub pgd_success_at_epsilon: bool,
}

impl InputRobustness {
    /// The minimal norm of one attack, +∞ when censored (for medians that count censored inputs
    /// as larger than every found norm).
    pub fn norm_or_inf(m: &Option<MinimalBudget>) -> f64 {
        m.map_or(f64::INFINITY, |b| b.norm)
    }
}

/// What [`input_robustness`] needs besides the input.
pub struct RobustnessContext<'m> {
    /// The attacked model.
    pub model: &'m DeepRbm,
    /// The served output that judges success.
    pub judge: Predictor<'m>,
    /// Samples S of the Fisher estimate.
    pub samples: usize,
    /// Jackknife blocks of the Fisher estimate.
    pub blocks: usize,
    /// Seed of the Fisher sampler and the random directions.
    pub seed: u64,
    /// PGD steps K.
    pub pgd_steps: usize,
    /// The bisection.
    pub bisection: Bisection,
    /// The fixed ε of the success columns.
    pub epsilon: f64,
}

impl RobustnessContext<'_> {
    fn served_class(&self, x: &[f32]) -> usize {
        argmax(&self.judge.output(x))
    }
}

/// Attack one input (module doc). Deterministic given the context, `index` and x; an error when
/// the judging output does not serve x as `label`.
pub fn input_robustness(
    ctx: &RobustnessContext<'_>,
    index: usize,
    x: &[f32],
    label: u32,
) -> Result<InputRobustness> {
    let (model, bisection, epsilon) = (ctx.model, ctx.bisection, ctx.epsilon);
    let c = label as usize;
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let y = ctx.judge.output(x);
    if argmax(&y) != c {
        return Err(Error::invalid(format!(
            "depth study: input {index} (label {c}) is not served correctly at the judging S"
        )));
    }
    let served_margin = y[c] as f64
        - y.iter()
            .enumerate()
            .filter(|&(j, _)| j != c)
            .map(|(_, &v)| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
    let (m0, grad) = mean_field_margin(model, &x64, c)?;
    let fisher = state_fisher(model, x, ctx.samples, ctx.blocks, ctx.seed)?;
    let mean_field = mean_field_reading(model, x)?;
    let fisher_dir = signed_direction(&x64, &fisher.top_vector, &grad);
    let random_dir = random_unit_direction(x.len(), mix_seed(ctx.seed, 0xde97_0000 ^ index as u64));
    // The served class of a perturbed point, as `attack::judge` serves it: clipped, rounded to f32.
    let fooled = |xp: &[f64]| -> bool {
        let xf: Vec<f32> = xp.iter().map(|&v| (v as f32).clamp(0.0, 1.0)).collect();
        ctx.served_class(&xf) != c
    };
    let along = |d: &[f64], eps: f64| -> Option<f64> {
        let (xp, n) = step_to_norm(&x64, d, eps);
        fooled(&xp).then_some(n)
    };
    let by_pgd = |eps: f64| -> Result<Option<f64>> {
        let xp = pgd(model, &x64, c, eps, ctx.pgd_steps)?;
        let n = norm2(&xp.iter().zip(&x64).map(|(a, b)| a - b).collect::<Vec<_>>());
        Ok(fooled(&xp).then_some(n))
    };
    // Top eigenvalues of the n_0 × n_0 matrices BᵀB from their small factors B.
    let jtj_top = top_eigen_of_gram(mean_field.jacobian.as_ref())?.0;
    Ok(InputRobustness {
        index,
        label,
        served_margin,
        mean_field_margin: m0,
        fisher_top: fisher.top,
        fisher_top_std_err: fisher.top_std_err,
        fisher_top_bias_corrected: fisher.top_bias_corrected,
        fisher_bound: top_eigen_of_gram(first_layer_bound_factor(model, x)?.as_ref())?.0,
        mean_field_fisher_top: top_eigen_of_gram(mean_field.fisher_factor.as_ref())?.0,
        mean_field_jacobian_top: jtj_top.max(0.0).sqrt(),
        fisher: minimal_budget(bisection, |e| Ok(along(&fisher_dir, e)))?,
        random: minimal_budget(bisection, |e| Ok(along(&random_dir, e)))?,
        pgd: minimal_budget(bisection, by_pgd)?,
        fisher_success_at_epsilon: along(&fisher_dir, epsilon).is_some(),
        pgd_success_at_epsilon: by_pgd(epsilon)?.is_some(),
    })
}
