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

mod input;
mod plots;
mod summary;

pub use input::{
    attack_input, fisher_directions, judge, outcomes_along, AttackContext, InputAttack,
    LayerDiagnostics, Outcome,
};
pub use plots::{table, write_plots};
pub use summary::{tally, vulnerability, ClassRate, LayerVulnerability, MethodRate, Vulnerability};

use rayon::prelude::*;
use serde::Serialize;

use crate::data::Dataset;
use crate::error::{check_at_least, check_positive, Error, Result};
use crate::params::{Params, Valid};
use crate::progress::Progress;
use crate::rg::basis::{BasisChoice, BasisPlan, DEFAULT_BASIS, DEFAULT_PILOT_SAMPLES};
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
pub struct AttackParams {
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

impl Default for AttackParams {
    /// Inputs 0..200, ε ∈ {0.1, 0.2, 0.5, 1, 2, 3}, k ∈ {1, 2, 4, 8, 16}, S = 3000, order2:200,
    /// no jackknife, 4000 pilot samples, served S = 64, seed 0, K = 10, reference ε = 1.
    fn default() -> Self {
        AttackParams {
            inputs: (0..200).collect(),
            epsilons: vec![0.1, 0.2, 0.5, 1.0, 2.0, 3.0],
            pixels: vec![1, 2, 4, 8, 16],
            samples: 3000,
            basis: DEFAULT_BASIS,
            blocks: 1,
            pilot_samples: DEFAULT_PILOT_SAMPLES,
            serve_samples: 64,
            seed: 0,
            pgd_steps: 10,
            reference_epsilon: 1.0,
        }
    }
}

impl AttackParams {
    /// How the frozen classification bases are chosen.
    pub fn basis_plan(&self) -> BasisPlan {
        BasisPlan {
            choice: self.basis,
            pilot_samples: self.pilot_samples,
            seed: self.seed,
        }
    }
}

impl Params for AttackParams {
    fn check(self) -> Result<Valid<Self>> {
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
        Ok(Valid::checked(self))
    }
}

/// Everything `attack` writes to `attack.json`.
#[derive(Clone, Debug, Serialize)]
pub struct AttackReport {
    /// Widths of the attacked model.
    pub widths: Vec<usize>,
    /// Data set name.
    pub dataset: String,
    /// The attack's settings.
    pub settings: Valid<AttackParams>,
    /// How perturbations are applied (the clipping decision) and judged.
    pub protocol: Vec<String>,
    /// Operators per classification layer 1…N.
    pub operators: Vec<usize>,
    /// Inputs selected.
    pub n_inputs: usize,
    /// Inputs whose served class equals the label (the attacked ones).
    pub n_correct: usize,
    /// Success per method and budget, in order of appearance.
    pub results: Vec<MethodRate>,
    /// The per-model vulnerability summary.
    pub vulnerability: Vulnerability,
    /// Per input.
    pub inputs: Vec<InputAttack>,
    /// Wall-clock time of the run.
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

/// Run the attack over `params.inputs` of the test split; `progress` counts the inputs.
pub fn attack(
    model: &DeepRbm,
    data: &Dataset,
    params: &Valid<AttackParams>,
    progress: &dyn Progress,
) -> Result<AttackReport> {
    let t0 = std::time::Instant::now();
    let cfg = params;
    data.check_test_inputs(&cfg.inputs, "attack")?;
    crate::train::check_widths_fit(&model.widths(), data)?;
    let rows: Vec<&[f32]> = cfg.inputs.iter().map(|&i| data.test.row(i)).collect();
    let ctx = AttackContext::new(model, &rows, params)?;
    progress.start("attack", cfg.inputs.len() as u64);
    let inputs = cfg
        .inputs
        .par_iter()
        .map(|&i| {
            let r = attack_input(&ctx, i, data.test.row(i), data.test.y[i]);
            progress.inc(1);
            r
        })
        .collect::<Result<Vec<InputAttack>>>()?;
    progress.finish();
    let results = tally(&inputs, data.n_classes());
    let vulnerability = vulnerability(&inputs, &results, cfg.reference_epsilon);
    Ok(AttackReport {
        widths: model.widths(),
        dataset: data.name.clone(),
        settings: params.clone(),
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
