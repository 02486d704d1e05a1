//! Training (SPEC §3): the paper's layerwise KL rule, eq. 14, and a documented hybrid.
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
//! **Annealed targets** (`anneal_sweeps`, off by default): over the first sweeps each lower RBM's
//! pairs move from up-samples of x (the pretraining's target) to eq. 14's, as a mixture
//! ([`eq14_pairs_annealed`]).
//!
//! **Hybrid** ([`Method::Hybrid`]): by default from a random start (no pretraining), mean-field
//! back-propagation fine-tuning of all `W_k, a_k` (through sampled hidden states, straight-through,
//! with `finetune_stochastic = true`) with random input bit flips, minimising the per-unit
//! Bernoulli cross-entropy of the one-hot label under the output layer's factorised conditional
//! (Adam), optionally followed by stochastic epochs from the mean-field optimum
//! (`finetune_stochastic_epochs`), then eq. 14 refinement sweeps at a small learning rate, keeping the refinement step with
//! the best held-out accuracy (step 0 = no refinement).

mod backprop;
mod cd;
mod kept;
mod params;
mod trainer;

pub use backprop::{backprop_gradient, mean_field_gradient, served_scores};
pub use cd::{
    cd_epoch, cd_update, class_states, eq14_pairs, eq14_pairs_annealed, moment_difference,
    pair_moments, CdParams, Moments, Velocity,
};
pub use kept::{kept_model, train_and_keep, Unrecorded};
pub use params::{
    check_widths_fit, estimated_bytes, Method, SweepOrder, Targets, TrainParams, MODEL_COPIES,
};
pub use trainer::{subset, HistoryRow, TopReading, TrainOutcome, Trainer};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact;
    use crate::sample::{bernoulli, gibbs};
    use crate::{DeepRbm, Rbm};
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

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

    /// RBM k's pair moments of a batch, stacked `W, a, b` (to compare with [`exact_stacked`]).
    fn stacked_moments(m: &DeepRbm, k: usize, u: &[f32], l: &[f32], batch: usize) -> Vec<f32> {
        let r = m.rbm(k);
        let pm = pair_moments(u, l, batch, r.n_up, r.n_down);
        let mut all = pm.w;
        all.extend(pm.a);
        all.extend(pm.b);
        all
    }

    /// Exact eq. 14 data moments, stacked as [`stacked_moments`].
    fn exact_stacked(ex: &exact::Eq14Exact) -> Vec<f64> {
        let mut want = ex.data_w.clone();
        want.extend(&ex.data_a);
        want.extend(&ex.data_b);
        want
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

    /// Annealed targets: the sampled data moments (W, a, b) are the exact mixture
    /// `α ⟨·⟩_up + (1 − α) ⟨·⟩_eq14` of the two exact target distributions, for the lower RBMs, both
    /// target kinds and α ∈ {1, 0.3}; the top RBM's pairs stay eq. 14's (labels on top).
    #[test]
    fn annealed_eq14_moments_match_the_exact_mixture_of_up_and_eq14_targets() {
        let m = tiny_stack(&[4, 4, 3, 3], 12);
        let (xs, ys) = data();
        let x: Vec<f32> = xs.concat();
        let y: Vec<f32> = ys.concat();
        for k in 1..=3 {
            let ex = exact::eq14(&m, k, &xs, &ys).unwrap();
            let (uw, ua, ub) = exact::eq14_up_moments(&m, k, &xs).unwrap();
            for alpha in [1.0f32, 0.3] {
                let al = if k == 3 { 0.0 } else { alpha as f64 };
                let mix = |up: &[f64], eq: &[f64]| -> Vec<f64> {
                    up.iter()
                        .zip(eq)
                        .map(|(u, e)| al * u + (1.0 - al) * e)
                        .collect()
                };
                let mut want = mix(&uw, &ex.data_w);
                want.extend(mix(&ua, &ex.data_a));
                want.extend(mix(&ub, &ex.data_b));
                for targets in [Targets::Samples, Targets::Probs] {
                    let mut rng = Xoshiro256PlusPlus::seed_from_u64(31 + k as u64);
                    let reps: Vec<Vec<f32>> = (0..200)
                        .map(|_| {
                            let (xb, yb) = (x.repeat(100), y.repeat(100));
                            let (u, l) =
                                eq14_pairs_annealed(&m, k, &xb, &yb, 300, targets, alpha, &mut rng);
                            stacked_moments(&m, k, &u, &l, 300)
                        })
                        .collect();
                    assert_within(
                        &mean_se(&reps),
                        &want,
                        &format!("k={k} alpha={alpha} {targets:?}"),
                    );
                }
            }
        }
        // the two targets differ here, so the check above can tell them apart
        let ex = exact::eq14(&m, 2, &xs, &ys).unwrap();
        let (uw, _, _) = exact::eq14_up_moments(&m, 2, &xs).unwrap();
        assert!(uw.iter().zip(&ex.data_w).any(|(u, e)| (u - e).abs() > 0.05));
        // α = 0 is eq. 14's sampler, draw for draw
        let (mut r1, mut r2) = (
            Xoshiro256PlusPlus::seed_from_u64(3),
            Xoshiro256PlusPlus::seed_from_u64(3),
        );
        assert_eq!(
            eq14_pairs_annealed(&m, 1, &x, &y, 3, Targets::Probs, 0.0, &mut r1),
            eq14_pairs(&m, 1, &x, &y, 3, Targets::Probs, &mut r2)
        );
    }

    /// Reading (C): drawing a one-hot class state from each soft target row and then eq. 14's pairs
    /// gives, in expectation, the exact eq. 14 moments of the data set in which each input appears
    /// once per class, weighted by the row's class probabilities (here quarters: each input four
    /// times). Every RBM, both target kinds; for the lower RBMs this mixture differs from reading the
    /// argmax alone, so a sampler that ignored the probabilities would fail.
    #[test]
    fn reading_c_moments_are_the_exact_class_mixture_of_one_hot_eq14_moments() {
        let m = tiny_stack(&[4, 4, 3, 3], 21);
        let (xs, _) = data();
        let soft: Vec<Vec<f32>> = vec![
            vec![0.5, 0.25, 0.25],
            vec![0.0, 0.75, 0.25],
            vec![0.25, 0.25, 0.5],
        ];
        let one_hot = |c: usize| -> Vec<f32> { (0..3).map(|j| f32::from(j == c)).collect() };
        // the expanded data set: quarter q of row d goes to the class whose cumulative mass covers it
        let (mut xs4, mut ys4) = (Vec::new(), Vec::new());
        for (x, p) in xs.iter().zip(&soft) {
            for q in 0..4 {
                let mut acc = 0.0;
                let c = p
                    .iter()
                    .position(|&v| {
                        acc += v;
                        acc > (q as f32 + 0.5) / 4.0
                    })
                    .unwrap();
                xs4.push(x.clone());
                ys4.push(one_hot(c));
            }
        }
        let x: Vec<f32> = xs.concat();
        let y: Vec<f32> = soft.concat();
        for k in 1..=3 {
            let want = exact_stacked(&exact::eq14(&m, k, &xs4, &ys4).unwrap());
            for targets in [Targets::Samples, Targets::Probs] {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(51 + k as u64);
                let reps: Vec<Vec<f32>> = (0..200)
                    .map(|_| {
                        let xb = x.repeat(100);
                        let yb = class_states(&y.repeat(100), 300, 3, &mut rng);
                        let (u, l) = eq14_pairs(&m, k, &xb, &yb, 300, targets, &mut rng);
                        stacked_moments(&m, k, &u, &l, 300)
                    })
                    .collect();
                assert_within(&mean_se(&reps), &want, &format!("k={k} {targets:?}"));
            }
        }
        let argmax_only: Vec<Vec<f32>> = vec![one_hot(0), one_hot(1), one_hot(2)];
        let mix = exact::eq14(&m, 1, &xs4, &ys4).unwrap();
        let top = exact::eq14(&m, 1, &xs, &argmax_only).unwrap();
        assert!(mix
            .data_w
            .iter()
            .zip(&top.data_w)
            .any(|(a, b)| (a - b).abs() > 0.02));
    }

    #[test]
    fn class_states_draw_each_class_with_its_share_of_the_row() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
        let rows = 20_000;
        // unnormalised row (sum 0.8), and a row of zeros (uniform)
        let y = [0.2f32, 0.0, 0.6, 0.0, 0.0, 0.0].repeat(rows);
        let s = class_states(&y, 2 * rows, 3, &mut rng);
        let mut counts = [[0usize; 3]; 2];
        for (i, r) in s.chunks_exact(3).enumerate() {
            assert_eq!(r.iter().sum::<f32>(), 1.0, "row {i} is not one-hot");
            counts[i % 2][r.iter().position(|&v| v == 1.0).unwrap()] += 1;
        }
        for (c, want) in [(counts[0], [0.25, 0.0, 0.75]), (counts[1], [1.0 / 3.0; 3])] {
            for j in 0..3 {
                let f = c[j] as f64 / rows as f64;
                let se = (want[j] * (1.0 - want[j]) / rows as f64).sqrt();
                assert!((f - want[j]).abs() <= 4.0 * se + 1e-12, "{c:?} vs {want:?}");
            }
        }
    }

    /// Model moments of the joint `t_k` from Gibbs chains started at `v` (upper moments
    /// Rao-Blackwellised): the reference the training's fused gradient is checked against.
    fn model_moments<R: crate::sample::BernoulliRng>(
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
        let mut rbm = Rbm::random(6, 4, 0.7, &mut rng).unwrap();
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
