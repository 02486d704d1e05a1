//! Training (SPEC §3): the seed's layerwise KL rule, eq. 14, and a documented hybrid.
//!
//! **Eq. 14.** For RBM k the target over pairs is
//! `P_k(h_k, h_{k-1}) = Σ_{x,y} p(x,y) q̃_k(h_k|y) q_{k-1}(h_{k-1}|x)`: `h_{k-1}` is drawn up the
//! classification network from x, `h_k` down the generation network from the one-hot y. The
//! gradient of `KL(P_k ‖ t_k)` is data moments minus model moments; the model moments come from
//! block Gibbs chains of `t_k` (CD-k, or persistent chains). Layers are swept until the held-out
//! accuracy stops improving.
//!
//! **Initialisation.** From a random start, deep stacks stay at chance (the middle layers see noise
//! on both sides, SPEC §3), so RBMs 1…N-1 are first pretrained greedily by CD on up-samples of x
//! (a deep belief net), then eq. 14 sweeps run.
//!
//! **Hybrid** ([`Method::Hybrid`]): the same pretraining, then mean-field back-propagation
//! fine-tuning of all `W_k, a_k` (per-unit Bernoulli cross-entropy of the one-hot label under the
//! output layer's factorised conditional, Adam), then eq. 14 refinement sweeps at a small learning
//! rate, keeping the refinement step with the best held-out accuracy (step 0 = no refinement).

use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::linalg::gemm_atb_acc;
use crate::model::{check_widths, DeepRbm, Rbm};
use crate::sample::{bernoulli, gibbs, gibbs_from, sample_down, sample_up, OutputMode, Predictor};
use crate::util::mix_seed;

/// Which training procedure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Greedy CD pretraining, then eq. 14 sweeps (the seed's rule).
    Eq14,
    /// Greedy CD pretraining, mean-field back-propagation fine-tuning, then eq. 14 refinement.
    Hybrid,
}

/// What the eq. 14 data pairs hold in their last sampled step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Targets {
    /// Binary samples on both sides.
    Samples,
    /// The conditional probabilities of the last step on each side (Rao-Blackwellised: an
    /// unbiased estimate of the same moments, since the two sides are independent given (x, y)).
    Probs,
}

impl Targets {
    /// The last layer of an ancestral pass, as samples or as probabilities.
    fn last_step(self, mut layers: Vec<crate::sample::LayerBatch>) -> Vec<f32> {
        // Callers always sample at least one layer (k ≥ 2 upward, k < N downward).
        let last = layers
            .pop()
            .expect("an ancestral pass of at least one layer");
        match self {
            Targets::Samples => last.states,
            Targets::Probs => last.probs,
        }
    }
}

/// Order in which a sweep visits the layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SweepOrder {
    /// N, N-1, …, 1: each layer's upper targets come from freshly updated layers above it.
    TopDown,
    /// 1, 2, …, N.
    BottomUp,
}

/// Training configuration; every field is recorded in `model.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub method: Method,
    pub seed: u64,
    /// Standard deviation of the initial Gaussian weights.
    pub init_scale: f32,
    /// Greedy CD epochs per RBM 1…N-1 (0 = none).
    pub pretrain_epochs: usize,
    /// Learning rate of the greedy pretraining.
    pub pretrain_lr: f32,
    /// Maximum eq. 14 sweeps (for the hybrid: refinement sweeps).
    pub sweeps: usize,
    /// Passes over the training data for one layer within one sweep.
    pub epochs_per_layer: usize,
    /// Eq. 14 learning rate (for the hybrid: the refinement rate).
    pub lr: f32,
    /// Multiplicative learning-rate decay per sweep.
    pub lr_decay: f32,
    /// Eq. 14 learning rate of RBMs 1…N-1 relative to the top RBM N (per-layer rates: the lower
    /// layers' targets come down the generation network and carry little class information early
    /// on, so full-rate updates can wash out the pretrained features).
    pub lower_lr_factor: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub batch: usize,
    /// Gibbs steps for the model moments.
    pub cd_k: usize,
    /// Persistent chains (PCD) instead of chains restarted at the data.
    pub persistent: bool,
    pub targets: Targets,
    pub sweep_order: SweepOrder,
    /// Fraction of the training split held out for early stopping.
    pub holdout_frac: f64,
    /// Sweeps (or fine-tuning epochs) without held-out improvement before stopping.
    pub patience: usize,
    /// Samples S of the served output when accuracy is measured during training.
    pub eval_samples: usize,
    /// Hybrid: mean-field fine-tuning epochs (maximum; early-stopped).
    pub finetune_epochs: usize,
    /// Hybrid: Adam learning rate of the fine-tuning.
    pub finetune_lr: f32,
    /// Hybrid: fine-tune through sampled hidden states (straight-through) instead of mean field.
    pub finetune_stochastic: bool,
    /// Hybrid: probability of flipping each input value (x → 1 − x) in fine-tuning batches, a
    /// data augmentation for binary images (0 = none).
    pub finetune_input_noise: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Hybrid,
            seed: 1,
            init_scale: 0.01,
            pretrain_epochs: 10,
            pretrain_lr: 0.05,
            sweeps: 40,
            epochs_per_layer: 2,
            lr: 0.05,
            lr_decay: 0.97,
            lower_lr_factor: 1.0,
            momentum: 0.5,
            weight_decay: 1e-4,
            batch: 50,
            cd_k: 1,
            persistent: false,
            targets: Targets::Probs,
            sweep_order: SweepOrder::TopDown,
            holdout_frac: 0.1,
            patience: 8,
            eval_samples: 16,
            finetune_epochs: 200,
            finetune_lr: 0.003,
            finetune_stochastic: false,
            finetune_input_noise: 0.0,
        }
    }
}

impl TrainConfig {
    /// The documented defaults of `rgshield train --method M` (README, "Training"): for eq. 14,
    /// strong greedy pretraining then eq. 14 sweeps with the lower layers at 5% of the top layer's
    /// rate; for the hybrid, a random start at sigmoid-Glorot scale, stochastic back-propagation
    /// fine-tuning with 5% input bit flips, then a few eq. 14 refinement sweeps at a small rate.
    pub fn defaults_for(method: Method, seed: u64) -> Self {
        let mut c = TrainConfig {
            method,
            seed,
            ..TrainConfig::default()
        };
        match method {
            Method::Eq14 => {
                c.pretrain_epochs = 60;
                c.pretrain_lr = 0.1;
                c.lr = 0.1;
                c.lr_decay = 0.99;
                c.lower_lr_factor = 0.05;
                c.epochs_per_layer = 3;
                c.sweeps = 60;
                c.patience = 10;
            }
            Method::Hybrid => {
                c.init_scale = 0.5;
                c.pretrain_epochs = 0;
                c.finetune_stochastic = true;
                c.finetune_input_noise = 0.05;
                c.lr = 0.002;
                c.sweeps = 10;
            }
        }
        c
    }

    /// Reject values outside their domain before any work starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, v: String| Err(Error::invalid(format!("training config {f} = {v}")));
        if self.batch == 0 {
            return bad("batch", "0 (must be ≥ 1)".into());
        }
        if self.cd_k == 0 {
            return bad("cd_k", "0 (must be ≥ 1)".into());
        }
        for (f, v) in [
            ("lr", self.lr),
            ("pretrain_lr", self.pretrain_lr),
            ("finetune_lr", self.finetune_lr),
            ("init_scale", self.init_scale),
            ("lower_lr_factor", self.lower_lr_factor),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(f, format!("{v} (must be finite and ≥ 0)"));
            }
        }
        if !(0.0..0.9).contains(&self.holdout_frac) {
            return bad(
                "holdout_frac",
                format!("{} (must be in [0, 0.9))", self.holdout_frac),
            );
        }
        if !(0.0..=0.5).contains(&self.finetune_input_noise) {
            return bad(
                "finetune_input_noise",
                format!("{} (must be in [0, 0.5])", self.finetune_input_noise),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", format!("{} (must be in [0, 1))", self.momentum));
        }
        Ok(())
    }
}

/// One row of the training history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryRow {
    /// "pretrain", "eq14", "finetune" or "refine".
    pub phase: String,
    /// Sweep, epoch or layer index within the phase.
    pub step: usize,
    pub train_accuracy: f64,
    pub holdout_accuracy: f64,
    /// Held-out mean per-unit Bernoulli cross-entropy of the one-hot label under the served ŷ.
    pub holdout_loss: f64,
    /// Per RBM k = 1…N: mean conditional cross-entropy per unit of the eq. 14 data pairs,
    /// `−[log t_k(h_k|h_{k-1}) + log t_k(h_{k-1}|h_k)] / (n_k + n_{k-1})` (a KL proxy).
    pub layer_proxy: Vec<f64>,
    pub seconds: f64,
}

/// What training returns besides the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub history: Vec<HistoryRow>,
    pub train_accuracy: f64,
    pub holdout_accuracy: f64,
    /// Held-out accuracy after each stage (e.g. "pretrain", "eq14", "finetune", "refine").
    pub stages: Vec<(String, f64)>,
    pub seconds: f64,
}

/// Training data as seen by the trainer: inputs and top-layer targets (one-hot labels, or the
/// served outputs an attacker received), with a held-out part.
struct Prepared {
    fit: Split,
    fit_targets: Vec<f32>,
    holdout: Split,
    n_classes: usize,
}

fn one_hot(y: &[u32], n: usize) -> Vec<f32> {
    let mut o = vec![0.0; y.len() * n];
    for (i, &c) in y.iter().enumerate() {
        o[i * n + c as usize] = 1.0;
    }
    o
}

/// The rows `idx` of a split, in that order.
pub fn subset(s: &Split, idx: &[usize]) -> Split {
    let mut x = Vec::with_capacity(idx.len() * s.n_features);
    for &i in idx {
        x.extend_from_slice(s.row(i));
    }
    Split {
        x,
        y: idx.iter().map(|&i| s.y[i]).collect(),
        n_features: s.n_features,
    }
}

fn shuffle<R: rand::Rng>(v: &mut [usize], rng: &mut R) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

fn prepare(data: &Dataset, cfg: &TrainConfig) -> Result<Prepared> {
    let n = data.train.len();
    if n == 0 {
        return Err(Error::invalid(format!(
            "data set '{}': empty training split",
            data.name
        )));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(cfg.seed, 0x5917));
    shuffle(&mut idx, &mut rng);
    let n_hold = ((n as f64) * cfg.holdout_frac).round() as usize;
    let (hold_idx, fit_idx) = idx.split_at(n_hold);
    let mut fit_idx = fit_idx.to_vec();
    fit_idx.sort_unstable();
    let mut hold_idx = hold_idx.to_vec();
    hold_idx.sort_unstable();
    let fit = subset(&data.train, &fit_idx);
    let holdout = subset(&data.train, &hold_idx);
    let n_classes = data.n_classes();
    Ok(Prepared {
        fit_targets: one_hot(&fit.y, n_classes),
        fit,
        holdout,
        n_classes,
    })
}

/// Check that widths fit the data (first = input size, last = number of classes).
pub fn check_widths_fit(widths: &[usize], data: &Dataset) -> Result<()> {
    check_widths(widths)?;
    if widths[0] != data.n_features() {
        return Err(Error::shape(format!(
            "widths start with {} but data set '{}' has {} input features",
            widths[0],
            data.name,
            data.n_features()
        )));
    }
    let last = widths[widths.len() - 1];
    if last != data.n_classes() {
        return Err(Error::shape(format!(
            "widths end with {last} but data set '{}' has {} classes",
            data.name,
            data.n_classes()
        )));
    }
    Ok(())
}

/// The eq. 14 data pairs for RBM k on a minibatch: `(upper h_k, lower h_{k-1})`, row-major.
/// Lower: x (k = 1) or drawn up the classification network from x through RBMs 1…k-1.
/// Upper: y (k = N) or drawn down the generation network from y through RBMs N…k+1.
/// With [`Targets::Probs`] the last sampled step on each side is replaced by its conditional
/// probabilities (inputs and labels themselves are never replaced).
pub fn eq14_pairs<R: rand::Rng>(
    model: &DeepRbm,
    k: usize,
    x: &[f32],
    y: &[f32],
    batch: usize,
    targets: Targets,
    rng: &mut R,
) -> (Vec<f32>, Vec<f32>) {
    let n = model.depth();
    let pick = |layers: Vec<crate::sample::LayerBatch>| targets.last_step(layers);
    let lower = if k == 1 {
        x.to_vec()
    } else {
        pick(sample_up(model, x, batch, k - 1, rng))
    };
    let upper = if k == n {
        y.to_vec()
    } else {
        pick(sample_down(model, y, batch, k, rng))
    };
    (upper, lower)
}

/// Moments `⟨u lᵀ⟩, ⟨u⟩, ⟨l⟩` of a batch of paired rows (upper width `nu`, lower width `nl`).
pub fn pair_moments(upper: &[f32], lower: &[f32], batch: usize, nu: usize, nl: usize) -> Moments {
    let mut w = vec![0.0; nu * nl];
    gemm_atb_acc(&mut w, upper, lower, batch, nu, nl, 1.0 / batch as f32);
    Moments {
        w,
        a: column_means(upper, batch, nu),
        b: column_means(lower, batch, nl),
    }
}

fn column_means(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut s = vec![0.0f32; cols];
    for r in m.chunks_exact(cols) {
        for (a, &v) in s.iter_mut().zip(r) {
            *a += v;
        }
    }
    s.iter_mut().for_each(|v| *v /= rows as f32);
    s
}

/// Second and first moments of one RBM's two layers.
#[derive(Clone, Debug)]
pub struct Moments {
    /// `⟨h_k h_{k-1}ᵀ⟩`, row-major `n_k × n_{k-1}`.
    pub w: Vec<f32>,
    /// `⟨h_k⟩`.
    pub a: Vec<f32>,
    /// `⟨h_{k-1}⟩`.
    pub b: Vec<f32>,
}

/// Learning rule of contrastive divergence (CD-k) for one RBM.
#[derive(Clone, Copy, Debug)]
pub struct CdParams {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Gibbs steps k of the negative phase.
    pub steps: usize,
}

/// One CD-k update of `rbm` on a batch of `batch` lower-layer rows `v`: data moments
/// `⟨σ(Wv + a) vᵀ⟩` minus the moments after `steps` block Gibbs rounds started at the data, through
/// the momentum step. The greedy pretraining's update (and `bench perf`'s CD epoch).
pub fn cd_update<R: rand::Rng>(
    rbm: &mut Rbm,
    vel: &mut Velocity,
    v: &[f32],
    batch: usize,
    p: &CdParams,
    rng: &mut R,
) {
    let ph = rbm.up_probs(v, batch);
    let g = gibbs_from(rbm, v, ph.clone(), batch, p.steps, rng);
    let grad = moment_difference(&ph, v, &g.h_probs, &g.v, batch, rbm.n_up, rbm.n_down);
    vel.step(rbm, &grad, p.lr, p.momentum, p.weight_decay);
}

/// The KL gradient of eq. 14 / CD: data moments minus model moments, `⟨u lᵀ⟩_data − ⟨u lᵀ⟩_model`
/// (and the first-moment differences), each side a batch of `batch` rows (`u`: `batch × nu`,
/// `l`: `batch × nl`). Both products accumulate into one `nu × nl` matrix (the model's with
/// weight −1/batch) instead of forming two second-moment matrices and their difference
/// (`docs/performance.md`).
pub fn moment_difference(
    data_u: &[f32],
    data_l: &[f32],
    model_u: &[f32],
    model_l: &[f32],
    batch: usize,
    nu: usize,
    nl: usize,
) -> Moments {
    let mut w = vec![0.0; nu * nl];
    let inv = 1.0 / batch as f32;
    gemm_atb_acc(&mut w, data_u, data_l, batch, nu, nl, inv);
    gemm_atb_acc(&mut w, model_u, model_l, batch, nu, nl, -inv);
    let diff =
        |d: Vec<f32>, m: Vec<f32>| -> Vec<f32> { d.iter().zip(&m).map(|(d, m)| d - m).collect() };
    Moments {
        w,
        a: diff(
            column_means(data_u, batch, nu),
            column_means(model_u, batch, nu),
        ),
        b: diff(
            column_means(data_l, batch, nl),
            column_means(model_l, batch, nl),
        ),
    }
}

/// One epoch of CD-k over `rows` rows of `x` (row-major, `rbm.n_down` wide) in shuffled batches of
/// `batch` (the last one shorter).
pub fn cd_epoch<R: rand::Rng>(
    rbm: &mut Rbm,
    vel: &mut Velocity,
    x: &[f32],
    batch: usize,
    p: &CdParams,
    rng: &mut R,
) {
    let rows = x.len() / rbm.n_down;
    let mut order: Vec<usize> = (0..rows).collect();
    shuffle(&mut order, rng);
    for chunk in order.chunks(batch.max(1)) {
        let v = batch_rows(x, chunk, rbm.n_down);
        cd_update(rbm, vel, &v, chunk.len(), p, rng);
    }
}

/// Momentum SGD state for one RBM.
pub struct Velocity {
    w: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Velocity {
    /// Zero velocity for `r`'s parameters.
    pub fn new(r: &Rbm) -> Self {
        Velocity {
            w: vec![0.0; r.w.len()],
            a: vec![0.0; r.a.len()],
            b: vec![0.0; r.b.len()],
        }
    }
    /// `v ← m v + lr (grad − wd·W)` (no decay on biases), then `θ ← θ + v`; `grad` is the
    /// data-minus-model [`moment_difference`].
    fn step(&mut self, r: &mut Rbm, grad: &Moments, lr: f32, mom: f32, wd: f32) {
        for ((v, w), g) in self.w.iter_mut().zip(&mut r.w).zip(&grad.w) {
            *v = mom * *v + lr * (g - wd * *w);
            *w += *v;
        }
        for (vel, par, g) in [
            (&mut self.a, &mut r.a, &grad.a),
            (&mut self.b, &mut r.b, &grad.b),
        ] {
            for ((v, p), g) in vel.iter_mut().zip(par.iter_mut()).zip(g) {
                *v = mom * *v + lr * g;
                *p += *v;
            }
        }
    }
}

fn batch_rows(s: &[f32], idx: &[usize], width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * width);
    for &i in idx {
        out.extend_from_slice(&s[i * width..(i + 1) * width]);
    }
    out
}

/// Trains a deep RBM classifier on `data` with widths `n_0 … n_N`.
pub struct Trainer<'a> {
    cfg: &'a TrainConfig,
    prep: Prepared,
    rng: Xoshiro256PlusPlus,
    start: Instant,
    history: Vec<HistoryRow>,
    progress: Option<indicatif::ProgressBar>,
}

impl<'a> Trainer<'a> {
    pub fn new(data: &Dataset, cfg: &'a TrainConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self::with_prepared(prepare(data, cfg)?, cfg))
    }

    /// A trainer on given top-layer targets instead of one-hot labels (SPEC §9: a clone trained on
    /// `(x, ŷ')`): `targets` is `fit.len() × n_classes` row-major, finite and in [0,1], entering
    /// eq. 14 as the top layer's values (reading (P), seed eq. 23) and the fine-tuning loss as soft
    /// labels. `fit.y` and `holdout.y` are the labels used for the reported accuracies and early
    /// stopping (for an attacker: the argmax of what was served).
    pub fn with_targets(
        fit: Split,
        targets: Vec<f32>,
        holdout: Split,
        n_classes: usize,
        cfg: &'a TrainConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        if fit.is_empty() {
            return Err(Error::invalid("training on targets: no rows"));
        }
        if targets.len() != fit.len() * n_classes {
            return Err(Error::shape(format!(
                "training on targets: {} target values for {} rows of {n_classes} classes",
                targets.len(),
                fit.len()
            )));
        }
        if let Some(i) = targets
            .iter()
            .position(|v| !(v.is_finite() && (0.0..=1.0).contains(v)))
        {
            return Err(Error::invalid(format!(
                "training on targets: target[{}][{}] = {} is not in [0, 1]",
                i / n_classes,
                i % n_classes,
                targets[i]
            )));
        }
        for (what, split) in [("fit", &fit), ("holdout", &holdout)] {
            if split.x.len() != split.len() * split.n_features || split.n_features != fit.n_features
            {
                return Err(Error::shape(format!(
                    "training on targets: {what} split has {} values for {} rows of {} features",
                    split.x.len(),
                    split.len(),
                    fit.n_features
                )));
            }
            if let Some(&c) = split.y.iter().find(|&&c| c as usize >= n_classes) {
                return Err(Error::invalid(format!(
                    "training on targets: {what} label {c} with {n_classes} classes"
                )));
            }
        }
        Ok(Self::with_prepared(
            Prepared {
                fit,
                fit_targets: targets,
                holdout,
                n_classes,
            },
            cfg,
        ))
    }

    fn with_prepared(prep: Prepared, cfg: &'a TrainConfig) -> Self {
        Trainer {
            cfg,
            prep,
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            start: Instant::now(),
            history: Vec::new(),
            progress: None,
        }
    }

    /// Show a progress bar (for the CLI).
    pub fn with_progress(mut self, bar: indicatif::ProgressBar) -> Self {
        self.progress = Some(bar);
        self
    }

    /// Run the configured method from a fresh random initialisation.
    pub fn train(mut self, widths: &[usize]) -> Result<(DeepRbm, TrainOutcome)> {
        check_widths(widths)?;
        if widths[0] != self.prep.fit.n_features || widths[widths.len() - 1] != self.prep.n_classes
        {
            return Err(Error::shape(format!(
                "widths {widths:?} do not fit {} features and {} classes",
                self.prep.fit.n_features, self.prep.n_classes
            )));
        }
        let mut model = DeepRbm::random(widths, self.cfg.init_scale, &mut self.rng)?;
        let n = model.depth();
        let total = self.cfg.pretrain_epochs * (n - 1)
            + self.cfg.sweeps
            + if self.cfg.method == Method::Hybrid {
                self.cfg.finetune_epochs
            } else {
                0
            };
        if let Some(p) = &self.progress {
            p.set_length(total as u64);
        }
        let mut stages = Vec::new();
        self.pretrain(&mut model);
        let h = self.record(&model, "pretrain", 0).0;
        stages.push(("pretrain".to_string(), h));
        match self.cfg.method {
            Method::Eq14 => {
                let h = self.eq14_sweeps(&mut model, "eq14", self.cfg.lr)?;
                stages.push(("eq14".to_string(), h));
            }
            Method::Hybrid => {
                let h = self.finetune(&mut model);
                stages.push(("finetune".to_string(), h));
                let h = self.eq14_sweeps(&mut model, "refine", self.cfg.lr)?;
                stages.push(("refine".to_string(), h));
            }
        }
        if let Some(p) = &self.progress {
            p.finish_and_clear();
        }
        let predictor = self.predictor(&model);
        let outcome = TrainOutcome {
            train_accuracy: predictor.accuracy(&self.prep.fit),
            holdout_accuracy: predictor.accuracy(&self.prep.holdout),
            history: self.history,
            stages,
            seconds: self.start.elapsed().as_secs_f64(),
        };
        Ok((model, outcome))
    }

    fn predictor<'m>(&self, model: &'m DeepRbm) -> Predictor<'m> {
        Predictor::new(
            model,
            OutputMode::Served {
                samples: self.cfg.eval_samples,
                seed: self.cfg.seed,
            },
        )
    }

    fn tick(&self) {
        if let Some(p) = &self.progress {
            p.inc(1);
        }
    }

    /// Append a history row; returns the held-out accuracy.
    /// Append a history row; returns the held-out (accuracy, loss) of the served output.
    fn record(&mut self, model: &DeepRbm, phase: &str, step: usize) -> (f64, f64) {
        let p = self.predictor(model);
        let hold = if self.prep.holdout.is_empty() {
            &self.prep.fit
        } else {
            &self.prep.holdout
        };
        let (accuracy, loss) = served_scores(&p, hold, self.prep.n_classes);
        let row = HistoryRow {
            phase: phase.to_string(),
            step,
            train_accuracy: p.accuracy(&self.prep.fit),
            holdout_accuracy: accuracy,
            holdout_loss: loss,
            layer_proxy: self.layer_proxy(model),
            seconds: self.start.elapsed().as_secs_f64(),
        };
        if let Some(bar) = &self.progress {
            bar.set_message(format!("{phase} {step}: held-out {accuracy:.3}"));
        }
        self.history.push(row);
        (accuracy, loss)
    }

    /// Mean conditional cross-entropy of eq. 14 data pairs under each RBM (see [`HistoryRow`]).
    fn layer_proxy(&mut self, model: &DeepRbm) -> Vec<f64> {
        let rows = self.prep.fit.len().min(500);
        let idx: Vec<usize> = (0..rows).collect();
        let n0 = self.prep.fit.n_features;
        let x = batch_rows(&self.prep.fit.x, &idx, n0);
        let y = batch_rows(&self.prep.fit_targets, &idx, self.prep.n_classes);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(self.cfg.seed, 0xC0FFEE));
        (1..=model.depth())
            .map(|k| {
                let (u, l) = eq14_pairs(model, k, &x, &y, rows, Targets::Samples, &mut rng);
                let r = model.rbm(k);
                let pu = r.up_probs(&l, rows);
                let pl = r.down_probs(&u, rows);
                let xent = |p: &[f32], t: &[f32]| -> f64 {
                    p.iter()
                        .zip(t)
                        .map(|(&p, &t)| {
                            let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
                            -(t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln())
                        })
                        .sum()
                };
                (xent(&pu, &u) + xent(&pl, &l)) / (rows * (r.n_up + r.n_down)) as f64
            })
            .collect()
    }

    /// Greedy CD pretraining of RBMs 1…N-1 on up-samples of x (a deep belief net).
    fn pretrain(&mut self, model: &mut DeepRbm) {
        let n = model.depth();
        let cfg = self.cfg;
        let rows = self.prep.fit.len();
        let n0 = self.prep.fit.n_features;
        let cd = CdParams {
            lr: cfg.pretrain_lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            steps: cfg.cd_k,
        };
        for k in 1..n {
            let mut vel = Velocity::new(model.rbm(k));
            for _epoch in 0..cfg.pretrain_epochs {
                let mut order: Vec<usize> = (0..rows).collect();
                shuffle(&mut order, &mut self.rng);
                for chunk in order.chunks(cfg.batch) {
                    let b = chunk.len();
                    let x = batch_rows(&self.prep.fit.x, chunk, n0);
                    let v = if k == 1 {
                        x
                    } else {
                        cfg.targets
                            .last_step(sample_up(model, &x, b, k - 1, &mut self.rng))
                    };
                    cd_update(
                        &mut model.layers[k - 1],
                        &mut vel,
                        &v,
                        b,
                        &cd,
                        &mut self.rng,
                    );
                }
                self.tick();
            }
        }
    }

    /// One epoch of eq. 14 updates of RBM k over the fitting data.
    fn eq14_epoch(
        &mut self,
        model: &mut DeepRbm,
        k: usize,
        lr: f32,
        vel: &mut Velocity,
        chains: &mut Option<Vec<f32>>,
    ) {
        let cfg = self.cfg;
        let rows = self.prep.fit.len();
        let (n0, nc) = (self.prep.fit.n_features, self.prep.n_classes);
        let mut order: Vec<usize> = (0..rows).collect();
        shuffle(&mut order, &mut self.rng);
        for chunk in order.chunks(cfg.batch) {
            let b = chunk.len();
            let x = batch_rows(&self.prep.fit.x, chunk, n0);
            let y = batch_rows(&self.prep.fit_targets, chunk, nc);
            let (u, l) = eq14_pairs(model, k, &x, &y, b, cfg.targets, &mut self.rng);
            let r = model.rbm(k);
            let start: Vec<f32> = match chains {
                Some(c) if cfg.persistent && c.len() == l.len() => c.clone(),
                _ => bernoulli(&l, &mut self.rng),
            };
            let g = gibbs(r, &start, b, cfg.cd_k, &mut self.rng);
            let grad = moment_difference(&u, &l, &g.h_probs, &g.v, b, r.n_up, r.n_down);
            if cfg.persistent {
                *chains = Some(g.v);
            }
            vel.step(
                &mut model.layers[k - 1],
                &grad,
                lr,
                cfg.momentum,
                cfg.weight_decay,
            );
        }
    }

    /// Eq. 14 sweeps with early stopping on the held-out accuracy; the best model is restored.
    /// Returns the best held-out accuracy (including the starting point, sweep 0).
    fn eq14_sweeps(&mut self, model: &mut DeepRbm, phase: &str, lr0: f32) -> Result<f64> {
        let cfg = self.cfg;
        let n = model.depth();
        let mut best = (self.record(model, phase, 0).0, model.clone());
        let mut vels: Vec<Velocity> = model.layers.iter().map(Velocity::new).collect();
        let mut chains: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut since = 0;
        let mut lr = lr0;
        let order: Vec<usize> = match cfg.sweep_order {
            SweepOrder::TopDown => (1..=n).rev().collect(),
            SweepOrder::BottomUp => (1..=n).collect(),
        };
        for sweep in 1..=cfg.sweeps {
            for &k in &order {
                let lr_k = if k == n { lr } else { lr * cfg.lower_lr_factor };
                if lr_k == 0.0 {
                    continue;
                }
                for _ in 0..cfg.epochs_per_layer {
                    self.eq14_epoch(model, k, lr_k, &mut vels[k - 1], &mut chains[k - 1]);
                }
            }
            model.validate().map_err(|e| {
                Error::invalid(format!(
                    "eq. 14 training diverged at sweep {sweep}: {e}; lower --lr"
                ))
            })?;
            lr *= cfg.lr_decay;
            self.tick();
            let hold = self.record(model, phase, sweep).0;
            if hold > best.0 {
                best = (hold, model.clone());
                since = 0;
            } else {
                since += 1;
                if since >= cfg.patience {
                    break;
                }
            }
        }
        *model = best.1;
        Ok(best.0)
    }

    /// Mean-field back-propagation fine-tuning of all `W_k, a_k` with Adam (hybrid only).
    fn finetune(&mut self, model: &mut DeepRbm) -> f64 {
        let cfg = self.cfg;
        let rows = self.prep.fit.len();
        let (n0, nc) = (self.prep.fit.n_features, self.prep.n_classes);
        let mut adam = Adam::new(model, cfg.finetune_lr);
        // Selection by held-out loss: smoother than the accuracy of a small held-out set.
        let mut best = (self.record(model, "finetune", 0), model.clone());
        let mut since = 0;
        for epoch in 1..=cfg.finetune_epochs {
            let mut order: Vec<usize> = (0..rows).collect();
            shuffle(&mut order, &mut self.rng);
            for chunk in order.chunks(cfg.batch.min(32)) {
                let b = chunk.len();
                let mut x = batch_rows(&self.prep.fit.x, chunk, n0);
                if cfg.finetune_input_noise > 0.0 {
                    for v in &mut x {
                        if crate::sample::uniform_f32(&mut self.rng) < cfg.finetune_input_noise {
                            *v = 1.0 - *v;
                        }
                    }
                }
                let y = batch_rows(&self.prep.fit_targets, chunk, nc);
                let grads = if cfg.finetune_stochastic {
                    backprop_gradient(model, &x, &y, b, Some(&mut self.rng))
                } else {
                    mean_field_gradient(model, &x, &y, b)
                };
                adam.step(model, &grads, cfg.weight_decay);
            }
            self.tick();
            // Early stopping on the mean-field held-out accuracy every epoch would be cheap, but the
            // served output is what users get: check it every 5 epochs.
            if epoch % 5 == 0 || epoch == cfg.finetune_epochs {
                let hold = self.record(model, "finetune", epoch);
                if hold.1 < best.0 .1 {
                    best = (hold, model.clone());
                    since = 0;
                } else {
                    since += 5;
                    if since >= cfg.patience * 5 {
                        break;
                    }
                }
            }
        }
        *model = best.1;
        best.0 .0
    }
}

/// Accuracy and mean per-unit Bernoulli cross-entropy of the one-hot labels under `p`'s outputs.
pub fn served_scores(p: &Predictor, split: &Split, n_classes: usize) -> (f64, f64) {
    if split.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let out = p.outputs(&split.x, split.len());
    let mut hits = 0usize;
    let mut loss = 0.0f64;
    for (row, &c) in out.chunks_exact(n_classes).zip(&split.y) {
        if crate::sample::argmax(row) == c as usize {
            hits += 1;
        }
        for (i, &v) in row.iter().enumerate() {
            let q = (v as f64).clamp(1e-7, 1.0 - 1e-7);
            loss -= if i == c as usize {
                q.ln()
            } else {
                (1.0 - q).ln()
            };
        }
    }
    let n = split.len() as f64;
    (hits as f64 / n, loss / (n * n_classes as f64))
}

/// Gradients of the mean per-unit Bernoulli cross-entropy of one-hot `y` under the mean-field
/// network's output, w.r.t. each `W_k` and `a_k` (the down biases `b_k` do not enter).
pub fn mean_field_gradient(
    model: &DeepRbm,
    x: &[f32],
    y: &[f32],
    batch: usize,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    backprop_gradient(model, x, y, batch, None::<&mut Xoshiro256PlusPlus>)
}

/// Back-propagated gradients of the per-unit Bernoulli cross-entropy of one-hot `y` under the
/// output layer's conditional `σ(W_N s_{N-1} + a_N)`. With `rng = None`, `s_k = μ_k` (mean field).
/// With an `rng`, the hidden states are sampled, `s_k ~ Bern(σ(W_k s_{k-1} + a_k))`, as in the
/// served network, and the gradient passes through the sampling by the straight-through rule
/// (`∂s_k/∂μ_k = 1`): the loss is then the expected cross-entropy of one ancestral sample, an
/// upper bound (Jensen) on the cross-entropy of the served `ŷ`.
pub fn backprop_gradient<R: rand::Rng>(
    model: &DeepRbm,
    x: &[f32],
    y: &[f32],
    batch: usize,
    mut rng: Option<&mut R>,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let n = model.depth();
    // forward: probabilities μ_k and the states s_k fed to the next layer
    let mut mus: Vec<Vec<f32>> = Vec::with_capacity(n);
    let mut states: Vec<Vec<f32>> = Vec::with_capacity(n);
    for k in 1..=n {
        let below: &[f32] = if k == 1 { x } else { &states[k - 2] };
        let mu = model.rbm(k).up_probs(below, batch);
        let st = match rng.as_deref_mut() {
            Some(r) if k < n => bernoulli(&mu, r),
            _ => mu.clone(),
        };
        mus.push(mu);
        states.push(st);
    }
    let mut grads = vec![(Vec::new(), Vec::new()); n];
    // δ_N = (μ_N − y) / B
    let mut delta: Vec<f32> = mus[n - 1]
        .iter()
        .zip(y)
        .map(|(m, t)| (m - t) / batch as f32)
        .collect();
    for k in (1..=n).rev() {
        let r = model.rbm(k);
        let below: &[f32] = if k == 1 { x } else { &states[k - 2] };
        let mut gw = vec![0.0; r.w.len()];
        gemm_atb_acc(&mut gw, &delta, below, batch, r.n_up, r.n_down, 1.0);
        let ga = column_means(&delta, batch, r.n_up)
            .into_iter()
            .map(|v| v * batch as f32)
            .collect();
        if k > 1 {
            let mut back = vec![0.0; batch * r.n_down];
            crate::linalg::gemm_ab(&mut back, &delta, &r.w, batch, r.n_up, r.n_down);
            for (d, &m) in back.iter_mut().zip(&mus[k - 2]) {
                *d *= m * (1.0 - m);
            }
            delta = back;
        }
        grads[k - 1] = (gw, ga);
    }
    grads
}

/// Adam optimiser over all `W_k, a_k` (minimising).
struct Adam {
    lr: f32,
    t: i32,
    m: Vec<(Vec<f32>, Vec<f32>)>,
    v: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Adam {
    fn new(model: &DeepRbm, lr: f32) -> Self {
        let z: Vec<_> = model
            .layers
            .iter()
            .map(|l| (vec![0.0; l.w.len()], vec![0.0; l.a.len()]))
            .collect();
        Adam {
            lr,
            t: 0,
            m: z.clone(),
            v: z,
        }
    }
    fn step(&mut self, model: &mut DeepRbm, grads: &[(Vec<f32>, Vec<f32>)], wd: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for (k, layer) in model.layers.iter_mut().enumerate() {
            let upd = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], decay: f32| {
                for i in 0..p.len() {
                    let gi = g[i] + decay * p[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    p[i] -= self.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                }
            };
            let (mw, ma) = &mut self.m[k];
            let (vw, va) = &mut self.v[k];
            upd(&mut layer.w, &grads[k].0, mw, vw, wd);
            upd(&mut layer.a, &grads[k].1, ma, va, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact;

    fn tiny_stack(widths: &[usize], seed: u64) -> DeepRbm {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut m = DeepRbm::random(widths, 1.0, &mut rng).unwrap();
        for l in &mut m.layers {
            for (i, a) in l.a.iter_mut().enumerate() {
                *a = 0.2 * i as f32 - 0.3;
            }
            for (j, b) in l.b.iter_mut().enumerate() {
                *b = 0.1 - 0.15 * j as f32;
            }
        }
        m
    }

    /// Per-entry mean and standard error of a statistic over `reps` independent batches.
    fn mean_se(reps: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
        let r = reps.len() as f64;
        let d = reps[0].len();
        let mut mean = vec![0.0; d];
        let mut sq = vec![0.0; d];
        for v in reps {
            for i in 0..d {
                mean[i] += v[i] as f64 / r;
                sq[i] += (v[i] as f64).powi(2) / r;
            }
        }
        let se = (0..d)
            .map(|i| ((sq[i] - mean[i] * mean[i]).max(0.0) * r / (r - 1.0) / r).sqrt())
            .collect();
        (mean, se)
    }

    fn assert_within(est: &(Vec<f64>, Vec<f64>), exact: &[f64], what: &str) {
        for i in 0..exact.len() {
            let (m, se) = (est.0[i], est.1[i]);
            assert!(
                (m - exact[i]).abs() <= 4.0 * se + 1e-5, // 1e-5: f32 rounding
                "{what}[{i}]: estimate {m} ± {se} vs exact {}",
                exact[i]
            );
        }
    }

    fn data() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let xs = vec![
            vec![1.0, 0.0, 1.0, 0.0],
            vec![0.0, 1.0, 1.0, 1.0],
            vec![1.0, 1.0, 0.0, 0.0],
        ];
        let ys = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 1.0],
        ];
        (xs, ys)
    }

    #[test]
    fn eq14_data_moments_match_exact_for_samples_and_probs() {
        let m = tiny_stack(&[4, 4, 3, 3], 7);
        let (xs, ys) = data();
        let x: Vec<f32> = xs.concat();
        let y: Vec<f32> = ys.concat();
        for k in 1..=3 {
            let ex = exact::eq14(&m, k, &xs, &ys).unwrap();
            for targets in [Targets::Samples, Targets::Probs] {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(11 + k as u64);
                // each repetition: 100 passes over the 3 data points
                let reps: Vec<Vec<f32>> = (0..200)
                    .map(|_| {
                        let xb = x.repeat(100);
                        let yb = y.repeat(100);
                        let (u, l) = eq14_pairs(&m, k, &xb, &yb, 300, targets, &mut rng);
                        let r = m.rbm(k);
                        pair_moments(&u, &l, 300, r.n_up, r.n_down).w
                    })
                    .collect();
                assert_within(
                    &mean_se(&reps),
                    &ex.data_w,
                    &format!("k={k} {targets:?} data W"),
                );
            }
        }
    }

    /// Model moments of the joint `t_k` from Gibbs chains started at `v` (upper moments
    /// Rao-Blackwellised): the reference the training's fused gradient is checked against.
    fn model_moments<R: rand::Rng>(
        rbm: &Rbm,
        v: &[f32],
        batch: usize,
        steps: usize,
        rng: &mut R,
    ) -> (Moments, Vec<f32>) {
        let g = gibbs(rbm, v, batch, steps, rng);
        let m = pair_moments(&g.h_probs, &g.v, batch, rbm.n_up, rbm.n_down);
        (m, g.v)
    }

    #[test]
    fn moment_difference_is_data_minus_model_moments() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let (b, nu, nl) = (7, 5, 9);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random::<f32>()).collect() };
        let (du, dl, mu, ml) = (draw(b * nu), draw(b * nl), draw(b * nu), draw(b * nl));
        let g = moment_difference(&du, &dl, &mu, &ml, b, nu, nl);
        let (d, m) = (
            pair_moments(&du, &dl, b, nu, nl),
            pair_moments(&mu, &ml, b, nu, nl),
        );
        for (x, y) in [
            (&g.w, (&d.w, &m.w)),
            (&g.a, (&d.a, &m.a)),
            (&g.b, (&d.b, &m.b)),
        ] {
            assert_eq!(x.len(), y.0.len());
            for ((g, d), m) in x.iter().zip(y.0).zip(y.1) {
                assert!((g - (d - m)).abs() < 1e-6, "{g} vs {}", d - m);
            }
        }
    }

    #[test]
    fn cd_update_is_the_two_moment_rule_with_momentum_and_decay_on_w_only() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let mut rbm = Rbm::random(6, 4, 0.7, &mut rng);
        rbm.a = vec![0.2, -0.1, 0.0, 0.3];
        rbm.b = vec![-0.2, 0.1, 0.4, 0.0, -0.3, 0.2];
        let v: Vec<f32> = (0..5 * 6)
            .map(|i| ((i * 7 + 3) % 5 < 2) as u8 as f32)
            .collect();
        let p = CdParams {
            lr: 0.1,
            momentum: 0.5,
            weight_decay: 0.01,
            steps: 2,
        };
        // Reference: the two moment matrices of the data and of the chains, then the rule,
        // twice (so the momentum term is exercised), with the same random stream.
        let mut want = rbm.clone();
        let (mut vw, mut va, mut vb) = (vec![0.0f32; 24], vec![0.0f32; 4], vec![0.0f32; 6]);
        let mut rng_ref = Xoshiro256PlusPlus::seed_from_u64(9);
        for _ in 0..2 {
            let data = pair_moments(&want.up_probs(&v, 5), &v, 5, 4, 6);
            let (neg, _) = model_moments(&want, &v, 5, p.steps, &mut rng_ref);
            for i in 0..24 {
                vw[i] =
                    p.momentum * vw[i] + p.lr * (data.w[i] - neg.w[i] - p.weight_decay * want.w[i]);
                want.w[i] += vw[i];
            }
            for i in 0..4 {
                va[i] = p.momentum * va[i] + p.lr * (data.a[i] - neg.a[i]);
                want.a[i] += va[i];
            }
            for j in 0..6 {
                vb[j] = p.momentum * vb[j] + p.lr * (data.b[j] - neg.b[j]);
                want.b[j] += vb[j];
            }
        }
        let mut got = rbm.clone();
        let mut vel = Velocity::new(&got);
        let mut rng_cd = Xoshiro256PlusPlus::seed_from_u64(9);
        for _ in 0..2 {
            cd_update(&mut got, &mut vel, &v, 5, &p, &mut rng_cd);
        }
        for (g, w) in [(&got.w, &want.w), (&got.a, &want.a), (&got.b, &want.b)] {
            for (x, y) in g.iter().zip(w.iter()) {
                assert!((x - y).abs() < 1e-6, "{x} vs {y}");
            }
        }
        assert!(got.w.iter().zip(&rbm.w).any(|(x, y)| (x - y).abs() > 1e-3));
    }

    #[test]
    fn gibbs_model_moments_match_exact_joint() {
        let m = tiny_stack(&[4, 4, 3, 3], 8);
        let (xs, ys) = data();
        let k = 2;
        let ex = exact::eq14(&m, k, &xs, &ys).unwrap();
        let r = m.rbm(k);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let reps: Vec<Vec<f32>> = (0..100)
            .map(|_| {
                let v0 = bernoulli(&vec![0.5; 200 * r.n_down], &mut rng);
                let (mm, _) = model_moments(r, &v0, 200, 50, &mut rng);
                let mut all = mm.w;
                all.extend(mm.a);
                all.extend(mm.b);
                all
            })
            .collect();
        let mut exact_all = ex.model_w.clone();
        exact_all.extend(&ex.model_a);
        exact_all.extend(&ex.model_b);
        assert_within(&mean_se(&reps), &exact_all, "model moments");
    }

    #[test]
    fn mean_field_gradient_matches_finite_differences() {
        let m = tiny_stack(&[4, 3, 3, 3], 9);
        let (xs, ys) = data();
        let x: Vec<f32> = xs.concat();
        let y: Vec<f32> = ys.concat();
        let loss = |m: &DeepRbm| -> f64 {
            let out = crate::sample::mean_field_layers(m, &x, 3).pop().unwrap();
            out.iter()
                .zip(&y)
                .map(|(&p, &t)| -((t * p.ln() + (1.0 - t) * (1.0 - p).ln()) as f64))
                .sum::<f64>()
                / 3.0
        };
        let g = mean_field_gradient(&m, &x, &y, 3);
        for k in 0..3 {
            for idx in [0usize, 4, 7] {
                let mut mp = m.clone();
                let h = 1e-2f32;
                mp.layers[k].w[idx] += h;
                let lp = loss(&mp);
                mp.layers[k].w[idx] -= 2.0 * h;
                let lm = loss(&mp);
                let fd = (lp - lm) / (2.0 * h as f64);
                assert!(
                    (fd - g[k].0[idx] as f64).abs() < 2e-3,
                    "W{k}[{idx}]: fd {fd} vs {}",
                    g[k].0[idx]
                );
            }
            let mut mp = m.clone();
            mp.layers[k].a[1] += 1e-2;
            let lp = loss(&mp);
            mp.layers[k].a[1] -= 2e-2;
            let fd = (lp - loss(&mp)) / 2e-2;
            assert!(
                (fd - g[k].1[1] as f64).abs() < 2e-3,
                "a{k}: fd {fd} vs {}",
                g[k].1[1]
            );
        }
    }
}
