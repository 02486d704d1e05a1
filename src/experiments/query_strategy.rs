//! How a thief chooses its queries: the three strategies of the clone-evaluation protocol, in
//! one place so the guard measurements (`rgshield bench guard`) and the clone evaluation use the
//! same attackers.
//!
//! Every strategy talks to the victim through an [`Oracle`] (one served answer, a vector of `K`
//! values, per query), asks its queries one at a time in the order a real client would send
//! them, and returns the [`Transcript`]: the queries and the answers, in order. A budget `b`
//! clone is trained on the first `b` rows of the transcript, so one run serves every budget.
//!
//! * [`natural`] — the pool in a random order, topped up beyond the pool with copies whose
//!   pixels are flipped with probability `flip` (as `clone-eval` does).
//! * [`adaptive`] — KnockoffNets' adaptive strategy (T. Orekondy, B. Schiele, M. Fritz,
//!   "Knockoff Nets", CVPR 2019): the pool's own labels are the arms of a gradient bandit
//!   (Sutton & Barto, *Reinforcement Learning*, §2.8): preferences `H_a`, policy
//!   `π = softmax(H)`, reward `r = (1 − (p₁ − p₂)) + ‖y − ȳ‖₁/2` (uncertainty of the answer — top
//!   two probabilities — plus its difference from the running mean answer), update
//!   `H_a ← H_a + α (r − r̄)(1[a = chosen] − π_a)`. Each pull draws an unused image of the arm
//!   (a flipped copy once the arm is used up).
//! * [`jbda`] — Jacobian-based dataset augmentation (N. Papernot et al., "Practical Black-Box
//!   Attacks against Machine Learning", AsiaCCS 2017): a few seed images are labelled by the
//!   victim, a substitute MLP is trained on the labelled set `S`, and every `x ∈ S` gives a new
//!   query `clip(x + λ sign(∂F_{O(x)}/∂x), 0, 1)` (the substitute's logit of the victim's class);
//!   `S` doubles each round until the budget is spent.

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::data::Split;
use crate::error::{Error, Result};
use crate::model::mlp::{Mlp, MlpParams};
use crate::params::{Params, Valid};
use crate::sample::argmax;
use crate::util::shuffle;

/// The victim as a client sees it: one served answer (`K` values) per query.
pub trait Oracle {
    /// The answer to `x`.
    fn answer(&mut self, x: &[f32]) -> Vec<f32>;
}

impl<F: FnMut(&[f32]) -> Vec<f32>> Oracle for F {
    fn answer(&mut self, x: &[f32]) -> Vec<f32> {
        self(x)
    }
}

/// The queries of one attacker and the answers, in the order asked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transcript {
    /// Queries, row-major.
    pub x: Vec<f32>,
    /// Answers, one per query.
    pub answers: Vec<Vec<f32>>,
    /// Values per query.
    pub n_features: usize,
}

impl Transcript {
    fn ask(&mut self, oracle: &mut dyn Oracle, x: Vec<f32>) -> usize {
        let y = oracle.answer(&x);
        let c = argmax(&y);
        self.x.extend_from_slice(&x);
        self.answers.push(y);
        c
    }
    /// Queries asked.
    pub fn len(&self) -> usize {
        self.answers.len()
    }
    /// Whether none was asked.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
    /// Query `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.n_features..(i + 1) * self.n_features]
    }
    /// The served class of each query.
    pub fn classes(&self) -> Vec<usize> {
        self.answers.iter().map(|y| argmax(y)).collect()
    }
}

/// The strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// [`natural`].
    Natural,
    /// [`adaptive`].
    Adaptive,
    /// [`jbda`].
    Jbda,
}

impl StrategyKind {
    /// All three, in the order of the module docs.
    pub const ALL: [StrategyKind; 3] = [
        StrategyKind::Natural,
        StrategyKind::Adaptive,
        StrategyKind::Jbda,
    ];
    /// `natural`, `adaptive` or `jbda`.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Natural => "natural",
            StrategyKind::Adaptive => "adaptive",
            StrategyKind::Jbda => "jbda",
        }
    }
}

/// Knobs of the strategies.
#[derive(Clone, Debug, Serialize)]
pub struct StrategyParams {
    /// Probability of flipping each pixel of a top-up copy (natural, adaptive).
    pub flip: f64,
    /// The bandit's step size α (adaptive).
    pub bandit_lr: f64,
    /// Seed images per class (jbda).
    pub jbda_seeds_per_class: usize,
    /// The step λ (jbda).
    pub jbda_lambda: f64,
    /// The substitute (jbda).
    pub substitute: MlpParams,
}

impl Default for StrategyParams {
    /// Flips 5%, α = 0.1, 2 seeds per class, λ = 0.1, a substitute of 32 hidden units trained
    /// 30 epochs.
    fn default() -> Self {
        StrategyParams {
            flip: 0.05,
            bandit_lr: 0.1,
            jbda_seeds_per_class: 2,
            jbda_lambda: 0.1,
            substitute: MlpParams {
                hidden: 32,
                epochs: 30,
                ..MlpParams::default()
            },
        }
    }
}

impl Params for StrategyParams {
    fn check(self) -> Result<Valid<Self>> {
        if !(0.0..=1.0).contains(&self.flip) {
            return Err(Error::invalid(format!(
                "strategy flip = {} (must lie in [0, 1])",
                self.flip
            )));
        }
        crate::error::check_positive("strategy bandit_lr", self.bandit_lr)?;
        crate::error::check_positive("strategy jbda_lambda", self.jbda_lambda)?;
        crate::error::check_at_least(
            "strategy jbda_seeds_per_class",
            self.jbda_seeds_per_class,
            1,
        )?;
        let _ = self.substitute.clone().check()?;
        Ok(Valid::checked(self))
    }
}

fn flipped(x: &[f32], p: f64, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
    x.iter()
        .map(|&v| if rng.random::<f64>() < p { 1.0 - v } else { v })
        .collect()
}

fn check_pool(pool: &Split, budget: usize) -> Result<()> {
    if pool.is_empty() || budget == 0 {
        return Err(Error::invalid(format!(
            "query strategy: pool of {} images, budget {budget} (both must be ≥ 1)",
            pool.len()
        )));
    }
    Ok(())
}

/// [`StrategyKind::Natural`]: the pool shuffled, then flipped copies (module docs).
pub fn natural(
    pool: &Split,
    budget: usize,
    p: &Valid<StrategyParams>,
    seed: u64,
    oracle: &mut dyn Oracle,
) -> Result<Transcript> {
    check_pool(pool, budget)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..pool.len()).collect();
    shuffle(&mut order, &mut rng);
    let mut t = Transcript {
        n_features: pool.n_features,
        ..Transcript::default()
    };
    for q in 0..budget {
        let x = if q < order.len() {
            pool.row(order[q]).to_vec()
        } else {
            flipped(
                pool.row(order[rng.random_range(0..order.len())]),
                p.flip,
                &mut rng,
            )
        };
        t.ask(oracle, x);
    }
    Ok(t)
}

/// [`StrategyKind::Adaptive`]: the gradient bandit over the pool's labels (module docs).
pub fn adaptive(
    pool: &Split,
    budget: usize,
    p: &Valid<StrategyParams>,
    seed: u64,
    oracle: &mut dyn Oracle,
) -> Result<Transcript> {
    check_pool(pool, budget)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let arms_n = pool.y.iter().map(|&c| c as usize + 1).max().unwrap_or(1);
    let mut arms: Vec<Vec<usize>> = vec![Vec::new(); arms_n];
    for (i, &c) in pool.y.iter().enumerate() {
        arms[c as usize].push(i);
    }
    for a in arms.iter_mut() {
        shuffle(a, &mut rng);
    }
    let live: Vec<usize> = (0..arms_n).filter(|&a| !arms[a].is_empty()).collect();
    let mut used = vec![0usize; arms_n];
    let mut h = vec![0.0f64; arms_n];
    let (mut rbar, mut mean_y): (f64, Vec<f64>) = (0.0, Vec::new());
    let mut t = Transcript {
        n_features: pool.n_features,
        ..Transcript::default()
    };
    for step in 0..budget {
        let m = live.iter().map(|&a| h[a]).fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = live.iter().map(|&a| (h[a] - m).exp()).collect();
        let z: f64 = w.iter().sum();
        let mut u = rng.random::<f64>() * z;
        let mut k = live.len() - 1;
        for (i, wi) in w.iter().enumerate() {
            if u < *wi {
                k = i;
                break;
            }
            u -= wi;
        }
        let arm = live[k];
        let imgs = &arms[arm];
        let x = if used[arm] < imgs.len() {
            pool.row(imgs[used[arm]]).to_vec()
        } else {
            flipped(
                pool.row(imgs[rng.random_range(0..imgs.len())]),
                p.flip,
                &mut rng,
            )
        };
        used[arm] += 1;
        t.ask(oracle, x);
        let y = t.answers.last().cloned().unwrap_or_default();
        let s: f64 = y.iter().map(|&v| v as f64).sum::<f64>().max(1e-12);
        let py: Vec<f64> = y.iter().map(|&v| v as f64 / s).collect();
        let mut sorted = py.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let margin = sorted[0] - sorted.get(1).copied().unwrap_or(0.0);
        if mean_y.is_empty() {
            mean_y = vec![0.0; py.len()];
        }
        let div: f64 = py
            .iter()
            .zip(&mean_y)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 2.0;
        let n = (step + 1) as f64;
        for (mv, v) in mean_y.iter_mut().zip(&py) {
            *mv += (v - *mv) / n;
        }
        let r = (1.0 - margin) + div;
        rbar += (r - rbar) / n;
        let total = z;
        for (i, &a) in live.iter().enumerate() {
            let pi = w[i] / total;
            let ind = if a == arm { 1.0 } else { 0.0 };
            h[a] += p.bandit_lr * (r - rbar) * (ind - pi);
        }
    }
    Ok(t)
}

/// [`StrategyKind::Jbda`]: Jacobian-based augmentation from a few seeds (module docs).
pub fn jbda(
    pool: &Split,
    budget: usize,
    p: &Valid<StrategyParams>,
    seed: u64,
    oracle: &mut dyn Oracle,
) -> Result<Transcript> {
    check_pool(pool, budget)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let k = pool.y.iter().map(|&c| c as usize + 1).max().unwrap_or(1);
    let mut picked = Vec::new();
    let mut per = vec![0usize; k];
    let mut order: Vec<usize> = (0..pool.len()).collect();
    shuffle(&mut order, &mut rng);
    for &i in &order {
        let c = pool.y[i] as usize;
        if per[c] < p.jbda_seeds_per_class {
            per[c] += 1;
            picked.push(i);
        }
    }
    let mut t = Transcript {
        n_features: pool.n_features,
        ..Transcript::default()
    };
    let mut labels = Vec::new();
    for &i in picked.iter().take(budget) {
        labels.push(t.ask(oracle, pool.row(i).to_vec()));
    }
    let substitute = Valid::checked(p.substitute.clone());
    let mut round = 0u64;
    while t.len() < budget {
        let n = t.len();
        let n_out = t.answers[0].len();
        let x64: Vec<f64> = t.x.iter().map(|&v| v as f64).collect();
        let mut tg = vec![0.0f64; n * n_out];
        for (r, &c) in labels.iter().enumerate() {
            tg[r * n_out + c] = 1.0;
        }
        let sub = Mlp::distill(
            &x64,
            &tg,
            n,
            &substitute,
            seed ^ (round + 1).wrapping_mul(0x9e37),
        )?;
        for r in 0..n {
            if t.len() >= budget {
                break;
            }
            let xr: Vec<f64> = t.row(r).iter().map(|&v| v as f64).collect();
            let jac = sub.logit_jacobian(&xr);
            let c = labels[r];
            let row = &jac[c * sub.n_in..(c + 1) * sub.n_in];
            let x: Vec<f32> = xr
                .iter()
                .zip(row)
                .map(|(v, g)| (v + p.jbda_lambda * g.signum()).clamp(0.0, 1.0) as f32)
                .collect();
            labels.push(t.ask(oracle, x));
        }
        round += 1;
    }
    Ok(t)
}

/// Run strategy `kind`.
pub fn run(
    kind: StrategyKind,
    pool: &Split,
    budget: usize,
    p: &Valid<StrategyParams>,
    seed: u64,
    oracle: &mut dyn Oracle,
) -> Result<Transcript> {
    match kind {
        StrategyKind::Natural => natural(pool, budget, p, seed, oracle),
        StrategyKind::Adaptive => adaptive(pool, budget, p, seed, oracle),
        StrategyKind::Jbda => jbda(pool, budget, p, seed, oracle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of 4 classes: class c has pixel c on, plus noise pixels.
    fn pool() -> Split {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..80 {
            let c = i % 4;
            for j in 0..8 {
                x.push(if j == c || (j >= 4 && rng.random::<f64>() < 0.3) {
                    1.0
                } else {
                    0.0
                });
            }
            y.push(c as u32);
        }
        Split {
            x,
            y,
            n_features: 8,
        }
    }

    /// An oracle that answers class = first lit pixel among 0..4, and is uncertain on class 3.
    fn oracle(x: &[f32]) -> Vec<f32> {
        let c = (0..4).find(|&j| x[j] > 0.5).unwrap_or(0);
        let mut y = vec![0.02f32; 4];
        y[c] = if c == 3 { 0.5 } else { 0.94 };
        if c == 3 {
            y[0] = 0.44;
        }
        y
    }

    #[test]
    fn natural_uses_the_pool_once_then_flipped_copies() {
        let p = StrategyParams::default().check().unwrap();
        let d = pool();
        let t = natural(&d, 100, &p, 3, &mut oracle).unwrap();
        assert_eq!(t.len(), 100);
        let mut firsts: Vec<Vec<f32>> = (0..80).map(|i| t.row(i).to_vec()).collect();
        let mut all: Vec<Vec<f32>> = (0..80).map(|i| d.row(i).to_vec()).collect();
        firsts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        all.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(firsts, all, "the first 80 queries are the pool, each once");
        assert_eq!(natural(&d, 100, &p, 3, &mut oracle).unwrap(), t, "seeded");
    }

    #[test]
    fn the_bandit_favours_the_uncertain_arm() {
        let p = StrategyParams::default().check().unwrap();
        let t = adaptive(&pool(), 400, &p, 4, &mut oracle).unwrap();
        let c = t.classes();
        let uncertain = c[200..].iter().filter(|&&k| k == 3).count();
        assert!(
            uncertain > 50 + 20,
            "class 3 asked {uncertain} of the last 200 times"
        );
    }

    #[test]
    fn jbda_steps_by_lambda_from_its_seeds() {
        let p = StrategyParams::default().check().unwrap();
        let t = jbda(&pool(), 50, &p, 5, &mut oracle).unwrap();
        assert_eq!(t.len(), 50);
        // 2 seeds per class, then each new query is a λ-step of an earlier one: every value of
        // a new query differs from its parent's by 0 or 0.1 (clipped at 0 and 1).
        for r in 8..16 {
            let (parent, child) = (t.row(r - 8), t.row(r));
            for (a, b) in parent.iter().zip(child) {
                let d = (a - b).abs();
                assert!(d < 1e-6 || (d - 0.1).abs() < 1e-6, "{a} → {b}");
            }
        }
    }
}
