//! The objectives the vertex solver maximises over the feasible set (SPEC §11), each prepared once
//! per query ([`VertexObjective::prepare`]) and then evaluated on candidate answers ỹ (f64, same
//! length and sum as ŷ):
//!
//! * **A** (`rg-vertex`, seed-literal): `δᵀ P F̃_c P δ`, `δ = ỹ − ŷ`, with the per-class Fisher
//!   information of the generation network w.r.t. the output cached by [`PoisonCache`] (§7).
//! * **B, reading P** (`rg-vertex`, recommended): the exact KL of the whole generation chain,
//!   `Σ_j KL_Bern(σ(a_j(ŷ)) ‖ σ(a_j(ỹ)))`, `a(y) = W_Nᵀ y + b_N`. The chain's later kernels are the
//!   same under ŷ and ỹ, so by the chain rule of KL this is the KL of the joint of every layer —
//!   how far each eq. 14 training target of a clone moves — and by data processing it bounds the
//!   KL of `q̃_0`. In closed form: `Σ_j softplus(a_j') − softplus(a_j) − σ(a_j)(a_j' − a_j)`.
//! * **B, reading C**: the KL between the class mixtures `Σ_c p_c t_N(·|e_c)` at `p = ŷ/Σŷ` and at
//!   `p̃ = ỹ/Σỹ`, by Monte Carlo over samples of the first (seeded per query, the same samples for
//!   every candidate).
//! * **MAD** (`mad-argmax`, `mad`): `1 − cos∠(p̃ − p_s, p − p_s)` with the surrogate's `p_s(x)`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::feasible::FeasibleSet;
use super::rg::PoisonCache;
use super::surrogate::Surrogate;
use super::Query;
use crate::error::{Error, Result};
use crate::model::kernels::sigmoid_f64;
use crate::model::DeepRbm;
use crate::sample::uniform_f32;
use crate::util::mix_seed;

/// Monte Carlo samples of the reading-(C) KL per query.
pub const MIXTURE_KL_SAMPLES: usize = 256;

/// `ln(1 + e^z)` without overflow.
pub(crate) fn softplus(z: f64) -> f64 {
    if z > 30.0 {
        z
    } else if z < -30.0 {
        z.exp()
    } else {
        z.exp().ln_1p()
    }
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
}

/// An objective of the vertex solver.
#[derive(Clone, Debug)]
pub enum VertexObjective {
    /// A: the cached Fisher quadratic (its reading is the cache's).
    FisherQuadratic(Arc<PoisonCache>),
    /// B, reading P: the exact KL of the generation chain. `w` is `W_N` (`K × n`, row-major),
    /// `b` is `b_N`.
    GenerationKl {
        /// `W_N`, `K × n_{N−1}` row-major.
        w: Vec<f64>,
        /// `b_N`.
        b: Vec<f64>,
    },
    /// B, reading C: the KL between class mixtures. `probs[c]` are `t_N(·|e_c)`'s unit
    /// probabilities.
    MixtureKl {
        /// `σ(W_N[c,:] + b_N)` per class.
        probs: Vec<Vec<f64>>,
    },
    /// MAD's angle with a surrogate.
    MadAngle(Arc<Surrogate>),
}

/// One query's objective, ready to score candidates.
pub type Evaluator<'a> = Box<dyn Fn(&[f64]) -> f64 + 'a>;

/// One query's gradient of the objective with respect to ỹ.
pub type Gradient<'a> = Box<dyn Fn(&[f64]) -> Vec<f64> + 'a>;

/// One query's objective and its gradient with respect to ỹ.
pub struct Prepared<'a> {
    /// The objective at ỹ.
    pub value: Evaluator<'a>,
    /// `∂ value / ∂ỹ` at ỹ.
    pub gradient: Gradient<'a>,
    /// Whether the objective is convex in ỹ (then every step of the successive linear
    /// programme can only raise it).
    pub convex: bool,
    /// A cheaper stand-in that ranks candidates like the value (for objective B: its quadratic
    /// model `½ δᵀ W_N D W_Nᵀ δ` at ŷ, the §7 output bound); `None` when the value is cheap.
    pub rank: Option<Evaluator<'a>>,
}

impl VertexObjective {
    /// Objective B (reading P) of `model`'s top RBM.
    pub fn generation_kl(model: &DeepRbm) -> Self {
        let top = model.rbm(model.depth());
        VertexObjective::GenerationKl {
            w: top.w().iter().map(|&v| v as f64).collect(),
            b: top.b().iter().map(|&v| v as f64).collect(),
        }
    }

    /// Objective B (reading C) of `model`'s top RBM.
    pub fn mixture_kl(model: &DeepRbm) -> Self {
        let top = model.rbm(model.depth());
        let n = top.n_down();
        let probs = (0..top.n_up())
            .map(|c| {
                (0..n)
                    .map(|j| sigmoid_f64(top.w()[c * n + j] as f64 + top.b()[j] as f64))
                    .collect()
            })
            .collect();
        VertexObjective::MixtureKl { probs }
    }

    /// Check that the objective fits `k` classes.
    pub fn check(&self, k: usize) -> Result<()> {
        let ok = match self {
            VertexObjective::FisherQuadratic(c) => {
                c.n_classes() == k
                    && c.fisher.len() == k
                    && c.fisher.iter().all(|f| f.len() == k * k)
            }
            VertexObjective::GenerationKl { w, b } => !b.is_empty() && w.len() == k * b.len(),
            VertexObjective::MixtureKl { probs } => probs.len() == k,
            VertexObjective::MadAngle(_) => true,
        };
        if !ok {
            return Err(Error::shape(format!(
                "defence objective does not fit {k} classes (for objective A the poison cache must \
                 hold the Fisher matrices: delete an old cache file to recompute it)"
            )));
        }
        Ok(())
    }

    /// The objective of one query.
    pub fn prepare<'a>(&'a self, q: &Query<'_>, set: &'a FeasibleSet) -> Evaluator<'a> {
        self.prepare_with_gradient(q, set).value
    }

    /// The objective of one query with its gradient.
    pub fn prepare_with_gradient<'a>(
        &'a self,
        q: &Query<'_>,
        set: &'a FeasibleSet,
    ) -> Prepared<'a> {
        let k = set.len();
        let served = set.served.clone();
        match self {
            VertexObjective::FisherQuadratic(cache) => {
                let f = &cache.fisher[set.class];
                let served_g = served.clone();
                Prepared {
                    value: Box::new(move |y: &[f64]| quadratic_form(f, &served, y)),
                    gradient: Box::new(move |y: &[f64]| {
                        (0..k)
                            .map(|i| {
                                let row = &f[i * k..(i + 1) * k];
                                2.0 * row
                                    .iter()
                                    .zip(y.iter().zip(&served_g))
                                    .map(|(fij, (a, b))| fij * (a - b))
                                    .sum::<f64>()
                            })
                            .collect()
                    }),
                    convex: true,
                    rank: None,
                }
            }
            VertexObjective::GenerationKl { w, b } => {
                let n = b.len();
                let a0: Vec<f64> = (0..n)
                    .map(|j| b[j] + (0..k).map(|i| w[i * n + j] * served[i]).sum::<f64>())
                    .collect();
                let s0: Vec<f64> = a0.iter().map(|&a| sigmoid_f64(a)).collect();
                // H = ½ W_N diag(σ'(a0)) W_Nᵀ (K × K): half B's Hessian at ŷ.
                let mut h = vec![0.0; k * k];
                for i in 0..k {
                    for l in i..k {
                        let v: f64 = 0.5
                            * (0..n)
                                .map(|j| w[i * n + j] * s0[j] * (1.0 - s0[j]) * w[l * n + j])
                                .sum::<f64>();
                        h[i * k + l] = v;
                        h[l * k + i] = v;
                    }
                }
                let kernel = Rc::new(GenerationKernel {
                    w,
                    served: served.clone(),
                    a0,
                    s0,
                    scratch: RefCell::new(vec![0.0; n]),
                });
                let kernel_g = kernel.clone();
                Prepared {
                    value: Box::new(move |y: &[f64]| kernel.kl(y)),
                    gradient: Box::new(move |y: &[f64]| kernel_g.gradient(y)),
                    convex: true,
                    rank: Some(Box::new(move |y: &[f64]| quadratic_form(&h, &served, y))),
                }
            }
            VertexObjective::MixtureKl { probs } => {
                let mass: f64 = served.iter().sum();
                let p: Vec<f64> = served.iter().map(|v| v / mass).collect();
                let table = Arc::new(mixture_log_likelihoods(probs, &p, q.seed));
                let logp: Vec<f64> = table
                    .iter()
                    .map(|row| {
                        log_sum_exp(
                            &row.iter()
                                .zip(&p)
                                .map(|(l, pc)| l + pc.ln())
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect();
                let t2 = table.clone();
                Prepared {
                    value: Box::new(move |y: &[f64]| {
                        let s: f64 = y.iter().sum();
                        let lq: Vec<f64> = y.iter().map(|v| (v / s).ln()).collect();
                        let kl: f64 = table
                            .iter()
                            .zip(&logp)
                            .map(|(row, lp)| {
                                let t: Vec<f64> = row.iter().zip(&lq).map(|(l, q)| l + q).collect();
                                lp - log_sum_exp(&t)
                            })
                            .sum();
                        kl / table.len() as f64
                    }),
                    // With Σỹ fixed at M: ∂/∂ỹ_c = −(1/M) mean_s exp(L[s][c] − log Q(h_s)).
                    gradient: Box::new(move |y: &[f64]| {
                        let s: f64 = y.iter().sum();
                        let lq: Vec<f64> = y.iter().map(|v| (v / s).ln()).collect();
                        let mut g = vec![0.0; k];
                        for row in t2.iter() {
                            let t: Vec<f64> = row.iter().zip(&lq).map(|(l, q)| l + q).collect();
                            let lse = log_sum_exp(&t);
                            for c in 0..k {
                                g[c] -= (row[c] - lse).exp();
                            }
                        }
                        g.iter().map(|v| v / (s * t2.len() as f64)).collect()
                    }),
                    convex: true,
                    rank: None,
                }
            }
            VertexObjective::MadAngle(sur) => {
                let ps = sur.probs(q.x);
                let mass: f64 = served.iter().sum();
                let g: Vec<f64> = served.iter().zip(&ps).map(|(v, p)| v / mass - p).collect();
                let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                let (ps2, g2) = (ps.clone(), g.clone());
                Prepared {
                    value: Box::new(move |y: &[f64]| {
                        if gn < 1e-12 {
                            return 0.0;
                        }
                        let s: f64 = y.iter().sum();
                        let h: Vec<f64> = y.iter().zip(&ps).map(|(v, p)| v / s - p).collect();
                        let hn = h.iter().map(|v| v * v).sum::<f64>().sqrt();
                        if hn < 1e-300 {
                            return 0.0;
                        }
                        1.0 - h.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>() / (hn * gn)
                    }),
                    // f = 1 − cos(h, g), h = ỹ/M − p_s: ∂f/∂ỹ = −(1/M)(g/(|h||g|) − cos·h/|h|²).
                    gradient: Box::new(move |y: &[f64]| {
                        let s: f64 = y.iter().sum();
                        let h: Vec<f64> = y.iter().zip(&ps2).map(|(v, p)| v / s - p).collect();
                        let hn = h.iter().map(|v| v * v).sum::<f64>().sqrt();
                        if gn < 1e-12 || hn < 1e-300 {
                            return vec![0.0; k];
                        }
                        let cos = h.iter().zip(&g2).map(|(a, b)| a * b).sum::<f64>() / (hn * gn);
                        (0..k)
                            .map(|i| -(g2[i] / (hn * gn) - cos * h[i] / (hn * hn)) / s)
                            .collect()
                    }),
                    convex: false,
                    rank: None,
                }
            }
        }
    }
}

/// `(y − y0)ᵀ F (y − y0)` for a K × K row-major F, without allocating.
fn quadratic_form(f: &[f64], y0: &[f64], y: &[f64]) -> f64 {
    let k = y0.len();
    (0..k)
        .map(|i| {
            let di = y[i] - y0[i];
            if di == 0.0 {
                return 0.0;
            }
            let row = &f[i * k..(i + 1) * k];
            di * row
                .iter()
                .zip(y.iter().zip(y0))
                .map(|(fij, (a, b))| fij * (a - b))
                .sum::<f64>()
        })
        .sum()
}

/// Objective B (reading P) of one query: the pre-activations `a0 = W_Nᵀŷ + b_N` and `σ(a0)`,
/// with a scratch row for `Δ = W_Nᵀ(ỹ − ŷ)`.
struct GenerationKernel<'a> {
    w: &'a [f64],
    served: Vec<f64>,
    a0: Vec<f64>,
    s0: Vec<f64>,
    scratch: RefCell<Vec<f64>>,
}

impl GenerationKernel<'_> {
    /// `Δ = W_Nᵀ(ỹ − ŷ)` into the scratch row (classes that do not move are skipped).
    fn delta<'s>(&self, y: &[f64], delta: &'s mut [f64]) -> &'s [f64] {
        let n = self.a0.len();
        delta.fill(0.0);
        for (i, (a, b)) in y.iter().zip(&self.served).enumerate() {
            let d = a - b;
            if d != 0.0 {
                for (o, wij) in delta.iter_mut().zip(&self.w[i * n..(i + 1) * n]) {
                    *o += d * wij;
                }
            }
        }
        delta
    }

    /// `Σ_j KL_Bern(σ(a0_j) ‖ σ(a0_j + Δ_j)) = Σ_j ln(1 + s_j(e^{Δ_j} − 1)) − s_j Δ_j`
    /// (`softplus(a + Δ) − softplus(a) = ln(1 − s + s e^Δ)`), which keeps its accuracy for small
    /// Δ (and stays finite there: `s(e^Δ − 1) > −0.64`); `|Δ| ≥ 1` goes through softplus.
    fn kl(&self, y: &[f64]) -> f64 {
        let mut scratch = self.scratch.borrow_mut();
        let delta = self.delta(y, &mut scratch);
        delta
            .iter()
            .zip(self.s0.iter().zip(&self.a0))
            .map(|(&d, (&s, &a))| {
                if d.abs() < 1.0 {
                    (s * d.exp_m1()).ln_1p() - s * d
                } else {
                    softplus(a + d) - softplus(a) - s * d
                }
            })
            .sum()
    }

    /// `∂/∂ỹ_i = Σ_j W_ij (σ(a0_j + Δ_j) − σ(a0_j))`.
    fn gradient(&self, y: &[f64]) -> Vec<f64> {
        let mut scratch = self.scratch.borrow_mut();
        let n = self.a0.len();
        self.delta(y, &mut scratch);
        for (r, (&a, &s)) in scratch.iter_mut().zip(self.a0.iter().zip(&self.s0)) {
            *r = sigmoid_f64(a + *r) - s;
        }
        let r = &*scratch;
        (0..self.served.len())
            .map(|i| {
                self.w[i * n..(i + 1) * n]
                    .iter()
                    .zip(r)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    }
}

/// `L[s][c] = log t_N(h_s | e_c)` for `MIXTURE_KL_SAMPLES` samples `h_s` of the mixture
/// `Σ_c p_c t_N(·|e_c)`, drawn from `seed`.
fn mixture_log_likelihoods(probs: &[Vec<f64>], p: &[f64], seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(seed, 0x4d49_584b)); // "MIXK"
    let logs: Vec<Vec<(f64, f64)>> = probs
        .iter()
        .map(|r| {
            r.iter()
                .map(|&q| (q.max(1e-300).ln(), (1.0 - q).max(1e-300).ln()))
                .collect()
        })
        .collect();
    (0..MIXTURE_KL_SAMPLES)
        .map(|_| {
            // The class of the sample, then its units.
            let u = uniform_f32(&mut rng) as f64;
            let mut acc = 0.0;
            let mut c = p.len() - 1;
            for (i, &pi) in p.iter().enumerate() {
                acc += pi;
                if u < acc {
                    c = i;
                    break;
                }
            }
            let h: Vec<bool> = probs[c]
                .iter()
                .map(|&q| (uniform_f32(&mut rng) as f64) < q)
                .collect();
            logs.iter()
                .map(|lc| {
                    h.iter()
                        .zip(lc)
                        .map(|(&on, &(l1, l0))| if on { l1 } else { l0 })
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// A keyed random unit sum-zero direction per class (the `random-fixed` control: the exact
/// maximum of `u_cᵀỹ` over F), from `seed`.
pub fn keyed_directions(k: usize, seed: u64) -> Result<Vec<Vec<f64>>> {
    (0..k)
        .map(|c| super::rg::random_sum_zero_unit(k, mix_seed(seed, c as u64)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_in_closed_form_matches_the_bernoulli_definition() {
        for (a, b) in [(0.3, -1.2), (4.0, 2.5), (-7.0, 1.0), (0.0, 0.0)] {
            let (p, q) = (sigmoid_f64(a), sigmoid_f64(b));
            let kl = p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
            let closed = softplus(b) - softplus(a) - p * (b - a);
            assert!((kl - closed).abs() < 1e-12, "{a} {b}: {kl} vs {closed}");
        }
    }
}
