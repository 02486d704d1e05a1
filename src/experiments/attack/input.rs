//! The attack of one input: its Fisher directions and their signs, every method at every budget,
//! judged by the served class.

use serde::Serialize;

use super::{AttackParams, Method};
use crate::error::{Error, Result};
use crate::linalg::{dot, norm2};
use crate::params::Params;
use crate::params::Valid;
use crate::perturb::{
    binary_flip, fgsm_delta, fisher_sign, gaussian_vector, mean_field_margin, pgd,
    random_unit_direction, step_to_norm, FgsmKind,
};
use crate::rg::basis::classification_bases;
use crate::rg::fisher::{input_fisher, top_eigen};
use crate::rg::{FlowParams, InputFisherReport, OperatorBasis};
use crate::sample::{argmax, OutputMode, Predictor};
use crate::util::mix_seed;
use crate::DeepRbm;

/// One perturbed input and its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The attack method.
    pub method: Method,
    /// ε (continuous methods) or k (binary methods).
    pub budget: f64,
    /// Actual `‖x' − x‖₂`.
    pub norm: f64,
    /// Served class of x'.
    pub served_class: usize,
    /// Served class differs from that of x.
    pub success: bool,
    /// Mean-field margin of the true class at x'.
    pub mean_field_margin: f64,
}

/// Per-layer RG diagnostics of one input (from the same Fisher run), for the vulnerability summary.
#[derive(Clone, Debug, Serialize)]
pub struct LayerDiagnostics {
    /// The paper's index k of `T^{(k)}`.
    pub k: usize,
    /// Count of `|λ(T)| > 1` — depends on the labelling of hidden units (RG-NOTES §4 item 6).
    pub n_relevant: Option<usize>,
    /// Largest `|λ(T)|` (labelling-dependent too).
    pub spectral_radius: Option<f64>,
    /// Largest canonical correlation between layers k−1 and k (≤ 1, basis-invariant).
    pub top_canonical_correlation: Option<f64>,
    /// `cond(C_kk)` before regularisation.
    pub cond: f64,
}

/// The attack of one input.
#[derive(Clone, Debug, Serialize)]
pub struct InputAttack {
    /// Index in the test split.
    pub index: usize,
    /// True label.
    pub label: u32,
    /// Served class of the clean input.
    pub served_class: usize,
    /// Served class equals the label: only these inputs are attacked.
    pub correct: bool,
    /// Mean-field margin of the true class at x.
    pub mean_field_margin: f64,
    /// Top eigenvalue of the direct (stochastic) input-Fisher estimate.
    pub fisher_top_direct: f64,
    /// Top eigenvalue of the mean-field reading's Fisher matrix.
    pub fisher_top_mean_field: f64,
    /// Top eigenvalue of the first-layer bound `W_1ᵀ diag(μ_1(1−μ_1)) W_1`.
    pub fisher_top_bound: f64,
    /// The sign s applied to the direct and mean-field Fisher directions.
    pub fisher_sign: f64,
    /// The sign applied to the mean-field Fisher direction.
    pub fisher_mf_sign: f64,
    /// `|⟨v_direct, v_mean-field⟩|`.
    pub fisher_overlap: f64,
    /// `|cos(v_direct, ∇m)|`: how far the Fisher direction is from the margin gradient.
    pub fisher_gradient_cosine: f64,
    /// Per stability matrix `T^{(k)}`.
    pub layers: Vec<LayerDiagnostics>,
    /// Empty when the input is misclassified.
    pub outcomes: Vec<Outcome>,
    /// Perturbed images at the reference ε (for the example plot; not written to JSON).
    #[serde(skip)]
    pub examples: Vec<(Method, f64, Vec<f32>, usize)>,
    /// The clean input (for the example plot; not written to JSON).
    #[serde(skip)]
    pub clean: Vec<f32>,
}

/// What [`attack_input`] needs besides the input: the frozen bases and the predictor.
pub struct AttackContext<'m> {
    /// The attacked model.
    pub model: &'m DeepRbm,
    /// The frozen classification bases (layers 1…N).
    pub bases: Vec<OperatorBasis>,
    /// The Fisher estimate's sampler settings.
    pub flow: Valid<FlowParams>,
    /// The served predictor that judges success.
    pub predictor: Predictor<'m>,
    /// The attack's settings.
    pub cfg: Valid<AttackParams>,
}

impl<'m> AttackContext<'m> {
    /// Choose the frozen bases (pilot samples from up to 32 of `pilot_inputs`, as `analyze` does)
    /// and set up the served predictor.
    pub fn new(
        model: &'m DeepRbm,
        pilot_inputs: &[&[f32]],
        cfg: &Valid<AttackParams>,
    ) -> Result<Self> {
        let bases = classification_bases(model, pilot_inputs, &cfg.basis_plan())?;
        Ok(AttackContext {
            model,
            bases,
            flow: FlowParams {
                samples: cfg.samples,
                seed: cfg.seed,
                blocks: cfg.blocks,
                ..FlowParams::default()
            }
            .check()?,
            predictor: Predictor::new(
                model,
                OutputMode::Served {
                    samples: cfg.serve_samples,
                    seed: cfg.seed,
                },
            ),
            cfg: cfg.clone(),
        })
    }

    /// Served class of an input.
    pub fn served_class(&self, x: &[f32]) -> usize {
        argmax(&self.predictor.output(x))
    }
}

/// The two Fisher directions of x (unit, sign as returned by [`top_eigen`]) and the full report:
/// `(v_direct, v_mean_field, report)` (SPEC §6).
pub fn fisher_directions(
    model: &DeepRbm,
    x: &[f32],
    bases: &[OperatorBasis],
    flow: &Valid<FlowParams>,
) -> Result<(Vec<f64>, Vec<f64>, InputFisherReport)> {
    let r = input_fisher(model, x, bases, flow)?;
    let (_, vmf) = top_eigen(r.mean_field.fisher.as_ref())?;
    Ok((r.direct.top_vector.clone(), vmf, r))
}

/// Judge the points `x'(ε) = step_to_norm(x, d, ε)` of one direction with the served predictor.
pub fn outcomes_along(
    ctx: &AttackContext<'_>,
    x: &[f32],
    label: usize,
    clean_class: usize,
    method: Method,
    d: &[f64],
    epsilons: &[f64],
) -> Result<Vec<Outcome>> {
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    epsilons
        .iter()
        .map(|&eps| {
            let (xp, _) = step_to_norm(&x64, d, eps);
            judge(ctx, x, label, clean_class, method, eps, &xp)
        })
        .collect()
}

/// Judge one perturbed point x' (any values; clipped to `[0,1]` and rounded to f32 as served) of
/// the clean input x: served class, success, actual norm, mean-field margin of `label`.
pub fn judge(
    ctx: &AttackContext<'_>,
    x: &[f32],
    label: usize,
    clean_class: usize,
    method: Method,
    budget: f64,
    xp: &[f64],
) -> Result<Outcome> {
    let xf: Vec<f32> = xp.iter().map(|&v| (v as f32).clamp(0.0, 1.0)).collect();
    let norm = xf
        .iter()
        .zip(x)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let served = ctx.served_class(&xf);
    let xf64: Vec<f64> = xf.iter().map(|&v| v as f64).collect();
    let (m, _) = mean_field_margin(ctx.model, &xf64, label)?;
    Ok(Outcome {
        method,
        budget,
        norm,
        served_class: served,
        success: served != clean_class,
        mean_field_margin: m,
    })
}

/// Attack one test input (see the module doc). Deterministic given (model, cfg, index, x).
pub fn attack_input(
    ctx: &AttackContext<'_>,
    index: usize,
    x: &[f32],
    label: u32,
) -> Result<InputAttack> {
    let model = ctx.model;
    let cfg = &ctx.cfg;
    let c = label as usize;
    if c >= model.n_outputs() {
        return Err(Error::invalid(format!(
            "input {index}: label {c} but the model has {} outputs",
            model.n_outputs()
        )));
    }
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (m0, grad) = mean_field_margin(model, &x64, c)?;
    let (v, vmf, rep) = fisher_directions(model, x, &ctx.bases, &ctx.flow)?;
    let s = fisher_sign(&x64, &v, &grad);
    let smf = fisher_sign(&x64, &vmf, &grad);
    let layers = rep
        .steps
        .iter()
        .map(|st| LayerDiagnostics {
            k: st.k,
            n_relevant: st.spectra.n_relevant,
            spectral_radius: st.spectra.spectral_radius,
            top_canonical_correlation: st
                .spectra
                .canonical_correlations
                .as_ref()
                .and_then(|v| v.first().copied()),
            cond: st.stability.cond,
        })
        .collect();
    let served_class = ctx.served_class(x);
    let correct = served_class == c;
    let mut out = InputAttack {
        index,
        label,
        served_class,
        correct,
        mean_field_margin: m0,
        fisher_top_direct: rep.direct.top,
        fisher_top_mean_field: top_eigen(rep.mean_field.fisher.as_ref())?.0,
        fisher_top_bound: rep.top_bound,
        fisher_sign: s,
        fisher_mf_sign: smf,
        fisher_overlap: dot(&v, &vmf).abs(),
        fisher_gradient_cosine: {
            let gn = norm2(&grad);
            if gn > 0.0 {
                dot(&v, &grad).abs() / gn
            } else {
                f64::NAN
            }
        },
        layers,
        outcomes: Vec::new(),
        examples: Vec::new(),
        clean: x.to_vec(),
    };
    if !correct {
        return Ok(out);
    }
    let n = x.len();
    let seed = mix_seed(cfg.seed, 0xa77a_c000 ^ index as u64);
    let sv: Vec<f64> = v.iter().map(|a| s * a).collect();
    let smv: Vec<f64> = vmf.iter().map(|a| smf * a).collect();
    let rnd = random_unit_direction(n, seed);
    let gl2 = fgsm_delta(&grad, 1.0, FgsmKind::L2);
    let gsign = fgsm_delta(&grad, 1.0, FgsmKind::Sign);
    for (method, d) in [
        (Method::Fisher, &sv),
        (Method::FisherMf, &smv),
        (Method::Random, &rnd),
        (Method::GradientL2, &gl2),
        (Method::FgsmSign, &gsign),
    ] {
        out.outcomes.extend(outcomes_along(
            ctx,
            x,
            c,
            served_class,
            method,
            d,
            &cfg.epsilons,
        )?);
    }
    for &eps in &cfg.epsilons {
        let xp = pgd(model, &x64, c, eps, cfg.pgd_steps)?;
        out.outcomes
            .push(judge(ctx, x, c, served_class, Method::Pgd, eps, &xp)?);
    }
    let neg_grad: Vec<f64> = grad.iter().map(|g| -g).collect();
    let rnd_score = gaussian_vector(n, mix_seed(seed, 1));
    for (method, score) in [
        (Method::BinaryFisher, &sv),
        (Method::BinaryGradient, &neg_grad),
        (Method::BinaryRandom, &rnd_score),
    ] {
        for &k in &cfg.pixels {
            let (xb, _) = binary_flip(x, score, k);
            let xb64: Vec<f64> = xb.iter().map(|&v| v as f64).collect();
            out.outcomes
                .push(judge(ctx, x, c, served_class, method, k as f64, &xb64)?);
        }
    }
    // Example images: the reference ε (or the closest given) and the middle pixel budget.
    let eref = cfg
        .epsilons
        .iter()
        .copied()
        .min_by(|a, b| {
            (a - cfg.reference_epsilon)
                .abs()
                .total_cmp(&(b - cfg.reference_epsilon).abs())
        })
        .unwrap_or(cfg.reference_epsilon);
    let kref = cfg.pixels.get(cfg.pixels.len() / 2).copied().unwrap_or(4);
    for (method, d) in [(Method::Fisher, &sv), (Method::GradientL2, &gl2)] {
        let (xp, _) = step_to_norm(&x64, d, eref);
        let xf: Vec<f32> = xp.iter().map(|&v| v as f32).collect();
        let cls = ctx.served_class(&xf);
        out.examples.push((method, eref, xf, cls));
    }
    let xp: Vec<f32> = pgd(model, &x64, c, eref, cfg.pgd_steps)?
        .iter()
        .map(|&v| v as f32)
        .collect();
    let cls = ctx.served_class(&xp);
    out.examples.push((Method::Pgd, eref, xp, cls));
    let (xb, _) = binary_flip(x, &sv, kref);
    let cls = ctx.served_class(&xb);
    out.examples
        .push((Method::BinaryFisher, kref as f64, xb, cls));
    Ok(out)
}
