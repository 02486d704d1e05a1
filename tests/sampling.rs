//! Samplers against exact enumeration (SPEC §1–2), and determinism across thread counts.
#![allow(clippy::needless_range_loop)]

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgshield::exact;
use rgshield::sample::{sample_down, sample_up, BernoulliRng, LaneRng, OutputMode, Predictor};
use rgshield::DeepRbm;

fn stack(widths: &[usize], scale: f32, seed: u64) -> DeepRbm {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let m = DeepRbm::random(widths, scale, &mut rng).unwrap();
    m.edited(|k1, l| {
        let k = k1 - 1;
        for (i, a) in l.a.iter_mut().enumerate() {
            *a = 0.4 * ((i + k) as f32 % 3.0) - 0.4;
        }
        for (j, b) in l.b.iter_mut().enumerate() {
            *b = 0.3 - 0.2 * ((j + k) as f32 % 4.0);
        }
    })
    .unwrap()
}

/// Mean and standard error of per-sample values (rows of `width`).
fn mean_se(v: &[f32], width: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (v.len() / width) as f64;
    let mut m = vec![0.0; width];
    let mut s = vec![0.0; width];
    for r in v.chunks_exact(width) {
        for i in 0..width {
            m[i] += r[i] as f64 / n;
            s[i] += (r[i] as f64).powi(2) / n;
        }
    }
    let se = (0..width)
        .map(|i| ((s[i] - m[i] * m[i]).max(0.0) / (n - 1.0)).sqrt())
        .collect();
    (m, se)
}

#[test]
fn up_pass_marginals_match_exact_within_4_se() {
    // Both generators: the lane generator of the served output and the RG estimators, and the
    // scalar one of training.
    up_pass_marginals(LaneRng::seed_from_u64);
    up_pass_marginals(Xoshiro256PlusPlus::seed_from_u64);
}

fn up_pass_marginals<R: BernoulliRng>(rng_of: impl Fn(u64) -> R) {
    for (scale, seed) in [(0.5, 1u64), (1.5, 2), (3.0, 3)] {
        let m = stack(&[7, 5, 4, 3], scale, seed);
        let x = [1.0, 0.0, 1.0, 1.0, 0.0, 0.3, 0.9]; // real-valued conditioning accepted
        let s = 20_000;
        let xb = x.repeat(s);
        let mut rng = rng_of(seed + 10);
        let layers = sample_up(&m, &xb, s, 3, &mut rng);
        let ex = exact::classification_marginals(&m, &x).unwrap();
        for k in 1..=3 {
            let n = m.widths()[k];
            let (mean, _) = mean_se(&layers[k - 1].states, n);
            let em = exact::unit_means(&ex[k - 1], n);
            // binomial standard error from the exact mean (the sample variance is 0 when a
            // near-certain unit never flips)
            let se: Vec<f64> = em
                .iter()
                .map(|p| (p * (1.0 - p) / s as f64).sqrt())
                .collect();
            for i in 0..n {
                assert!(
                    (mean[i] - em[i]).abs() <= 4.0 * se[i] + 1e-9,
                    "scale {scale} layer {k} unit {i}: {} ± {} vs exact {}",
                    mean[i],
                    se[i],
                    em[i]
                );
            }
        }
    }
}

#[test]
fn down_pass_marginals_match_exact_within_4_se() {
    down_pass_marginals(LaneRng::seed_from_u64);
    down_pass_marginals(Xoshiro256PlusPlus::seed_from_u64);
}

fn down_pass_marginals<R: BernoulliRng>(rng_of: impl Fn(u64) -> R) {
    let m = stack(&[6, 5, 4, 3], 1.5, 4);
    for y in [[1.0f32, 0.0, 0.0], [0.2, 0.7, 0.1]] {
        let s = 20_000;
        let yb = y.repeat(s);
        let mut rng = rng_of(9);
        let layers = sample_down(&m, &yb, s, 0, &mut rng);
        let ex = exact::generation_marginals(&m, &y).unwrap();
        assert_eq!(layers.len(), 3);
        for (idx, (lay, q)) in layers.iter().zip(&ex).enumerate() {
            let n = m.widths()[2 - idx];
            let (mean, _) = mean_se(&lay.states, n);
            let em = exact::unit_means(q, n);
            let se: Vec<f64> = em
                .iter()
                .map(|p| (p * (1.0 - p) / s as f64).sqrt())
                .collect();
            for i in 0..n {
                assert!(
                    (mean[i] - em[i]).abs() <= 4.0 * se[i] + 1e-9,
                    "y {y:?} layer {} unit {i}: {} ± {} vs exact {}",
                    2 - idx,
                    mean[i],
                    se[i],
                    em[i]
                );
            }
        }
    }
}

#[test]
fn served_output_matches_exact_within_4_se() {
    for (widths, scale) in [
        (vec![8usize, 6, 5, 4], 1.0f32),
        (vec![8, 6, 6, 6, 4], 2.0),
        (vec![8, 4], 1.0),
    ] {
        let m = stack(&widths, scale, 5);
        let s = 4_000;
        let p = Predictor::new(
            &m,
            OutputMode::Served {
                samples: s,
                seed: 3,
            },
        );
        for x in [
            [1.0f32, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0],
        ] {
            let y = p.output(&x);
            let (mean, var) = exact::served_output(&m, &x).unwrap();
            for i in 0..y.len() {
                let se = (var[i] / s as f64).sqrt();
                assert!(
                    (y[i] as f64 - mean[i]).abs() <= 4.0 * se + 1e-6,
                    "{widths:?} unit {i}: {} vs exact {} (se {se})",
                    y[i],
                    mean[i]
                );
            }
        }
    }
}

#[test]
fn served_output_is_deterministic_and_thread_count_independent() {
    let m = stack(&[16, 12, 12, 5], 1.0, 6);
    let rows = 40;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let x = rgshield::sample::bernoulli(&vec![0.5; rows * 16], &mut rng);
    let p = Predictor::new(
        &m,
        OutputMode::Served {
            samples: 600,
            seed: 7,
        },
    );
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| p.outputs(&x, rows))
    };
    let (a, b, c) = (run(1), run(2), run(2));
    assert!(a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()));
    assert!(b.iter().zip(&c).all(|(u, v)| u.to_bits() == v.to_bits()));
    // one input alone gets the same answer as inside a batch
    let single = p.output(&x[16..32]);
    assert_eq!(single, a[5..10].to_vec());
    // a different seed gives a different (sampled) answer
    let q = Predictor::new(
        &m,
        OutputMode::Served {
            samples: 600,
            seed: 8,
        },
    );
    assert_ne!(q.output(&x[..16]), a[..5].to_vec());
}

#[test]
fn mean_field_outputs_match_definition_in_batches() {
    let m = stack(&[8, 6, 4], 1.0, 7);
    let p = Predictor::new(&m, OutputMode::MeanField);
    let x: Vec<f32> = (0..8 * 100).map(|i| ((i * 7) % 3) as f32 / 2.0).collect();
    let all = p.outputs(&x, 100);
    for r in [0usize, 63, 64, 99] {
        let row = &x[r * 8..(r + 1) * 8];
        // bit-identical to the same input asked alone (the same query gets the same answer)
        assert_eq!(&all[r * 4..(r + 1) * 4], &p.output(row)[..]);
        let mu1 = m.rbm(1).up_probs(row, 1);
        let mu2 = m.rbm(2).up_probs(&mu1, 1);
        for i in 0..4 {
            assert!((all[r * 4 + i] - mu2[i]).abs() < 1e-6);
        }
    }
}
