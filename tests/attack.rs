//! The adversarial attack (SPEC §6, `rgshield::attack`): the Fisher direction against the exact
//! top eigenvector, the analytic mean-field margin gradient against finite differences, the
//! geometry of every step (ε-ball, box, binary images), the success bookkeeping on a model whose
//! answer is known, and the run end to end (complete, deterministic across thread counts).
//!
//! Run with `-- --nocapture` to see the measured errors.

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::exact;
use rgshield::experiments::attack::{
    attack, fisher_directions, judge, outcomes_along, tally, AttackContext, AttackParams,
    InputAttack, Method,
};
use rgshield::linalg::dense::{from_row_major, sym_eigen};
use rgshield::model::standard_normal;
use rgshield::model::RbmParts;
use rgshield::perturb::{
    binary_flip, fgsm_delta, mean_field_margin, pgd, project_ball_box, step_to_norm, FgsmKind,
};
use rgshield::rg::BasisChoice;
use rgshield::rg::{FlowParams, OperatorBasis};
use rgshield::{DeepRbm, Rbm};
use rgshield::{NoProgress, Params};

/// A random stack with Gaussian weights of std `scale` and Gaussian biases (std 0.5).
fn stack(widths: &[usize], scale: f32, seed: u64) -> DeepRbm {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2000 + seed);
    let m = DeepRbm::random(widths, scale, &mut rng).unwrap();
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

fn binary_input(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(77 + seed);
    (0..n)
        .map(|_| if rng.random::<f64>() < 0.5 { 1.0 } else { 0.0 })
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

fn diff_norm(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn fisher_direction_is_the_exact_top_eigenvector() {
    // Tiny stacks [6, 5, 4], complete bases, many samples: the direct estimator is exact up to
    // sampling, so its top eigenvector must match that of the enumerated F_x where the gap is clear.
    let widths = [6usize, 5, 4];
    let mut checked = 0;
    let mut worst = 0.0f64;
    for seed in 0..6 {
        let m = stack(&widths, 1.5, seed);
        let x = binary_input(6, seed);
        let e = from_row_major(&exact::fisher_input(&m, &x).unwrap(), 6, 6).unwrap();
        let (vals, u) = sym_eigen(e.as_ref()).unwrap();
        let gap = vals[4] / vals[5];
        if gap > 0.5 {
            println!("seed {seed}: λ2/λ1 = {gap:.2}, gap not clear, skipped");
            continue;
        }
        let v_exact: Vec<f64> = (0..6).map(|i| u[(i, 5)]).collect();
        let bases: Vec<OperatorBasis> = widths[1..]
            .iter()
            .map(|&w| OperatorBasis::complete(w).unwrap())
            .collect();
        let flow = FlowParams {
            samples: 200_000,
            seed: 11,
            blocks: 1,
            ..FlowParams::default()
        }
        .check()
        .unwrap();
        let (v, _vmf, rep) = fisher_directions(&m, &x, &bases, &flow).unwrap();
        let overlap: f64 = v
            .iter()
            .zip(&v_exact)
            .map(|(a, b)| a * b)
            .sum::<f64>()
            .abs();
        println!(
            "seed {seed}: λ1 exact {:.4} sampled {:.4}, λ2/λ1 = {gap:.2}, |<v, v_exact>| = {overlap:.6}",
            vals[5], rep.direct.top
        );
        assert!((norm(&v) - 1.0).abs() < 1e-12);
        worst = worst.max(1.0 - overlap);
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} stacks with a clear gap");
    assert!(worst <= 2e-3, "worst 1 − |<v, v_exact>| = {worst:.2e}");
}

#[test]
fn margin_gradient_matches_central_differences() {
    let mut worst = 0.0f64;
    for seed in 0..5 {
        let m = stack(&[7, 6, 5, 4], 1.5, seed);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let x: Vec<f64> = (0..7).map(|_| rng.random::<f64>()).collect();
        for class in 0..4 {
            let (m0, g) = mean_field_margin(&m, &x, class).unwrap();
            let h = 1e-6;
            let fd: Vec<f64> = (0..7)
                .map(|i| {
                    let mut p = x.clone();
                    let mut q = x.clone();
                    p[i] += h;
                    q[i] -= h;
                    (mean_field_margin(&m, &p, class).unwrap().0
                        - mean_field_margin(&m, &q, class).unwrap().0)
                        / (2.0 * h)
                })
                .collect();
            let rel = diff_norm(&g, &fd) / norm(&g).max(1e-300);
            worst = worst.max(rel);
            assert!(m0.abs() <= 1.0);
        }
    }
    println!("margin gradient vs central differences: worst relative error {worst:.1e}");
    assert!(worst <= 1e-6, "relative error {worst}");
}

#[test]
fn fgsm_steps_have_norm_epsilon_before_clipping() {
    let g = [0.3, -0.0, -2.0, 1e-9, 0.7];
    for eps in [0.1, 1.0, 3.0] {
        for kind in [FgsmKind::L2, FgsmKind::Sign] {
            let d = fgsm_delta(&g, eps, kind);
            assert!((norm(&d) - eps).abs() <= 1e-12 * eps, "{kind:?}");
            // Descent direction: δ·∇m < 0.
            let dg: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
            assert!(dg < 0.0);
        }
        // Sign form: equal magnitudes on the non-zero components, zero where ∇m = 0.
        let s = fgsm_delta(&g, eps, FgsmKind::Sign);
        assert_eq!(s[1], 0.0);
        let mag = eps / 2.0; // four non-zero components
        for i in [0, 2, 3, 4] {
            assert!((s[i].abs() - mag).abs() < 1e-12);
        }
    }
    assert!(fgsm_delta(&[0.0, 0.0], 1.0, FgsmKind::L2)
        .iter()
        .all(|v| *v == 0.0));
}

#[test]
fn step_to_norm_reaches_epsilon_inside_the_box_or_saturates() {
    // x binary: of d = (1, 1, −1, −1, 0.5) only components 0, 3 and 4 are feasible.
    let x = [0.0, 1.0, 0.0, 1.0, 0.0];
    let d = [1.0, 1.0, -1.0, -1.0, 0.5];
    for eps in [0.1, 0.5, 1.0, 1.4] {
        let (xp, n) = step_to_norm(&x, &d, eps);
        assert!((n - eps).abs() < 1e-12, "ε {eps}: norm {n}");
        assert!(xp.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!((xp[1], xp[2]), (1.0, 0.0), "infeasible components moved");
    }
    // Largest reachable norm √3: beyond it, the saturated point.
    let (xp, n) = step_to_norm(&x, &d, 3.0);
    assert!((n - 3f64.sqrt()).abs() < 1e-12);
    assert_eq!(xp, vec![1.0, 1.0, 0.0, 0.0, 1.0]);
}

#[test]
fn ball_box_projection_is_the_nearest_feasible_point() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
    for _ in 0..50 {
        let n = 8;
        let x: Vec<f64> = (0..n)
            .map(|_| if rng.random::<f64>() < 0.5 { 1.0 } else { 0.0 })
            .collect();
        let z: Vec<f64> = (0..n)
            .map(|_| 2.0 * standard_normal(&mut rng) as f64)
            .collect();
        let eps = 0.2 + 2.0 * rng.random::<f64>();
        let p = project_ball_box(&x, &z, eps);
        assert!(norm(&p) <= eps * (1.0 + 1e-12));
        assert!(x
            .iter()
            .zip(&p)
            .all(|(a, b)| (0.0..=1.0).contains(&(a + b))));
        // No random feasible point is nearer to z.
        let best = diff_norm(&p, &z);
        for _ in 0..200 {
            let mut q: Vec<f64> = x
                .iter()
                .map(|&xi| (rng.random::<f64>() - xi).clamp(-xi, 1.0 - xi))
                .collect();
            let nq = norm(&q);
            if nq > eps {
                q.iter_mut().for_each(|v| *v *= eps / nq);
            }
            assert!(diff_norm(&q, &z) >= best - 1e-9);
        }
    }
}

#[test]
fn pgd_never_leaves_the_ball_or_the_box_and_lowers_the_margin() {
    let m = stack(&[10, 8, 6, 4], 2.0, 9);
    let mut lowered = 0;
    let mut total = 0;
    for seed in 0..8 {
        let x: Vec<f64> = binary_input(10, seed).iter().map(|&v| v as f64).collect();
        for class in 0..4 {
            let (m0, _) = mean_field_margin(&m, &x, class).unwrap();
            for eps in [0.1, 0.5, 1.0, 3.0] {
                for steps in [1, 10] {
                    let xp = pgd(&m, &x, class, eps, steps).unwrap();
                    assert!(xp.iter().all(|v| (0.0..=1.0).contains(v)));
                    let d = diff_norm(&xp, &x);
                    assert!(d <= eps * (1.0 + 1e-12), "ε {eps}: ‖δ‖ = {d}");
                    let (m1, _) = mean_field_margin(&m, &xp, class).unwrap();
                    total += 1;
                    lowered += (m1 < m0) as usize;
                }
            }
        }
    }
    // Descent on the margin: (almost) every run lowers it.
    assert!(lowered * 10 >= total * 9, "{lowered} of {total} lowered");
}

/// A 2-2-2 model in which the class is pixel 0, deterministically (weights ±20): h_1 copies x,
/// the output is one-hot of h_{1,0}. Pixel 1 cannot change the class.
fn pixel0_classifier() -> DeepRbm {
    let rbm = |w: Vec<f32>, a: Vec<f32>| {
        Rbm::new(RbmParts {
            n_down: 2,
            n_up: 2,
            w,
            a,
            b: vec![0.0; 2],
        })
        .unwrap()
    };
    DeepRbm::new(vec![
        rbm(vec![20.0, 0.0, 0.0, 20.0], vec![-10.0, -10.0]),
        rbm(vec![-20.0, 0.0, 20.0, 0.0], vec![10.0, -10.0]),
    ])
    .unwrap()
}

fn record(index: usize, label: u32, served_class: usize) -> InputAttack {
    InputAttack {
        index,
        label,
        served_class,
        correct: served_class == label as usize,
        mean_field_margin: 0.0,
        fisher_top_direct: 0.0,
        fisher_top_mean_field: 0.0,
        fisher_top_bound: 0.0,
        fisher_sign: 1.0,
        fisher_mf_sign: 1.0,
        fisher_overlap: 0.0,
        fisher_gradient_cosine: 0.0,
        layers: Vec::new(),
        outcomes: Vec::new(),
        examples: Vec::new(),
        clean: Vec::new(),
    }
}

#[test]
fn success_bookkeeping_on_a_model_with_a_known_answer() {
    let m = pixel0_classifier();
    let cfg = AttackParams {
        inputs: vec![0],
        basis: BasisChoice::Order1,
        samples: 100,
        serve_samples: 64,
        ..AttackParams::default()
    }
    .check()
    .unwrap();
    let ctx = AttackContext::new(&m, &[], &cfg).unwrap();
    let eps = [0.3, 1.0, 3.0];
    // Four inputs labelled by pixel 0 (all served correctly), and one mislabelled (not attacked).
    let cases: [([f32; 2], u32); 5] = [
        ([0.0, 0.0], 0),
        ([0.0, 1.0], 0),
        ([1.0, 0.0], 1),
        ([1.0, 1.0], 1),
        ([0.0, 0.0], 1),
    ];
    let mut records = Vec::new();
    for (i, (x, label)) in cases.iter().enumerate() {
        let served = ctx.served_class(x);
        assert_eq!(served, x[0] as usize, "served class of {x:?}");
        let mut r = record(i, *label, served);
        if r.correct {
            // Toward the other value of pixel 0 (can flip the class) / of pixel 1 (cannot).
            let d0 = [1.0 - 2.0 * x[0] as f64, 0.0];
            let d1 = [0.0, 1.0 - 2.0 * x[1] as f64];
            let l = *label as usize;
            r.outcomes
                .extend(outcomes_along(&ctx, x, l, served, Method::Fisher, &d0, &eps).unwrap());
            r.outcomes
                .extend(outcomes_along(&ctx, x, l, served, Method::Random, &d1, &eps).unwrap());
            // Binary: the flip of pixel 0 changes the class, that of pixel 1 does not.
            for (method, score) in [(Method::BinaryFisher, d0), (Method::BinaryRandom, d1)] {
                let (xb, flipped) = binary_flip(x, &score, 1);
                assert_eq!(flipped, 1);
                let xb: Vec<f64> = xb.iter().map(|&v| v as f64).collect();
                r.outcomes
                    .push(judge(&ctx, x, l, served, method, 1.0, &xb).unwrap());
            }
        }
        records.push(r);
    }
    let rates = tally(&records, 2);
    let get = |m: Method, b: f64| {
        rates
            .iter()
            .find(|r| r.method == m && r.budget == b)
            .unwrap()
            .clone()
    };
    // ε = 0.3: pixel 0 at 0.3 or 0.7 stays on its side of the deterministic threshold.
    let r = get(Method::Fisher, 0.3);
    assert_eq!((r.attacked, r.successes), (4, 0));
    let r = get(Method::Fisher, 1.0);
    assert_eq!((r.attacked, r.successes, r.rate), (4, 4, Some(1.0)));
    assert_eq!(
        r.per_class
            .iter()
            .map(|c| (c.attacked, c.successes))
            .collect::<Vec<_>>(),
        vec![(2, 2), (2, 2)]
    );
    assert!((r.mean_norm.unwrap() - 1.0).abs() < 1e-12);
    // ε = 3 is out of reach in one pixel: saturated, actual norm 1, still a success.
    let r = get(Method::Fisher, 3.0);
    assert_eq!(r.successes, 4);
    assert!((r.mean_norm.unwrap() - 1.0).abs() < 1e-12);
    for b in eps {
        let r = get(Method::Random, b);
        assert_eq!((r.attacked, r.successes, r.rate), (4, 0, Some(0.0)));
    }
    let r = get(Method::BinaryFisher, 1.0);
    assert_eq!((r.attacked, r.successes), (4, 4));
    let r = get(Method::BinaryRandom, 1.0);
    assert_eq!((r.attacked, r.successes), (4, 0));
}

/// The digits 0, 1 and 2 of the embedded data set (a 3-class problem keeps the complete output
/// basis at 7 operators, so the end-to-end run is quick).
fn three_digits() -> data::Dataset {
    let d = data::load(&DataSpec::Digits, &LoadOptions::default()).unwrap();
    let keep = |s: &data::Split| {
        let mut out = data::Split {
            x: Vec::new(),
            y: Vec::new(),
            n_features: s.n_features,
        };
        for (i, &y) in s.y.iter().enumerate() {
            if y < 3 {
                out.x.extend_from_slice(s.row(i));
                out.y.push(y);
            }
        }
        out
    };
    data::Dataset {
        name: "digits-012".into(),
        class_names: vec!["0".into(), "1".into(), "2".into()],
        train: keep(&d.train),
        test: keep(&d.test),
        ..d
    }
}

#[test]
fn attack_run_is_complete_and_independent_of_the_thread_count() {
    let d = three_digits();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let model = DeepRbm::random(&[64, 8, 6, 3], 1.0, &mut rng).unwrap();
    let cfg = AttackParams {
        inputs: (0..40).collect(),
        epsilons: vec![0.5, 1.0, 4.0],
        pixels: vec![2, 8],
        samples: 2000,
        basis: BasisChoice::TopPairs(4),
        pilot_samples: 400,
        serve_samples: 16,
        pgd_steps: 5,
        ..AttackParams::default()
    };
    let cfg_checked = cfg.clone().check().unwrap();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| attack(&model, &d, &cfg_checked, &NoProgress).unwrap());
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| attack(&model, &d, &cfg_checked, &NoProgress).unwrap());
    let strip = |r: &rgshield::experiments::attack::AttackReport| {
        let mut v = serde_json::to_value(r).unwrap();
        v["seconds"] = serde_json::Value::Null;
        v
    };
    assert_eq!(
        strip(&one),
        strip(&two),
        "report depends on the thread count"
    );
    let r = one;
    assert_eq!(r.n_inputs, 40);
    assert_eq!(r.operators, vec![8 + 4, 6 + 4, 7]);
    let correct = r.inputs.iter().filter(|i| i.correct).count();
    assert_eq!(r.n_correct, correct);
    assert!(
        correct > 0,
        "a random model got no input right; pick another seed"
    );
    // One result per method and budget, each over the attacked inputs.
    assert_eq!(r.results.len(), 6 * 3 + 3 * 2);
    for m in &r.results {
        assert_eq!(m.attacked, correct);
        assert_eq!(
            m.per_class.iter().map(|c| c.attacked).sum::<usize>(),
            correct
        );
        assert_eq!(
            m.per_class.iter().map(|c| c.successes).sum::<usize>(),
            m.successes
        );
        let n = m.mean_norm.unwrap();
        if m.method.is_binary() {
            assert!(n <= m.budget.sqrt() + 1e-9);
        } else {
            assert!(
                n <= m.budget + 1e-6,
                "{:?} ε {}: norm {n}",
                m.method,
                m.budget
            );
        }
    }
    for i in &r.inputs {
        assert_eq!(i.label, d.test.y[i.index]);
        // Data-processing bound (up to sampling): the stochastic reading stays below the bound.
        assert!(i.fisher_top_direct <= 1.2 * i.fisher_top_bound);
        assert_eq!(i.outcomes.is_empty(), !i.correct);
    }
    let v = &r.vulnerability;
    assert_eq!(v.inputs, 40);
    assert_eq!(v.layers.iter().map(|l| l.k).collect::<Vec<_>>(), vec![2, 3]);
    assert!(v.layers.iter().all(|l| l.labelling_dependent));
    for l in &v.layers {
        assert!(l.top_canonical_correlation.max.unwrap() <= 1.0 + 1e-9);
    }
    assert!(v.success_fisher.is_some() && v.success_pgd.is_some());
    assert!(v.fisher_top_direct.median.unwrap() > 0.0);
    // Bad settings are errors, not panics.
    let bad = AttackParams {
        inputs: vec![d.test.len()],
        ..cfg.clone()
    }
    .check()
    .unwrap();
    assert!(attack(&model, &d, &bad, &NoProgress)
        .unwrap_err()
        .to_string()
        .contains("out of range"));
    let bad = AttackParams {
        epsilons: vec![f64::NAN],
        ..cfg
    };
    assert!(bad.check().is_err());
}

proptest! {
    // A fixed seed: the same cases on every run (CI included). The regressions file keeps the
    // case a random-seeded CI run once found (step_to_norm's cancellation, since fixed).
    #![proptest_config(ProptestConfig {
        cases: 1024,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_261_125),
        ..ProptestConfig::default()
    })]

    #[test]
    fn binary_attack_only_writes_zeros_and_ones(
        bits in proptest::collection::vec(any::<bool>(), 1..40),
        scores in proptest::collection::vec(-1.0f64..1.0, 40),
        zeros in proptest::collection::vec(any::<bool>(), 40),
        k in 0usize..50,
    ) {
        let x: Vec<f32> = bits.iter().map(|&b| b as u8 as f32).collect();
        // Some exact zeros in the score: never a reason to flip.
        let score: Vec<f64> = scores[..x.len()]
            .iter()
            .zip(&zeros)
            .map(|(&s, &z)| if z { 0.0 } else { s })
            .collect();
        let (xb, flipped) = binary_flip(&x, &score, k);
        prop_assert!(xb.iter().all(|&v| v == 0.0 || v == 1.0));
        let feasible = x
            .iter()
            .zip(&score)
            .filter(|(&xi, &s)| (xi == 0.0 && s > 0.0) || (xi == 1.0 && s < 0.0))
            .count();
        prop_assert_eq!(flipped, k.min(feasible));
        let changed: Vec<usize> = (0..x.len()).filter(|&i| xb[i] != x[i]).collect();
        prop_assert_eq!(changed.len(), flipped);
        for &i in &changed {
            let allowed = (x[i] == 0.0 && score[i] > 0.0) || (x[i] == 1.0 && score[i] < 0.0);
            prop_assert!(allowed, "pixel {} flipped against its score", i);
        }
    }

    #[test]
    fn directional_steps_stay_in_the_box_at_norm_at_most_epsilon(
        bits in proptest::collection::vec(any::<bool>(), 1..30),
        dir in proptest::collection::vec(-1.0f64..1.0, 30),
        eps in 0.01f64..6.0,
    ) {
        let x: Vec<f64> = bits.iter().map(|&b| b as u8 as f64).collect();
        let d = &dir[..x.len()];
        let (xp, n) = step_to_norm(&x, d, eps);
        prop_assert!(xp.iter().all(|v| (0.0..=1.0).contains(v)));
        prop_assert!((diff_norm(&xp, &x) - n).abs() < 1e-12);
        prop_assert!(n <= eps * (1.0 + 1e-12));
        let reachable = x
            .iter()
            .zip(d)
            .filter(|(&xi, &di)| (xi == 0.0 && di > 0.0) || (xi == 1.0 && di < 0.0))
            .count() as f64;
        if eps * eps < reachable - 1e-9 {
            prop_assert!((n - eps).abs() < 1e-9 * eps.max(1.0));
        }
    }
}

#[test]
fn attack_cli_writes_its_report_and_plots_and_rejects_bad_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let mdir = dir.path().join("m");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let model = DeepRbm::random(&[64, 6, 10], 1.0, &mut rng).unwrap();
    let names: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let meta = rgshield::model::io::ModelMeta::new(&model, names);
    rgshield::model::io::save(&mdir, &model, &meta).unwrap();
    let out = dir.path().join("attack");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "attack",
            "--model",
            mdir.to_str().unwrap(),
            "--data",
            "digits",
            "--inputs",
            "0..3",
            "--samples",
            "300",
            "--serve-samples",
            "8",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_rgshield"))
            .args(&args)
            .output()
            .unwrap()
    };
    let o = run(&["--epsilons", "1,2", "--pixels", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("| fisher |") && stdout.contains("k=2"),
        "{stdout}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("attack.json")).unwrap()).unwrap();
    assert_eq!(j["n_inputs"], 3);
    assert!(j["vulnerability"]["fisher_top_direct"]["median"].is_number());
    assert_eq!(j["settings"]["epsilons"], serde_json::json!([1.0, 2.0]));
    if j["n_correct"].as_u64().unwrap() > 0 {
        assert!(out.join("attack_curves.png").is_file());
        assert!(out.join("attack_examples.png").is_file());
    }
    let o = run(&["--epsilons", "0,1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ε = 0 "), "{err}");
}

/// A one-RBM model (N = 1, exact served output σ(W x + a)) whose class is the larger of x_0 and
/// x_1: `W = 4 I`, `a = 0`. Its decision boundary is the line x_0 = x_1.
fn diagonal_boundary() -> DeepRbm {
    DeepRbm::new(vec![Rbm::new(RbmParts {
        n_down: 2,
        n_up: 2,
        w: vec![4.0, 0.0, 0.0, 4.0],
        a: vec![0.0, 0.0],
        b: vec![0.0, 0.0],
    })
    .unwrap()])
    .unwrap()
}

#[test]
fn minimal_norm_bisection_finds_the_known_decision_boundary() {
    use rgshield::perturb::{minimal_budget, pgd, step_to_norm, Bisection};
    use rgshield::sample::{argmax, OutputMode, Predictor};
    let m = diagonal_boundary();
    let served = Predictor::new(
        &m,
        OutputMode::Served {
            samples: 1,
            seed: 0,
        },
    );
    let class = |xp: &[f64]| {
        let xf: Vec<f32> = xp.iter().map(|&v| v as f32).collect();
        argmax(&served.output(&xf))
    };
    let x = [0.8, 0.2];
    assert_eq!(class(&x), 0);
    // Distance from x to the line x_0 = x_1: |0.8 − 0.2| / √2, reached along (−1, 1)/√2 (the
    // normal of the boundary) and by PGD (the nearest point of the boundary is (0.5, 0.5)).
    let exact = 0.6 / 2f64.sqrt();
    let b = Bisection {
        max: 2f64.sqrt(),
        tol: 1e-3,
    };
    let d = [-1.0 / 2f64.sqrt(), 1.0 / 2f64.sqrt()];
    let along = minimal_budget(b, |e| {
        let (xp, n) = step_to_norm(&x, &d, e);
        Ok((class(&xp) != 0).then_some(n))
    })
    .unwrap()
    .expect("the boundary is inside the box");
    assert!(
        along.budget >= exact && along.budget <= exact + b.tol,
        "{} vs {exact}",
        along.budget
    );
    assert!((along.norm - along.budget).abs() < 1e-9);
    let by_pgd = minimal_budget(b, |e| {
        let xp = pgd(&m, &x, 0, e, 20)?;
        let n = ((xp[0] - x[0]).powi(2) + (xp[1] - x[1]).powi(2)).sqrt();
        Ok((class(&xp) != 0).then_some(n))
    })
    .unwrap()
    .expect("PGD crosses the boundary");
    // No attack beats the true distance; PGD's finite steps (20 of 2.5ε/20, circling on the
    // sphere) land within 2% of it here (0.4281 against 0.4243).
    assert!(
        by_pgd.budget >= exact - 1e-9 && by_pgd.budget <= 1.02 * exact + b.tol,
        "{} vs {exact}",
        by_pgd.budget
    );
    // A direction parallel to the boundary never crosses it: censored at the box diagonal.
    let parallel = [1.0 / 2f64.sqrt(), 1.0 / 2f64.sqrt()];
    let none = minimal_budget(b, |e| {
        let (xp, n) = step_to_norm(&x, &parallel, e);
        Ok((class(&xp) != 0).then_some(n))
    })
    .unwrap();
    assert_eq!(none, None);
}

#[test]
fn minimal_budget_brackets_a_threshold_and_refuses_bad_settings() {
    use rgshield::perturb::{minimal_budget, Bisection};
    let b = Bisection {
        max: 4.0,
        tol: 0.01,
    };
    let mut tried = Vec::new();
    let found = minimal_budget(b, |e| {
        tried.push(e);
        Ok((e >= 1.3).then_some(e))
    })
    .unwrap()
    .unwrap();
    assert!(
        found.budget >= 1.3 && found.budget <= 1.3 + 0.01,
        "{found:?}"
    );
    assert_eq!(found.evaluations, tried.len());
    assert_eq!(tried[0], 4.0); // the largest budget first
    for bad in [
        Bisection { max: 0.0, tol: 0.1 },
        Bisection { max: 1.0, tol: 0.0 },
        Bisection {
            max: f64::INFINITY,
            tol: 0.1,
        },
    ] {
        assert!(minimal_budget(bad, |_| Ok(Some(0.0))).is_err());
    }
}
