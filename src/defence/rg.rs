//! RG poisoning of served outputs (SPEC §8, paper eq. 19) and its control, a random sum-zero
//! direction (SPEC §9 "baseline defences at equal distortion").
//!
//! Both move the served output along a unit sum-zero direction u:
//! `ŷ' = ŷ + t·s·u`, with the sign `s ∈ {+1, −1}` and the step `0 ≤ t ≤ ε` chosen per query by one
//! shared function, [`poison_step`], so the two differ only in u:
//! * [`RgPoison`]: `u = u_c`, the poison direction of the predicted class `c = argmax(ŷ)` — the top
//!   eigenvector of `P F̃_y P` (SPEC §7) — **cached per predicted class at the class anchor of the
//!   reading** (one-hot `e_c` under (P), smoothed one-hot under (C),
//!   [`OutputReading::class_anchor`]) (SPEC §8 "compute it at the served ŷ, or cache it per predicted class and say
//!   which": this crate caches, see [`PoisonCache`]).
//! * [`RandomDirection`]: u a pseudo-random unit sum-zero vector drawn from the query seed.
//!
//! **Guarantees** (SPEC §8 decision), for every finite `ŷ ∈ [0,1]^n`: the output is finite, in
//! `[0,1]^n`, `argmax(ŷ') = argmax(ŷ)`, and `t ≤ ε`. The step is the largest `t ≤ ε` (closed form
//! over the linear constraints, [`max_step`]) such that every component stays in [0,1] and the top
//! class keeps a margin `ŷ'_c − max_{i≠c} ŷ'_i ≥ min(margin, ŷ_c − max_{i≠c} ŷ_i)`; with a tie at the
//! top, t = 0. After the f32 output is formed it is checked again (rounding); should rounding have
//! broken a guarantee, t is halved (at most [`SHRINK_TRIES`] times) and then set to 0.
//!
//! **Reading (C) and the served sum.** The served outputs of this crate are independent sigmoids
//! `E[h_N|x]` and do not sum to 1, whereas reading (C) reads y as a probability vector. The
//! directions are sum-zero, so the poisoned output keeps the served sum exactly (up to clipping to
//! [0,1], which t never needs): under either reading the poison only redistributes mass between
//! classes. The cached (C) directions are computed at the smoothed one-hot `(1 − η) e_c + η/K`, a
//! valid probability vector, so no served output is ever fed to reading (C) itself.

use std::path::Path;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{check_served, Defence, Query};
use crate::error::{Error, Result};
use crate::linalg::dense;
use crate::model::{standard_normal, DeepRbm};
use crate::params::{Params, Valid};
use crate::rg::basis::{classification_bases, generation_bases, BasisChoice, BasisPlan};
use crate::rg::fisher::{output_fisher, project_sum_zero};
use crate::rg::{FlowParams, OperatorBasis, OutputReading};
use crate::sample::argmax;
use crate::util::{mix_seed, write_json};

/// Default margin the top class keeps over the runner-up (in output units): `1e-3`. When the served
/// gap is already smaller, the gap itself is kept (the poison never narrows it).
pub const DEFAULT_MARGIN: f64 = 1e-3;

/// Times t is halved when f32 rounding broke a guarantee, before t = 0 is used.
pub const SHRINK_TRIES: usize = 8;

/// Components within this distance outside [0,1] after the f64 update are rounding of a bound that
/// binds exactly (e.g. `0.25 − (0.25·√2)(1/√2)`); they are snapped onto the bound.
const SNAP: f64 = 1e-12;

/// Stream tags for the per-query seeds (independent streams from one query seed).
const SIGN_TAG: u64 = 0x5349_474e; // "SIGN"
const DIRECTION_TAG: u64 = 0x4449_5245; // "DIRE"

/// How the sign s of the step is chosen per query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignRule {
    /// The sign that allows the larger step t (ties → +1). Deterministic given ŷ: the poison then
    /// has a systematic component (for a fixed class it always points the same way, so a clone
    /// learns a biased but consistent target).
    #[default]
    Feasible,
    /// A pseudo-random sign from the query seed (then the step allowed in that direction): over
    /// many queries the poison averages out to zero mean, i.e. it adds variance, not bias.
    Seeded,
}

/// One poisoned output and the step actually taken.
#[derive(Clone, Debug, PartialEq)]
pub struct PoisonStep {
    /// `ŷ' = ŷ + t·s·u` (finite, in [0,1], same argmax as ŷ).
    pub output: Vec<f32>,
    /// The step t actually applied, `0 ≤ t ≤ ε`.
    pub t: f64,
    /// The sign s (+1 or −1).
    pub sign: f64,
}

/// The largest `t ∈ [0, ε]` with `y + t·d ∈ [0,1]^n` and, for every `i ≠ c`,
/// `(y_c + t d_c) − (y_i + t d_i) ≥ m`, `m = min(margin, y_c − max_{i≠c} y_i)` (SPEC §8). Closed form:
/// each constraint is linear in t, `t ≤ (1 − y_i)/d_i` (d_i > 0), `t ≤ y_i/(−d_i)` (d_i < 0),
/// `t ≤ (y_c − y_i − m)/(d_i − d_c)` (d_i > d_c); t is the minimum of ε and these bounds. A tie at
/// the top (gap ≤ 0) gives 0. `c` must be the argmax of y.
pub fn max_step(y: &[f64], d: &[f64], c: usize, eps: f64, margin: f64) -> f64 {
    let runner_up = y
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != c)
        .map(|(_, &v)| v)
        .fold(f64::NEG_INFINITY, f64::max);
    let gap = y[c] - runner_up;
    if gap.is_nan() || gap <= 0.0 {
        return 0.0;
    }
    let m = margin.min(gap);
    let mut t = eps;
    for (i, (&yi, &di)) in y.iter().zip(d).enumerate() {
        if di > 0.0 {
            t = t.min((1.0 - yi) / di);
        } else if di < 0.0 {
            t = t.min(yi / -di);
        }
        if i != c && di > d[c] {
            t = t.min((y[c] - yi - m) / (di - d[c]));
        }
    }
    t.max(0.0)
}

/// `y + t·s·u` in f32, components within [`SNAP`] outside [0,1] snapped onto the bound.
fn compose(y: &[f64], u: &[f64], sign: f64, t: f64) -> Vec<f32> {
    y.iter()
        .zip(u)
        .map(|(&yi, &ui)| {
            let v = yi + t * sign * ui;
            let v = if v < 0.0 && v > -SNAP {
                0.0
            } else if v > 1.0 && v < 1.0 + SNAP {
                1.0
            } else {
                v
            };
            v as f32
        })
        .collect()
}

fn guarantees_hold(out: &[f32], c: usize) -> bool {
    out.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)) && argmax(out) == c
}

/// Check ε (the maximal step) and the margin: both finite and ≥ 0.
fn check_eps_margin(eps: f64, margin: f64) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(format!(
            "poison step ε = {eps}: must be finite and ≥ 0"
        )));
    }
    if !(margin.is_finite() && margin >= 0.0) {
        return Err(Error::invalid(format!(
            "poison margin = {margin}: must be finite and ≥ 0"
        )));
    }
    Ok(())
}

/// The shared step of [`RgPoison`] and [`RandomDirection`] (SPEC §8): `ŷ' = ŷ + t·s·u` with u a unit
/// sum-zero direction, `c = argmax(ŷ)`, s by `rule` (Seeded: from `seed`), t = [`max_step`] in the
/// chosen direction; then the guarantees are re-checked on the f32 output and t halved if rounding
/// broke them (see the module documentation).
pub fn poison_step(
    y: &[f32],
    u: &[f64],
    eps: f64,
    margin: f64,
    rule: SignRule,
    seed: u64,
) -> Result<PoisonStep> {
    check_eps_margin(eps, margin)?;
    check_served(y)?;
    if u.len() != y.len() {
        return Err(Error::shape(format!(
            "poison direction has {} components, the output {}",
            u.len(),
            y.len()
        )));
    }
    if let Some(i) = u.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "poison direction u[{i}] = {} is not finite",
            u[i]
        )));
    }
    let c = argmax(y);
    let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    let minus: Vec<f64> = u.iter().map(|v| -v).collect();
    let t_plus = max_step(&y64, u, c, eps, margin);
    let t_minus = max_step(&y64, &minus, c, eps, margin);
    let (sign, mut t) = match rule {
        SignRule::Feasible => {
            if t_minus > t_plus {
                (-1.0, t_minus)
            } else {
                (1.0, t_plus)
            }
        }
        SignRule::Seeded => {
            if mix_seed(seed, SIGN_TAG) & 1 == 1 {
                (-1.0, t_minus)
            } else {
                (1.0, t_plus)
            }
        }
    };
    for _ in 0..=SHRINK_TRIES {
        if t <= 0.0 {
            break;
        }
        let out = compose(&y64, u, sign, t);
        if guarantees_hold(&out, c) {
            return Ok(PoisonStep {
                output: out,
                t,
                sign,
            });
        }
        t *= 0.5;
    }
    Ok(PoisonStep {
        output: y.to_vec(),
        t: 0.0,
        sign,
    })
}

/// Check that `u` is a unit sum-zero vector (within `tol`); `what` names it in messages.
fn check_direction(u: &[f64], n: usize, tol: f64, what: &str) -> Result<()> {
    if u.len() != n {
        return Err(Error::shape(format!(
            "{what} has {} components, expected {n}",
            u.len()
        )));
    }
    if let Some(i) = u.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "{what}[{i}] = {} is not finite",
            u[i]
        )));
    }
    let s: f64 = u.iter().sum();
    let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
    if s.abs() > tol {
        return Err(Error::invalid(format!(
            "{what} sums to {s}, expected 0 (a sum-zero direction)"
        )));
    }
    if (norm - 1.0).abs() > tol {
        return Err(Error::invalid(format!(
            "{what} has norm {norm}, expected 1 (a unit direction)"
        )));
    }
    Ok(())
}

/// Tolerance on the unit norm and zero sum of stored directions.
pub const DIRECTION_TOL: f64 = 1e-6;

/// Poison directions cached per predicted class (SPEC §8: "cache it per predicted class"): for each
/// class c the top eigenvector of `P F̃_y P` at the **class anchor** of the reading (`anchor`:
/// [`OutputReading::class_anchor`], one-hot `e_c` under (P), smoothed under (C)), from the
/// direct estimator of [`output_fisher`] (`poison_direct`), in one reading. Saved as JSON so that
/// `serve` can reuse it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoisonCache {
    /// The reading of `∂/∂y` the directions were computed in (SPEC §7).
    pub reading: OutputReading,
    /// `per_class[c]` = `u_c`, unit, sum-zero, largest component positive.
    pub per_class: Vec<Vec<f64>>,
    /// `eigenvalues[c]` = top eigenvalue of `P F̃_{e_c} P`.
    pub eigenvalues: Vec<f64>,
    /// `fisher[c]` = `P F̃_{e_c} P` itself, `K × K` row-major (objective A of `rg-vertex` and
    /// `rg-logit`; empty in caches written before it was kept).
    #[serde(default)]
    pub fisher: Vec<Vec<f64>>,
    /// Where F̃ was evaluated: [`OutputReading::anchor_label`] for [`PoisonCache::compute`].
    pub anchor: String,
    /// `{:016x}` of the model's fingerprint (as in `model.json`), empty when not tied to a model.
    #[serde(default)]
    pub model_fingerprint: String,
    /// Operator counts of the generation bases, layers 0…N−1 (empty when unknown).
    #[serde(default)]
    pub generation_operators: Vec<usize>,
    /// Samples S and seed of the estimate (0 when unknown).
    #[serde(default)]
    pub samples: usize,
    #[serde(default)]
    /// Seed of the estimate.
    pub seed: u64,
}

/// The anchor recorded by [`PoisonCache::compute`] for reading (P) (`OutputReading::PlugIn.anchor_label()`).
pub const ONE_HOT_ANCHOR: &str = "one-hot e_c";

/// Samples per class used by [`PoisonCache::for_model`] when the caller has no preference: about
/// 6 s per reading for the digits model `runs/d3` (64-64-64-10) on a loaded 2-core machine (time is
/// linear in S). The directions are noisy: on `runs/d3` the overlap `|⟨u_c(seed 0), u_c(seed 1)⟩|`
/// ranged over the classes from 0.14 to 0.99 at S = 5000 and from 0.20 to 0.999 at S = 20 000
/// (reading P; 4× the time) — for some classes the top eigenvalues of `P F̃ P` are nearly
/// degenerate, so their direction is poorly determined at any affordable S.
pub const DEFAULT_CACHE_SAMPLES: usize = 5_000;

impl PoisonCache {
    /// Build from given directions (validated: at least 2 classes, each direction unit and sum-zero
    /// within [`DIRECTION_TOL`], finite eigenvalues, one per class).
    pub fn from_directions(
        reading: OutputReading,
        per_class: Vec<Vec<f64>>,
        eigenvalues: Vec<f64>,
        anchor: impl Into<String>,
    ) -> Result<Self> {
        let c = PoisonCache {
            reading,
            per_class,
            eigenvalues,
            fisher: Vec::new(),
            anchor: anchor.into(),
            model_fingerprint: String::new(),
            generation_operators: Vec::new(),
            samples: 0,
            seed: 0,
        };
        c.validate()?;
        Ok(c)
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.per_class.len()
    }

    /// Check the invariants (see [`PoisonCache::from_directions`]).
    pub fn validate(&self) -> Result<()> {
        let n = self.per_class.len();
        if n < 2 {
            return Err(Error::invalid(format!(
                "poison cache has {n} class(es); sum-zero directions need at least 2"
            )));
        }
        if self.eigenvalues.len() != n {
            return Err(Error::shape(format!(
                "poison cache has {} eigenvalues for {n} classes",
                self.eigenvalues.len()
            )));
        }
        for (c, u) in self.per_class.iter().enumerate() {
            check_direction(u, n, DIRECTION_TOL, &format!("per_class[{c}]"))?;
        }
        if !self.fisher.is_empty()
            && (self.fisher.len() != n || self.fisher.iter().any(|f| f.len() != n * n))
        {
            return Err(Error::shape(format!(
                "poison cache: {} Fisher matrices for {n} classes (each must hold {} values)",
                self.fisher.len(),
                n * n
            )));
        }
        if let Some((c, i)) = self
            .fisher
            .iter()
            .enumerate()
            .find_map(|(c, f)| f.iter().position(|v| !v.is_finite()).map(|i| (c, i)))
        {
            return Err(Error::invalid(format!(
                "poison cache: fisher[{c}][{i}] is not finite"
            )));
        }
        if let Some(c) = self.eigenvalues.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "eigenvalues[{c}] = {} is not finite",
                self.eigenvalues[c]
            )));
        }
        Ok(())
    }

    /// For each class c, [`output_fisher`] at the class anchor `y` of the reading
    /// ([`OutputReading::class_anchor`]) on the generation bases `gen_bases` (layers
    /// 0…N−1, see [`generation_bases`]) in `reading`, keeping `poison_direct` (SPEC §7–8). Classes
    /// run in parallel (rayon); each class's sampler is seeded from (model, `flow_cfg.seed`, e_c),
    /// so the result does not depend on the thread count. `flow_cfg.blocks = 1` skips the jackknife,
    /// which the cache does not use.
    pub fn compute(
        model: &DeepRbm,
        gen_bases: &[OperatorBasis],
        reading: OutputReading,
        flow_cfg: &Valid<FlowParams>,
    ) -> Result<Self> {
        let n = model.n_outputs();
        if n < 2 {
            return Err(Error::invalid(format!(
                "poison cache: the model has {n} output(s); sum-zero directions need at least 2"
            )));
        }
        let per: Vec<(f64, Vec<f64>, Vec<f64>)> = (0..n)
            .into_par_iter()
            .map(|c| {
                let y = reading.class_anchor(c, n);
                let r = output_fisher(model, &y, gen_bases, reading, flow_cfg)?;
                let projected = project_sum_zero(r.direct.value.as_ref())?;
                Ok((
                    r.poison_direct.value,
                    r.poison_direct.direction,
                    dense::to_row_major(projected.as_ref()),
                ))
            })
            .collect::<Result<_>>()?;
        let mut eigenvalues = Vec::with_capacity(n);
        let mut per_class = Vec::with_capacity(n);
        let mut fisher = Vec::with_capacity(n);
        for (e, u, f) in per {
            eigenvalues.push(e);
            per_class.push(u);
            fisher.push(f);
        }
        let mut cache =
            PoisonCache::from_directions(reading, per_class, eigenvalues, reading.anchor_label())?;
        cache.fisher = fisher;
        cache.model_fingerprint = format!("{:016x}", model.fingerprint());
        cache.generation_operators = gen_bases.iter().map(|b| b.len()).collect();
        cache.samples = flow_cfg.samples;
        cache.seed = flow_cfg.seed;
        Ok(cache)
    }

    /// [`PoisonCache::compute`] with the bases built as `analyze` builds them
    /// ([`classification_bases`] then [`generation_bases`]), but with **order-1 operators on the
    /// hidden layers** (`analyze` defaults to order 1 plus 200 pilot-chosen pairs, which needs
    /// inputs and costs more) — the input layer keeps its nearest-neighbour pairs when
    /// `image_shape` is given. `samples` per class (see [`DEFAULT_CACHE_SAMPLES`]), one jackknife
    /// block, default regularisation.
    pub fn for_model(
        model: &DeepRbm,
        image_shape: Option<(usize, usize)>,
        reading: OutputReading,
        samples: usize,
        seed: u64,
    ) -> Result<Self> {
        let plan = BasisPlan {
            choice: BasisChoice::Order1,
            pilot_samples: 0,
            seed,
        };
        let cbases = classification_bases(model, &[], &plan)?;
        let gbases = generation_bases(model, &cbases, image_shape)?;
        let fc = FlowParams {
            samples,
            seed,
            blocks: 1,
            ..FlowParams::default()
        }
        .check()?;
        PoisonCache::compute(model, &gbases, reading, &fc)
    }

    /// The cache file of a reading inside a model directory: `poison_cache_P.json` or
    /// `poison_cache_C.json`.
    pub fn path_in(dir: &Path, reading: OutputReading) -> std::path::PathBuf {
        dir.join(match reading {
            OutputReading::PlugIn => "poison_cache_P.json",
            OutputReading::Mixture => "poison_cache_C.json",
        })
    }

    /// The model directory's cache for `reading` when it exists and fits `model` (classes and
    /// fingerprint); otherwise [`PoisonCache::for_model`] with [`DEFAULT_CACHE_SAMPLES`] and seed
    /// 0, saved there (atomically) for the next run. Returns the cache and whether it was computed.
    pub fn load_or_compute(
        dir: &Path,
        model: &DeepRbm,
        image_shape: Option<(usize, usize)>,
        reading: OutputReading,
    ) -> Result<(Self, bool)> {
        let path = Self::path_in(dir, reading);
        if path.exists() {
            let cache = Self::load(&path)?;
            if cache.reading == reading
                && cache.anchor == reading.anchor_label()
                && cache.check_model(model).is_ok()
            {
                return Ok((cache, false));
            }
        }
        let cache = Self::for_model(model, image_shape, reading, DEFAULT_CACHE_SAMPLES, 0)?;
        cache.save(&path)?;
        Ok((cache, true))
    }

    /// Check that the cache fits `model`: same number of classes and, when recorded, the same
    /// fingerprint.
    pub fn check_model(&self, model: &DeepRbm) -> Result<()> {
        if self.n_classes() != model.n_outputs() {
            return Err(Error::shape(format!(
                "poison cache has {} classes, the model {} outputs",
                self.n_classes(),
                model.n_outputs()
            )));
        }
        let fp = format!("{:016x}", model.fingerprint());
        if !self.model_fingerprint.is_empty() && self.model_fingerprint != fp {
            return Err(Error::invalid(format!(
                "poison cache was computed for model {}, this model is {fp}",
                self.model_fingerprint
            )));
        }
        Ok(())
    }

    /// Write as pretty JSON, atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// Read and validate a cache written by [`PoisonCache::save`]; errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: PoisonCache = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(format!("{}: malformed poison cache: {e}", path.display()))
        })?;
        c.validate()
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        Ok(c)
    }
}

/// RG poisoning (SPEC §8, paper eq. 19): `ŷ' = ŷ + t·s·u_c`, `c = argmax(ŷ)`, `u_c` from a
/// [`PoisonCache`]; s and t per query by [`poison_step`]. Keeps the argmax.
#[derive(Clone, Debug)]
pub struct RgPoison {
    cache: PoisonCache,
    eps: f64,
    margin: f64,
    sign_rule: SignRule,
}

impl RgPoison {
    /// ε (maximal step) and margin finite and ≥ 0; the cache is validated.
    pub fn new(cache: PoisonCache, eps: f64, margin: f64, sign_rule: SignRule) -> Result<Self> {
        check_eps_margin(eps, margin)?;
        cache.validate()?;
        Ok(RgPoison {
            cache,
            eps,
            margin,
            sign_rule,
        })
    }

    /// The cache in use.
    pub fn cache(&self) -> &PoisonCache {
        &self.cache
    }

    /// The poisoned output of one query with the step taken.
    pub fn step(&self, y: &[f32], seed: u64) -> Result<PoisonStep> {
        if y.len() != self.cache.n_classes() {
            return Err(Error::shape(format!(
                "served output has {} values, the poison cache {} classes",
                y.len(),
                self.cache.n_classes()
            )));
        }
        check_served(y)?;
        let u = &self.cache.per_class[argmax(y)];
        poison_step(y, u, self.eps, self.margin, self.sign_rule, seed)
    }
}

fn reading_letter(r: OutputReading) -> &'static str {
    match r {
        OutputReading::PlugIn => "P",
        OutputReading::Mixture => "C",
    }
}

fn sign_suffix(rule: SignRule) -> &'static str {
    match rule {
        SignRule::Feasible => "",
        SignRule::Seeded => ", sign=seeded",
    }
}

impl Defence for RgPoison {
    fn name(&self) -> String {
        format!(
            "rg({}, eps={}{})",
            reading_letter(self.cache.reading),
            self.eps,
            sign_suffix(self.sign_rule)
        )
    }
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        Ok(self.step(q.y, q.seed)?.output)
    }
    fn keeps_argmax(&self) -> bool {
        true
    }
}

/// A pseudo-random unit sum-zero vector of length `n ≥ 2` from `seed`: standard normal components,
/// mean subtracted, normalised (isotropic on the sum-zero sphere).
pub fn random_sum_zero_unit(n: usize, seed: u64) -> Result<Vec<f64>> {
    if n < 2 {
        return Err(Error::invalid(format!(
            "a sum-zero direction needs at least 2 components, got {n}"
        )));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(seed, DIRECTION_TAG));
    loop {
        let mut v: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng) as f64).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        v.iter_mut().for_each(|x| *x -= mean);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        // Norm ~ sqrt(n − 1); a near-zero draw has probability ~0 but is redrawn, not divided by.
        if norm > 1e-6 {
            v.iter_mut().for_each(|x| *x /= norm);
            return Ok(v);
        }
    }
}

/// The control of SPEC §9: the mechanism of [`RgPoison`] (same ε, margin, sign rule and
/// guarantees, the same [`poison_step`]) along a pseudo-random unit sum-zero direction drawn from
/// the query seed ([`random_sum_zero_unit`]).
#[derive(Clone, Copy, Debug)]
pub struct RandomDirection {
    eps: f64,
    margin: f64,
    sign_rule: SignRule,
}

impl RandomDirection {
    /// ε and margin finite and ≥ 0.
    pub fn new(eps: f64, margin: f64, sign_rule: SignRule) -> Result<Self> {
        check_eps_margin(eps, margin)?;
        Ok(RandomDirection {
            eps,
            margin,
            sign_rule,
        })
    }

    /// The defended output of one query with the step taken.
    pub fn step(&self, y: &[f32], seed: u64) -> Result<PoisonStep> {
        let u = random_sum_zero_unit(y.len(), seed)?;
        poison_step(y, &u, self.eps, self.margin, self.sign_rule, seed)
    }
}

impl Defence for RandomDirection {
    fn name(&self) -> String {
        format!("random(eps={}{})", self.eps, sign_suffix(self.sign_rule))
    }
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        Ok(self.step(q.y, q.seed)?.output)
    }
    fn keeps_argmax(&self) -> bool {
        true
    }
}
