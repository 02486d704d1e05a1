//! The exact series of the depth study (`examples/exact_series.rs`, issue 14 item 3) against the
//! existing enumeration `rgshield::exact` on N ≤ 3: its Fisher matrices at every depth, its
//! served output and the series' top values; its mean-field Jacobian against finite differences of
//! an independent f64 mean-field forward pass; and its exact served Jacobian against finite
//! differences of `exact::served_output`.

#[path = "../examples/exact_series/series.rs"]
mod series;

use faer::Mat;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgshield::exact;
use rgshield::linalg::dense::singular_values;
use rgshield::model::standard_normal;
use rgshield::rg::fisher::top_eigen;
use rgshield::DeepRbm;

/// A width-10 stack `[64, 10 × (N−1), 10]` of the series (random, std `scale`), with non-zero
/// biases so that no symmetry helps.
fn stack(depth: usize, scale: f32, seed: u64, biases: bool) -> DeepRbm {
    let m = series::random_stack(64, 10, 10, depth, scale, seed).unwrap();
    if !biases {
        return m;
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(77 + seed);
    m.edited(|_, l| {
        for a in &mut l.a {
            *a = 0.5 * standard_normal(&mut rng);
        }
        for b in &mut l.b {
            *b = 0.5 * standard_normal(&mut rng);
        }
    })
    .unwrap()
}

/// Digit-like binary inputs and one with fractional values.
fn inputs() -> Vec<Vec<f32>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let mut xs: Vec<Vec<f32>> = (0..3)
        .map(|_| {
            (0..64)
                .map(|_| {
                    if standard_normal(&mut rng) > 0.3 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    xs.push((0..64).map(|i| (i % 7) as f32 / 6.0).collect());
    xs
}

fn row_major(m: &Mat<f64>) -> Vec<f64> {
    (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)]))
        .collect()
}

fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

fn top_of_row_major(f: &[f64], n: usize) -> f64 {
    top_eigen(Mat::from_fn(n, n, |i, j| f[i * n + j]).as_ref())
        .unwrap()
        .0
}

#[test]
fn fisher_at_every_depth_and_served_output_match_the_enumeration() {
    let xs = inputs();
    let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
    for depth in 1..=3 {
        for (scale, biases) in [(0.5, false), (1.0, true), (2.0, true)] {
            let model = stack(depth, scale, depth as u64, biases);
            let ks = series::kernels(&model).unwrap();
            let got = series::exact_block(&model, &ks, &refs).unwrap();
            let readings = series::stack_readings(&model, &refs).unwrap();
            for ((x, g), r) in refs.iter().zip(&got).zip(&readings) {
                let want = exact::fisher_input_layers(&model, x).unwrap();
                assert_eq!((g.fisher.len(), want.len()), (depth, depth));
                for (k, want_k) in want.iter().enumerate() {
                    let d = rel_diff(&row_major(&g.fisher[k]), want_k);
                    assert!(
                        d < 1e-10,
                        "N={depth} σ={scale} k={}: rel. diff {d:e}",
                        k + 1
                    );
                    let top = top_of_row_major(want_k, 64);
                    assert!(
                        (r.fisher_top[k] - top).abs() <= 1e-10 * top.max(1e-300),
                        "N={depth} k={}: top {} vs {top}",
                        k + 1,
                        r.fisher_top[k]
                    );
                }
                // The output's F_x is `exact::fisher_input`.
                let out = exact::fisher_input(&model, x).unwrap();
                let top_out = top_of_row_major(&out, 64);
                assert!((r.fisher_top[depth - 1] - top_out).abs() <= 1e-10 * top_out);
                // The first-layer bound is F_1, so the ratio is 1 at N = 1 and ≤ 1 beyond.
                assert!((r.bound_top - r.fisher_top[0]).abs() <= 1e-10 * r.bound_top);
                assert!(r.ratio <= 1.0 + 1e-10);
                if depth == 1 {
                    assert!((r.ratio - 1.0).abs() < 1e-10);
                    // One layer: the mean-field reading is the stochastic one.
                    assert!((r.mf_fisher_top - r.fisher_top[0]).abs() <= 1e-10 * r.mf_fisher_top);
                    assert!(
                        (r.mf_jacobian_sv - r.served_jacobian_sv).abs() <= 1e-10 * r.mf_jacobian_sv
                    );
                }
                // The served output is the exact one.
                let (mean, _) = exact::served_output(&model, x).unwrap();
                let d = rel_diff(&g.served, &mean);
                assert!(d < 1e-12, "N={depth}: served output rel. diff {d:e}");
            }
        }
    }
}

#[test]
fn served_jacobian_matches_finite_differences_of_the_exact_served_output() {
    let xs = inputs();
    for depth in 1..=3 {
        let model = stack(depth, 1.0, 10 + depth as u64, true);
        let ks = series::kernels(&model).unwrap();
        let x = &xs[3];
        let got = series::exact_block(&model, &ks, &[x.as_slice()]).unwrap();
        // The inputs are f32: a step of 2^-10 is exact on these inputs, and the central
        // difference's O(h²) error is far below the tolerance.
        let h = 1.0f32 / 1024.0;
        let mut fd = Mat::<f64>::zeros(10, 64);
        for c in 0..64 {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[c] += h;
            xm[c] -= h;
            let (p, _) = exact::served_output(&model, &xp).unwrap();
            let (m, _) = exact::served_output(&model, &xm).unwrap();
            for i in 0..10 {
                fd[(i, c)] = (p[i] - m[i]) / (2.0 * h as f64);
            }
        }
        let d = rel_diff(&row_major(&got[0].served_jacobian), &row_major(&fd));
        assert!(
            d < 1e-4,
            "N={depth}: served Jacobian vs finite differences {d:e}"
        );
    }
}

/// `μ_N(x)` of the mean-field network, in f64 throughout (independent of `rgshield::rg`).
fn mean_field_output(model: &DeepRbm, x: &[f64]) -> Vec<f64> {
    let mut mu = x.to_vec();
    for k in 1..=model.depth() {
        let r = model.rbm(k);
        let (nd, nu) = (r.n_down(), r.n_up());
        mu = (0..nu)
            .map(|i| {
                let z: f64 = (0..nd)
                    .map(|j| r.w()[i * nd + j] as f64 * mu[j])
                    .sum::<f64>()
                    + r.a()[i] as f64;
                1.0 / (1.0 + (-z).exp())
            })
            .collect();
    }
    mu
}

#[test]
fn mean_field_jacobian_top_singular_value_matches_finite_differences() {
    let xs = inputs();
    for depth in 1..=3 {
        for (scale, biases) in [(0.5, false), (1.5, true)] {
            let model = stack(depth, scale, 20 + depth as u64, biases);
            let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
            let readings = series::stack_readings(&model, &refs).unwrap();
            for (x, r) in xs.iter().zip(&readings) {
                let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let h = 1e-6;
                let mut fd = Mat::<f64>::zeros(10, 64);
                for c in 0..64 {
                    let (mut xp, mut xm) = (x64.clone(), x64.clone());
                    xp[c] += h;
                    xm[c] -= h;
                    let (p, m) = (
                        mean_field_output(&model, &xp),
                        mean_field_output(&model, &xm),
                    );
                    for i in 0..10 {
                        fd[(i, c)] = (p[i] - m[i]) / (2.0 * h);
                    }
                }
                let s = singular_values(fd.as_ref()).unwrap()[0];
                assert!(
                    (r.mf_jacobian_sv - s).abs() <= 1e-6 * s,
                    "N={depth} σ={scale}: {} vs finite differences {s}",
                    r.mf_jacobian_sv
                );
            }
        }
    }
}

#[test]
fn the_top_eigenvalue_never_grows_within_a_stack() {
    // Data processing: F_k ⪯ F_{k−1}, on a deeper stack than the oracle checks (fast path only).
    let xs = inputs();
    let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
    let model = stack(6, 1.0, 3, true);
    for r in series::stack_readings(&model, &refs).unwrap() {
        for w in r.fisher_top.windows(2) {
            assert!(w[1] <= w[0] * (1.0 + 1e-10), "{:?}", r.fisher_top);
        }
    }
}

#[test]
fn random_stacks_are_one_draw_per_seed_and_depth_scaled_by_sigma() {
    let a = series::random_stack(64, 10, 10, 3, 0.5, 1).unwrap();
    let b = series::random_stack(64, 10, 10, 3, 1.0, 1).unwrap();
    let c = series::random_stack(64, 10, 10, 4, 0.5, 1).unwrap();
    assert_eq!(a.widths(), vec![64, 10, 10, 10]);
    for k in 1..=3 {
        for (x, y) in a.rbm(k).w().iter().zip(b.rbm(k).w()) {
            assert!((2.0 * x - y).abs() <= 1e-6 * y.abs().max(1.0));
        }
    }
    assert_ne!(a.rbm(1).w(), c.rbm(1).w());
}
