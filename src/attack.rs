//! `rgshield attack`: adversarial perturbations along the directions of greatest input-Fisher
//! sensitivity, against gradient baselines, judged by the served output (SPEC §6, RG-NOTES §1.7).
//!
//! For each test input x with true label c, [`attack_input`] computes
//! * the **Fisher direction** v — the top eigenvector of the direct input-Fisher estimate of
//!   [`input_fisher`] (SPEC §6 decision: the direct estimator is the default for attacks), and the
//!   top eigenvector of the mean-field reading's Fisher matrix (method `fisher-mf`);
//! * the sign s of v: F fixes v only up to sign (RG-NOTES §1.7 item 5). s is the sign whose
//!   *feasible part* (see below) lowers the mean-field margin `m(x) = μ_{N,c} − max_{j≠c} μ_{N,j}`
//!   to first order: `s = argmin_{±} ∇m · P_x(±v)/‖P_x(±v)‖`. For an interior x this is the rule
//!   `s v·∇m < 0`; for binary x, where half of every direction points out of `[0,1]^n`, it judges
//!   the part of the direction that can actually be applied;
//! * baselines on the mean-field network (analytic gradient through the sigmoid layers): a seeded
//!   random direction, `gradient-l2` (`δ ∝ −∇m`), `fgsm-sign` (`δ ∝ −sign ∇m`, at equal L2 norm) and
//!   `pgd` (L2 projected gradient descent on m, K steps of size 2.5ε/K, projected exactly onto the
//!   intersection of the ε-ball and `[0,1]^n`);
//! * binary attacks that keep the image in {0,1}: flip the k feasible pixels of largest score
//!   (`binary-fisher`: score s·v; `binary-gradient`: −∇m; `binary-random`: a seeded Gaussian).
//!
//! **Clipping (decision).** Inputs are binary, so a raw step `x + ε d` leaves `[0,1]^n` on about half
//! of its components. Every directional method (all but PGD and the binary ones) is applied the same
//! way: `x'(t) = clip(x + t d, 0, 1)` with t chosen so that the *actual* norm `‖x'(t) − x‖₂ = ε`
//! ([`step_to_norm`]); components that point out of the box contribute nothing and the feasible
//! ones carry the whole budget. When even `t → ∞` cannot reach ε (every feasible component
//! saturated) the saturated point is used and its smaller norm reported. PGD is projected on the
//! same set (ε-ball ∩ box), so all continuous methods are compared at equal actual L2 norm; the
//! binary attacks have norm √k and their own sweep.
//!
//! **Success** (SPEC §1 served output): the argmax of the served output `E[h_N|x']` (stochastic,
//! S samples, seeded from model, input and seed) differs from that of x. Only inputs whose served
//! class at ε = 0 equals the label are attacked; the report says how many were.
//!
//! Inputs are processed in parallel; each input's random streams are seeded from (seed, index), so
//! the report does not depend on the thread count.

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::analyze::{classification_bases, AnalyzeConfig, BasisChoice};
use crate::data::Dataset;
use crate::error::{check_at_least, check_positive, Error, Result};
use crate::rg::fisher::{input_fisher, top_eigen};
use crate::rg::{FlowConfig, InputFisherReport, OperatorBasis};
use crate::sample::{argmax, OutputMode, Predictor};
use crate::util::mix_seed;
use crate::DeepRbm;

/// An attack method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Top eigenvector of the direct (stochastic) input-Fisher estimate, signed by the margin.
    Fisher,
    /// Top eigenvector of the mean-field reading's Fisher matrix, signed by the margin.
    FisherMf,
    /// A seeded random unit direction (baseline).
    Random,
    /// `−∇m/‖∇m‖` of the mean-field margin (FGSM, L2 form).
    GradientL2,
    /// `−sign(∇m)`, at equal L2 norm (classic FGSM direction).
    FgsmSign,
    /// L2 projected gradient descent on the mean-field margin.
    Pgd,
    /// Flip the k feasible pixels of largest `s·v_i` (Fisher direction).
    BinaryFisher,
    /// Flip the k feasible pixels of largest `−∂m/∂x_i`.
    BinaryGradient,
    /// Flip k feasible pixels chosen at random.
    BinaryRandom,
}

impl Method {
    /// The continuous methods (swept over ε).
    pub const CONTINUOUS: [Method; 6] = [
        Method::Fisher,
        Method::FisherMf,
        Method::Random,
        Method::GradientL2,
        Method::FgsmSign,
        Method::Pgd,
    ];
    /// The binary methods (swept over k flipped pixels).
    pub const BINARY: [Method; 3] = [
        Method::BinaryFisher,
        Method::BinaryGradient,
        Method::BinaryRandom,
    ];

    /// The name used in reports and plots.
    pub fn name(self) -> &'static str {
        match self {
            Method::Fisher => "fisher",
            Method::FisherMf => "fisher-mf",
            Method::Random => "random",
            Method::GradientL2 => "gradient-l2",
            Method::FgsmSign => "fgsm-sign",
            Method::Pgd => "pgd",
            Method::BinaryFisher => "binary-fisher",
            Method::BinaryGradient => "binary-gradient",
            Method::BinaryRandom => "binary-random",
        }
    }

    /// Whether the budget is a number of flipped pixels rather than an L2 norm.
    pub fn is_binary(self) -> bool {
        Method::BINARY.contains(&self)
    }
}

/// Settings of an attack run.
#[derive(Clone, Debug, Serialize)]
pub struct AttackConfig {
    /// Test-split indices to attack.
    pub inputs: Vec<usize>,
    /// L2 budgets ε of the continuous methods (actual norm after clipping, see the module doc).
    pub epsilons: Vec<f64>,
    /// Flipped-pixel budgets k of the binary methods.
    pub pixels: Vec<usize>,
    /// Ancestral samples S of the input-Fisher estimate.
    pub samples: usize,
    /// Hidden-layer operator basis (the output layer gets the complete one: the direct estimator
    /// is then exact up to sampling).
    pub basis: BasisChoice,
    /// Jackknife blocks of the Fisher estimate (1: none, the fastest).
    pub blocks: usize,
    /// Pilot samples (in total) used to choose frozen top pairs.
    pub pilot_samples: usize,
    /// Samples S of the served output that judges success.
    pub serve_samples: usize,
    /// Seed of the Fisher sampler, the served output and the random baselines.
    pub seed: u64,
    /// PGD steps K (step size 2.5ε/K).
    pub pgd_steps: usize,
    /// The ε at which the vulnerability summary quotes success rates.
    pub reference_epsilon: f64,
}

impl Default for AttackConfig {
    /// Inputs 0..200, ε ∈ {0.1, 0.2, 0.5, 1, 2, 3}, k ∈ {1, 2, 4, 8, 16}, S = 3000, order2:200,
    /// no jackknife, 4000 pilot samples, served S = 64, seed 0, K = 10, reference ε = 1.
    fn default() -> Self {
        AttackConfig {
            inputs: (0..200).collect(),
            epsilons: vec![0.1, 0.2, 0.5, 1.0, 2.0, 3.0],
            pixels: vec![1, 2, 4, 8, 16],
            samples: 3000,
            basis: BasisChoice::TopPairs(200),
            blocks: 1,
            pilot_samples: 4000,
            serve_samples: 64,
            seed: 0,
            pgd_steps: 10,
            reference_epsilon: 1.0,
        }
    }
}

impl AttackConfig {
    /// Check every value's domain.
    pub fn validate(&self) -> Result<()> {
        if self.inputs.is_empty() {
            return Err(Error::invalid("attack: no inputs selected"));
        }
        if self.epsilons.is_empty() && self.pixels.is_empty() {
            return Err(Error::invalid("attack: no ε and no pixel budget given"));
        }
        for &e in &self.epsilons {
            check_positive("attack: ε", e)?;
        }
        if self.pixels.contains(&0) {
            return Err(Error::invalid("attack: a pixel budget of 0 flips nothing"));
        }
        check_at_least("attack: --samples", self.samples, 2)?;
        check_at_least("attack: --serve-samples", self.serve_samples, 1)?;
        check_at_least("attack: --pgd-steps", self.pgd_steps, 1)?;
        check_at_least("attack: blocks", self.blocks, 1)?;
        check_positive("attack: reference ε", self.reference_epsilon)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The mean-field margin and its gradient.

/// Mean-field margin `m(x) = μ_{N,c} − max_{j≠c} μ_{N,j}` of `μ_k = σ(W_k μ_{k−1} + a_k)` and its
/// analytic gradient w.r.t. x (back-propagation through the sigmoid layers, f64; SPEC §6 reading
/// (ii)). At a tie of the runner-up the first one is used (a subgradient).
pub fn mean_field_margin(model: &DeepRbm, x: &[f64], class: usize) -> Result<(f64, Vec<f64>)> {
    if x.len() != model.n_inputs() {
        return Err(Error::shape(format!(
            "input has {} values, the model {} inputs",
            x.len(),
            model.n_inputs()
        )));
    }
    let nn = model.n_outputs();
    if class >= nn || nn < 2 {
        return Err(Error::invalid(format!(
            "margin of class {class} with {nn} outputs (need class < outputs, outputs ≥ 2)"
        )));
    }
    let mut mus: Vec<Vec<f64>> = vec![x.to_vec()];
    for k in 1..=model.depth() {
        let r = model.rbm(k);
        let below = &mus[k - 1];
        let next: Vec<f64> = (0..r.n_up)
            .map(|i| {
                let z: f64 = r.a[i] as f64
                    + (0..r.n_down)
                        .map(|c| r.w[i * r.n_down + c] as f64 * below[c])
                        .sum::<f64>();
                1.0 / (1.0 + (-z).exp())
            })
            .collect();
        mus.push(next);
    }
    let out = &mus[model.depth()];
    let mut runner = usize::MAX;
    for j in 0..nn {
        if j != class && (runner == usize::MAX || out[j] > out[runner]) {
            runner = j;
        }
    }
    let m = out[class] - out[runner];
    let mut g = vec![0.0f64; nn];
    g[class] = 1.0;
    g[runner] = -1.0;
    for k in (1..=model.depth()).rev() {
        let r = model.rbm(k);
        let mu = &mus[k];
        let gz: Vec<f64> = (0..r.n_up).map(|i| g[i] * mu[i] * (1.0 - mu[i])).collect();
        g = (0..r.n_down)
            .map(|c| {
                (0..r.n_up)
                    .map(|i| r.w[i * r.n_down + c] as f64 * gz[i])
                    .sum()
            })
            .collect();
    }
    Ok((m, g))
}

// ---------------------------------------------------------------------------------------------
// Geometry: steps, projections, flips.

fn norm2(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Room of component i in direction `d_i` inside `[0, 1]`.
fn room(x: f64, d: f64) -> f64 {
    if d > 0.0 {
        (1.0 - x).max(0.0)
    } else if d < 0.0 {
        x.max(0.0)
    } else {
        0.0
    }
}

/// The feasible part `P_x(d)` of a direction at x ∈ `[0,1]^n`: components with no room are zeroed.
pub fn feasible_part(x: &[f64], d: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(d)
        .map(|(&xi, &di)| if room(xi, di) > 0.0 { di } else { 0.0 })
        .collect()
}

/// `x' = clip(x + t d, 0, 1)` with t ≥ 0 chosen so that `‖x' − x‖₂ = ε` exactly (the module's
/// clipping decision), found exactly from the sorted saturation points of the components. When ε
/// exceeds the largest reachable norm (all feasible components saturated) the saturated point is
/// returned. Returns `(x', actual norm)`.
pub fn step_to_norm(x: &[f64], d: &[f64], eps: f64) -> (Vec<f64>, f64) {
    // Components with room, as (saturation time room/|d|, room, d²).
    let mut comps: Vec<(f64, f64, f64)> = x
        .iter()
        .zip(d)
        .filter_map(|(&xi, &di)| {
            let r = room(xi, di);
            (r > 0.0).then(|| (r / di.abs(), r, di * di))
        })
        .collect();
    comps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let target = eps * eps;
    // Σ d² of the components not yet saturated, as suffix sums (summed from the end, not by
    // subtracting from the total: with one slow component left, the subtraction cancelled to a
    // relative error of 1e-10 and the step overshot ε — found by the proptest in tests/attack.rs).
    let mut free = vec![0.0f64; comps.len() + 1];
    for i in (0..comps.len()).rev() {
        free[i] = free[i + 1] + comps[i].2;
    }
    let mut saturated = 0.0; // Σ room² of saturated components
    let mut t = f64::INFINITY;
    for (i, &(ts, r, _)) in comps.iter().enumerate() {
        // norm²(ts) with components before this one saturated.
        if saturated + ts * ts * free[i] >= target {
            t = ((target - saturated) / free[i]).max(0.0).sqrt();
            break;
        }
        saturated += r * r;
    }
    let xp: Vec<f64> = x
        .iter()
        .zip(d)
        .map(|(&xi, &di)| {
            if t.is_finite() {
                (xi + t * di).clamp(0.0, 1.0)
            } else if room(xi, di) > 0.0 {
                if di > 0.0 {
                    1.0
                } else {
                    0.0
                }
            } else {
                xi
            }
        })
        .collect();
    let n = norm2(&xp.iter().zip(x).map(|(a, b)| a - b).collect::<Vec<_>>());
    (xp, n)
}

/// Euclidean projection of δ onto `{δ : ‖δ‖₂ ≤ ε, x + δ ∈ [0,1]^n}` (x ∈ `[0,1]^n`): by the KKT
/// conditions `δ = clip(z/(1+μ), −x, 1−x)` with the smallest μ ≥ 0 that puts it in the ball
/// (bisection on μ, keeping the feasible end, so the result never leaves the set).
pub fn project_ball_box(x: &[f64], z: &[f64], eps: f64) -> Vec<f64> {
    let at = |mu: f64| -> Vec<f64> {
        x.iter()
            .zip(z)
            .map(|(&xi, &zi)| (zi / (1.0 + mu)).clamp(-xi, 1.0 - xi))
            .collect()
    };
    let d0 = at(0.0);
    if norm2(&d0) <= eps {
        return d0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while norm2(&at(hi)) > eps {
        hi *= 2.0;
        if hi > 1e300 {
            return vec![0.0; x.len()];
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if norm2(&at(mid)) > eps {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-15 * hi {
            break;
        }
    }
    at(hi)
}

/// L2 PGD on the mean-field margin of `class` (SPEC §6 reading (ii)): from δ = 0, K steps
/// `δ ← Π(δ − α ∇m/‖∇m‖)`, α = 2.5ε/K, Π the projection onto ε-ball ∩ box ([`project_ball_box`]).
/// Returns x + δ (stops early where ∇m = 0).
pub fn pgd(model: &DeepRbm, x: &[f64], class: usize, eps: f64, steps: usize) -> Result<Vec<f64>> {
    let alpha = 2.5 * eps / steps.max(1) as f64;
    let mut delta = vec![0.0f64; x.len()];
    for _ in 0..steps {
        let xp: Vec<f64> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
        let (_, g) = mean_field_margin(model, &xp, class)?;
        let gn = norm2(&g);
        if !(gn > 0.0 && gn.is_finite()) {
            break;
        }
        let z: Vec<f64> = delta
            .iter()
            .zip(&g)
            .map(|(d, gi)| d - alpha * gi / gn)
            .collect();
        delta = project_ball_box(x, &z, eps);
    }
    Ok(x.iter()
        .zip(&delta)
        .map(|(a, b)| (a + b).clamp(0.0, 1.0))
        .collect())
}

/// Which FGSM direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FgsmKind {
    /// `δ = −ε ∇m/‖∇m‖`.
    L2,
    /// `δ = −ε sign(∇m)/√(nnz)`: the sign direction scaled to L2 norm ε.
    Sign,
}

/// The raw FGSM step (before clipping): exactly of L2 norm ε, or zero where ∇m = 0.
pub fn fgsm_delta(grad: &[f64], eps: f64, kind: FgsmKind) -> Vec<f64> {
    let d: Vec<f64> = match kind {
        FgsmKind::L2 => grad.iter().map(|g| -g).collect(),
        FgsmKind::Sign => grad
            .iter()
            .map(|&g| {
                if g > 0.0 {
                    -1.0
                } else if g < 0.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect(),
    };
    let n = norm2(&d);
    if n > 0.0 && n.is_finite() {
        d.iter().map(|v| eps * v / n).collect()
    } else {
        vec![0.0; grad.len()]
    }
}

/// Flip the k feasible pixels of largest |score|: 0 → 1 only where `score_i > 0`, 1 → 0 only
/// where `score_i < 0` (x is read as binary at 0.5). The result is in {0,1}^n; fewer than k
/// pixels flip when fewer are feasible. Returns `(x', pixels flipped)`.
pub fn binary_flip(x: &[f32], score: &[f64], k: usize) -> (Vec<f32>, usize) {
    let bin: Vec<f32> = x
        .iter()
        .map(|&v| if v >= 0.5 { 1.0 } else { 0.0 })
        .collect();
    let mut cand: Vec<usize> = (0..x.len())
        .filter(|&i| {
            let s = score.get(i).copied().unwrap_or(0.0);
            (bin[i] == 0.0 && s > 0.0) || (bin[i] == 1.0 && s < 0.0)
        })
        .collect();
    // Stable: ties keep the lower index first.
    cand.sort_by(|&a, &b| score[b].abs().total_cmp(&score[a].abs()));
    let mut out = bin;
    let n = k.min(cand.len());
    for &i in &cand[..n] {
        out[i] = 1.0 - out[i];
    }
    (out, n)
}

/// The sign s ∈ {±1} of a Fisher direction v (see the module doc): the one whose feasible part
/// lowers the mean-field margin most per unit norm, to first order; +1 when neither lowers it.
pub fn fisher_sign(x: &[f64], v: &[f64], grad: &[f64]) -> f64 {
    let rate = |s: f64| {
        let sv: Vec<f64> = v.iter().map(|a| s * a).collect();
        let p = feasible_part(x, &sv);
        let n = norm2(&p);
        if n > 0.0 {
            dot(&p, grad) / n
        } else {
            f64::INFINITY
        }
    };
    if rate(-1.0) < rate(1.0) {
        -1.0
    } else {
        1.0
    }
}

fn gaussian_vector(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| crate::model::standard_normal(&mut rng) as f64)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Per-input attack.

/// One perturbed input and its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
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
    pub fisher_mf_sign: f64,
    /// `|⟨v_direct, v_mean-field⟩|`.
    pub fisher_overlap: f64,
    /// `|cos(v_direct, ∇m)|`: how far the Fisher direction is from the margin gradient.
    pub fisher_gradient_cosine: f64,
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
    pub model: &'m DeepRbm,
    pub bases: Vec<OperatorBasis>,
    pub flow: FlowConfig,
    pub predictor: Predictor<'m>,
    pub cfg: AttackConfig,
}

impl<'m> AttackContext<'m> {
    /// Choose the frozen bases (pilot samples from up to 32 of `pilot_inputs`, as `analyze` does)
    /// and set up the served predictor.
    pub fn new(model: &'m DeepRbm, pilot_inputs: &[&[f32]], cfg: &AttackConfig) -> Result<Self> {
        cfg.validate()?;
        model.validate().map_err(Error::shape)?;
        let acfg = AnalyzeConfig {
            inputs: cfg.inputs.clone(),
            samples: cfg.samples,
            seed: cfg.seed,
            basis: cfg.basis,
            blocks: cfg.blocks,
            pilot_samples: cfg.pilot_samples,
        };
        let pilot: Vec<&[f32]> = pilot_inputs.iter().take(32).copied().collect();
        let bases = classification_bases(model, &pilot, &acfg)?;
        Ok(AttackContext {
            model,
            bases,
            flow: FlowConfig {
                samples: cfg.samples,
                seed: cfg.seed,
                blocks: cfg.blocks,
                ..FlowConfig::default()
            },
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
    flow: &FlowConfig,
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
    let rnd = {
        let g = gaussian_vector(n, seed);
        let gn = norm2(&g);
        g.iter().map(|a| a / gn).collect::<Vec<_>>()
    };
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

// ---------------------------------------------------------------------------------------------
// Bookkeeping.

/// Successes among attacked inputs of one class.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassRate {
    pub class: usize,
    /// Correctly classified inputs of this class (attacked).
    pub attacked: usize,
    pub successes: usize,
    /// `successes / attacked` (NaN → null when none attacked).
    pub rate: Option<f64>,
}

/// Success rate of one method at one budget.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MethodRate {
    pub method: Method,
    /// ε or k.
    pub budget: f64,
    pub attacked: usize,
    pub successes: usize,
    pub rate: Option<f64>,
    /// Mean actual `‖x' − x‖₂` over the attacked inputs.
    pub mean_norm: Option<f64>,
    pub per_class: Vec<ClassRate>,
}

fn rate(s: usize, n: usize) -> Option<f64> {
    (n > 0).then(|| s as f64 / n as f64)
}

/// Tally the outcomes of the attacked (correctly classified) inputs per method and budget, in
/// the order methods and budgets first appear.
pub fn tally(inputs: &[InputAttack], n_classes: usize) -> Vec<MethodRate> {
    let mut keys: Vec<(Method, f64)> = Vec::new();
    for i in inputs.iter().filter(|i| i.correct) {
        for o in &i.outcomes {
            if !keys
                .iter()
                .any(|&(m, b)| m == o.method && b.to_bits() == o.budget.to_bits())
            {
                keys.push((o.method, o.budget));
            }
        }
    }
    keys.into_iter()
        .map(|(m, b)| {
            let mut attacked = vec![0usize; n_classes];
            let mut succ = vec![0usize; n_classes];
            let mut norm_sum = 0.0;
            for i in inputs.iter().filter(|i| i.correct) {
                for o in i
                    .outcomes
                    .iter()
                    .filter(|o| o.method == m && o.budget.to_bits() == b.to_bits())
                {
                    let c = (i.label as usize).min(n_classes.saturating_sub(1));
                    attacked[c] += 1;
                    succ[c] += o.success as usize;
                    norm_sum += o.norm;
                }
            }
            let n: usize = attacked.iter().sum();
            let s: usize = succ.iter().sum();
            MethodRate {
                method: m,
                budget: b,
                attacked: n,
                successes: s,
                rate: rate(s, n),
                mean_norm: (n > 0).then(|| norm_sum / n as f64),
                per_class: (0..n_classes)
                    .map(|c| ClassRate {
                        class: c,
                        attacked: attacked[c],
                        successes: succ[c],
                        rate: rate(succ[c], attacked[c]),
                    })
                    .collect(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Vulnerability summary (issue 5 item 2).

/// Quartiles of the finite values of a sample (non-finite ones, e.g. `cond = ∞` of a singular
/// `C_kk`, are counted apart).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Quartiles {
    /// Finite values summarised.
    pub n: usize,
    /// Values left out because they are infinite or NaN.
    pub non_finite: usize,
    pub q1: Option<f64>,
    pub median: Option<f64>,
    pub q3: Option<f64>,
    pub max: Option<f64>,
}

/// Quartiles by linear interpolation between order statistics.
pub fn quartiles(values: &[f64]) -> Quartiles {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        let h = p * (v.len() - 1) as f64;
        let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
        Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
    };
    Quartiles {
        n: v.len(),
        non_finite: values.len() - v.len(),
        q1: q(0.25),
        median: q(0.5),
        q3: q(0.75),
        max: v.last().copied(),
    }
}

/// RG diagnostics of one stability matrix over the inputs.
#[derive(Clone, Debug, Serialize)]
pub struct LayerVulnerability {
    /// `T^{(k)}`.
    pub k: usize,
    /// Count of `|λ(T)| > 1` per input. **Labelling-dependent**: eig(T) changes with the arbitrary
    /// order of hidden units and is a coordinate statement (RG-NOTES §4 item 6, §5 A7).
    pub n_relevant: Quartiles,
    /// Inputs with at least one `|λ(T)| > 1`.
    pub inputs_with_relevant: usize,
    /// Size: the largest `|λ(T)|` per input (labelling-dependent as well).
    pub spectral_radius: Quartiles,
    pub labelling_dependent: bool,
    /// Largest canonical correlation (basis-invariant, ≤ 1).
    pub top_canonical_correlation: Quartiles,
    /// `cond(C_kk)`.
    pub cond: Quartiles,
}

/// Per-model vulnerability summary (SPEC §6, §10): the ingredients of a verdict, without one.
///
/// No verdict is drawn: the seed's thresholds are unknown (RG-NOTES §5), and by the
/// data-processing inequality the stochastic ratios are ≤ 1 at every depth, so a threshold on them
/// would not measure depth-driven vulnerability. Compare models on these numbers instead.
#[derive(Clone, Debug, Serialize)]
pub struct Vulnerability {
    /// Inputs analysed (all, correct or not).
    pub inputs: usize,
    /// Top eigenvalue of the direct (stochastic) input-Fisher estimate.
    pub fisher_top_direct: Quartiles,
    /// Top eigenvalue of the mean-field reading's Fisher matrix.
    pub fisher_top_mean_field: Quartiles,
    /// Top eigenvalue of the first-layer bound.
    pub fisher_top_bound: Quartiles,
    /// Per-input ratio direct / bound (≤ 1 up to sampling error, RG-NOTES §4 item 1).
    pub ratio_direct: Quartiles,
    /// Per-input ratio mean-field / bound (not bounded by 1).
    pub ratio_mean_field: Quartiles,
    /// Per stability matrix `T^{(k)}`, k = 2…N.
    pub layers: Vec<LayerVulnerability>,
    /// The ε of the quoted success rates.
    pub reference_epsilon: f64,
    /// Success rate of `fisher` at the reference ε (None when ε was not swept or nothing attacked).
    pub success_fisher: Option<f64>,
    /// Success rate of `pgd` at the reference ε.
    pub success_pgd: Option<f64>,
    /// Success rate of `random` at the reference ε (the floor).
    pub success_random: Option<f64>,
}

/// Summarise per-input attacks into a [`Vulnerability`].
pub fn vulnerability(
    inputs: &[InputAttack],
    rates: &[MethodRate],
    reference_epsilon: f64,
) -> Vulnerability {
    let col =
        |f: &dyn Fn(&InputAttack) -> f64| quartiles(&inputs.iter().map(f).collect::<Vec<_>>());
    let ks: Vec<usize> = inputs
        .first()
        .map(|i| i.layers.iter().map(|l| l.k).collect())
        .unwrap_or_default();
    let layers = ks
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            let ls: Vec<&LayerDiagnostics> =
                inputs.iter().filter_map(|i| i.layers.get(j)).collect();
            let of = |f: &dyn Fn(&LayerDiagnostics) -> Option<f64>| {
                quartiles(&ls.iter().filter_map(|l| f(l)).collect::<Vec<_>>())
            };
            LayerVulnerability {
                k,
                n_relevant: of(&|l| l.n_relevant.map(|n| n as f64)),
                inputs_with_relevant: ls.iter().filter(|l| l.n_relevant.unwrap_or(0) > 0).count(),
                spectral_radius: of(&|l| l.spectral_radius),
                labelling_dependent: true,
                top_canonical_correlation: of(&|l| l.top_canonical_correlation),
                cond: of(&|l| Some(l.cond)),
            }
        })
        .collect();
    let at = |m: Method| {
        rates
            .iter()
            .find(|r| r.method == m && (r.budget - reference_epsilon).abs() < 1e-12)
            .and_then(|r| r.rate)
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    Vulnerability {
        inputs: inputs.len(),
        fisher_top_direct: col(&|i| i.fisher_top_direct),
        fisher_top_mean_field: col(&|i| i.fisher_top_mean_field),
        fisher_top_bound: col(&|i| i.fisher_top_bound),
        ratio_direct: col(&|i| ratio(i.fisher_top_direct, i.fisher_top_bound)),
        ratio_mean_field: col(&|i| ratio(i.fisher_top_mean_field, i.fisher_top_bound)),
        layers,
        reference_epsilon,
        success_fisher: at(Method::Fisher),
        success_pgd: at(Method::Pgd),
        success_random: at(Method::Random),
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Everything `attack` writes to `attack.json`.
#[derive(Clone, Debug, Serialize)]
pub struct AttackReport {
    pub widths: Vec<usize>,
    pub dataset: String,
    pub settings: AttackConfig,
    /// How perturbations are applied (the clipping decision) and judged.
    pub protocol: Vec<String>,
    /// Operators per classification layer 1…N.
    pub operators: Vec<usize>,
    pub n_inputs: usize,
    /// Inputs whose served class equals the label (the attacked ones).
    pub n_correct: usize,
    pub results: Vec<MethodRate>,
    pub vulnerability: Vulnerability,
    pub inputs: Vec<InputAttack>,
    pub seconds: f64,
}

/// The protocol lines written into the report.
pub fn protocol() -> Vec<String> {
    vec![
        "continuous methods: x' = clip(x + t d, 0, 1) with t chosen so that the actual ‖x'−x‖₂ = ε (saturated point when ε is out of reach); PGD is projected on the ε-ball ∩ [0,1]^n".into(),
        "fisher / fisher-mf: d = s v, v the top eigenvector of the direct / mean-field input Fisher; s the sign whose feasible part lowers the mean-field margin".into(),
        "binary methods: flip the k feasible pixels of largest score (0→1 where score > 0, 1→0 where score < 0); norm √k".into(),
        "success: served class (stochastic, argmax) of x' differs from that of x; only inputs served correctly at ε = 0 are attacked".into(),
    ]
}

/// Run the attack over `cfg.inputs` of the test split; `tick` is called after each input.
pub fn attack(
    model: &DeepRbm,
    data: &Dataset,
    cfg: &AttackConfig,
    tick: &(dyn Fn() + Sync),
) -> Result<AttackReport> {
    let t0 = std::time::Instant::now();
    cfg.validate()?;
    data.check_test_inputs(&cfg.inputs, "attack")
        .map_err(Error::invalid)?;
    crate::train::check_widths_fit(&model.widths(), data)?;
    let rows: Vec<&[f32]> = cfg.inputs.iter().map(|&i| data.test.row(i)).collect();
    let ctx = AttackContext::new(model, &rows, cfg)?;
    use rayon::prelude::*;
    let inputs = cfg
        .inputs
        .par_iter()
        .map(|&i| {
            let r = attack_input(&ctx, i, data.test.row(i), data.test.y[i]);
            tick();
            r
        })
        .collect::<Result<Vec<InputAttack>>>()?;
    let results = tally(&inputs, data.n_classes());
    let vulnerability = vulnerability(&inputs, &results, cfg.reference_epsilon);
    Ok(AttackReport {
        widths: model.widths(),
        dataset: data.name.clone(),
        settings: cfg.clone(),
        protocol: protocol(),
        operators: ctx.bases.iter().map(|b| b.len()).collect(),
        n_inputs: inputs.len(),
        n_correct: inputs.iter().filter(|i| i.correct).count(),
        results,
        vulnerability,
        inputs,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn fmt_rate(r: &MethodRate) -> String {
    match (r.rate, r.mean_norm) {
        (Some(p), Some(n)) => format!("{:.3} ({:.2})", p, n),
        _ => "–".into(),
    }
}

/// The success table (Markdown): one row per method, one column per budget; cells
/// "rate (mean actual L2 norm)".
pub fn table(r: &AttackReport) -> String {
    let mut s = String::new();
    let mut section = |methods: &[Method], budgets: Vec<f64>, head: &str| {
        if budgets.is_empty() {
            return;
        }
        s.push_str(&format!("| method | {} |\n", {
            budgets
                .iter()
                .map(|b| format!("{head}{b}"))
                .collect::<Vec<_>>()
                .join(" | ")
        }));
        s.push_str(&format!("|---|{}\n", "---|".repeat(budgets.len())));
        for &m in methods {
            let cells: Vec<String> = budgets
                .iter()
                .map(|&b| {
                    r.results
                        .iter()
                        .find(|x| x.method == m && x.budget.to_bits() == b.to_bits())
                        .map(fmt_rate)
                        .unwrap_or_else(|| "–".into())
                })
                .collect();
            s.push_str(&format!("| {} | {} |\n", m.name(), cells.join(" | ")));
        }
        s.push('\n');
    };
    section(&Method::CONTINUOUS, r.settings.epsilons.clone(), "ε=");
    section(
        &Method::BINARY,
        r.settings.pixels.iter().map(|&k| k as f64).collect(),
        "k=",
    );
    s
}

/// Draw `attack_curves.png` (success rate against mean actual L2 norm, one curve per method) and,
/// for image data, `attack_examples.png`; returns the files written.
pub fn write_plots(
    r: &AttackReport,
    dir: &std::path::Path,
    image_shape: Option<(usize, usize)>,
    class_names: &[String],
) -> Result<Vec<std::path::PathBuf>> {
    use crate::report::{image_grid, line_plot, Series};
    let mut files = Vec::new();
    let series: Vec<Series> = Method::CONTINUOUS
        .iter()
        .chain(Method::BINARY.iter())
        .map(|&m| {
            (
                m.name().to_string(),
                r.results
                    .iter()
                    .filter(|x| x.method == m)
                    .filter_map(|x| Some((x.mean_norm?, x.rate?)))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if !series.is_empty() {
        let p = dir.join("attack_curves.png");
        line_plot(
            &p,
            &format!(
                "Attack success (served class changes), {} of {} inputs attacked",
                r.n_correct, r.n_inputs
            ),
            "mean actual L2 norm of the perturbation (binary: √k)",
            "success rate",
            &series,
            false,
        )?;
        files.push(p);
    }
    if let Some(shape) = image_shape {
        let name = |c: usize| class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let mut imgs: Vec<(String, Vec<f64>)> = Vec::new();
        for i in r.inputs.iter().filter(|i| i.correct).take(4) {
            imgs.push((
                format!("#{} served {}", i.index, name(i.served_class)),
                i.clean.iter().map(|&v| v as f64).collect(),
            ));
            for (m, b, xp, c) in &i.examples {
                let unit = if m.is_binary() { "k" } else { "ε" };
                imgs.push((
                    format!("{} {unit}={b}: {}", m.name(), name(*c)),
                    xp.iter().map(|&v| v as f64).collect(),
                ));
            }
        }
        if !imgs.is_empty() && imgs.iter().all(|(_, v)| v.len() == shape.0 * shape.1) {
            let p = dir.join("attack_examples.png");
            image_grid(
                &p,
                "Originals and perturbed inputs (titles: served class)",
                &imgs,
                shape,
            )?;
            files.push(p);
        }
    }
    Ok(files)
}
