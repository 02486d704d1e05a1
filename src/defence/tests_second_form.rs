//! Tests of the second-form defences (SPEC §11) and of the defence syntax: the guarantees of
//! every class-keeping defence (property tests over K = 2…12 with ties, near-ties, saturated and
//! uniform rows), the LP against brute-force enumeration of F's vertices, the vertex solver
//! against the same enumeration and a dense search, objective B against the enumerated KL of the
//! whole generation chain, and the syntax's round trips and errors.

use std::sync::Arc;

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::feasible::FeasibleSet;
use super::lp::maximize_linear;
use super::objectives::VertexObjective;
use super::spec::{DefenceSweep, RgObjective};
use super::surrogate::{Surrogate, SurrogateKind};
use super::vertex::{maximise, partner_table, VertexDefence, VertexRule};
use super::*;
use crate::exact;
use crate::model::standard_normal;
use crate::rg::OutputReading;
use crate::sample::argmax;
use crate::DeepRbm;

// ---------------------------------------------------------------------------------------------
// A context for K classes: a random victim [6, 5, K] and a cache with random PSD Fisher matrices.

fn victim(k: usize, seed: u64) -> DeepRbm {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    DeepRbm::random(&[6, 5, k], 1.5, &mut rng)
        .unwrap()
        .edited(|_, p| {
            for b in &mut p.b {
                *b = 0.5 * standard_normal(&mut rng);
            }
        })
        .unwrap()
}

fn cache(k: usize, reading: OutputReading, seed: u64) -> PoisonCache {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let dirs: Vec<Vec<f64>> = (0..k)
        .map(|c| rg::random_sum_zero_unit(k, seed + c as u64).unwrap())
        .collect();
    let mut c = PoisonCache::from_directions(reading, dirs, vec![1.0; k], "test").unwrap();
    // F = P Aᵀ A P with a random A: symmetric PSD, sum-zero rows.
    c.fisher = (0..k)
        .map(|_| {
            let a: Vec<f64> = (0..k * k)
                .map(|_| standard_normal(&mut rng) as f64)
                .collect();
            let mut f = vec![0.0; k * k];
            for i in 0..k {
                for j in 0..k {
                    f[i * k + j] = (0..k).map(|r| a[r * k + i] * a[r * k + j]).sum();
                }
            }
            // P F P with P = I − 11ᵀ/k.
            let row_mean: Vec<f64> = (0..k)
                .map(|i| (0..k).map(|j| f[i * k + j]).sum::<f64>() / k as f64)
                .collect();
            let all_mean = row_mean.iter().sum::<f64>() / k as f64;
            (0..k * k)
                .map(|ij| {
                    let (i, j) = (ij / k, ij % k);
                    f[ij] - row_mean[i] - row_mean[j] + all_mean
                })
                .collect()
        })
        .collect();
    c.validate().unwrap();
    c
}

/// Every class-keeping second-form defence (and `mad`) for K classes, built with a test key.
fn defences(k: usize, eps: f64) -> Vec<Box<dyn Defence>> {
    let m = victim(k, 7 + k as u64);
    let caches = PoisonCaches::with(vec![
        cache(k, OutputReading::PlugIn, 11),
        cache(k, OutputReading::Mixture, 12),
    ]);
    let key = Key::public("tests");
    let ctx = DefenceContext {
        model: &m,
        key: &key,
        caches: &caches,
    };
    [
        format!("rg-vertex:objective=A,eps={eps}"),
        format!("rg-vertex:objective=B,eps={eps}"),
        format!("rg-vertex:objective=B,reading=C,eps={eps}"),
        "rg-logit:tau=2".to_string(),
        format!("mad-argmax:eps={eps}"),
        format!("mad-argmax:eps={eps},surrogate=victim"),
        format!("grad2-argmax:eps={eps}"),
        format!("random-vertex:eps={eps}"),
        format!("random-fixed:eps={eps}"),
        format!("partner-table:eps={eps}"),
        format!("mad:eps={eps}"),
    ]
    .iter()
    .map(|s| s.parse::<DefenceParams>().unwrap().build(&ctx).unwrap())
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Property test of the guarantees.

/// Served rows: K = 2…12; random, tied, near-tied, saturated, uniform, tiny-mass.
fn served() -> impl Strategy<Value = Vec<f32>> {
    (2usize..=12, 0u8..6, any::<u64>()).prop_map(|(k, kind, seed)| {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut y: Vec<f32> = (0..k).map(|_| rng.random::<f32>()).collect();
        let c = (seed % k as u64) as usize;
        match kind {
            0 => {}
            1 => {
                // An exact tie at the top.
                let j = (c + 1) % k;
                y[c] = 0.9;
                y[j] = 0.9;
            }
            2 => {
                // A near-tie: the runner-up 1e-7 below.
                let j = (c + 1) % k;
                y[c] = 0.6;
                y[j] = 0.6 - 1e-7;
            }
            3 => {
                // Saturated: exact 1 and exact 0s, some tiny values.
                for (i, v) in y.iter_mut().enumerate() {
                    *v = if i == c {
                        1.0
                    } else if i % 2 == 0 {
                        0.0
                    } else {
                        1e-6
                    };
                }
            }
            4 => y.iter_mut().for_each(|v| *v = 1.0 / k as f32),
            _ => {
                // A confident sigmoid output: one near 1, the others near 1e-4.
                for (i, v) in y.iter_mut().enumerate() {
                    *v = if i == c { 0.97 } else { 1e-4 * (1.0 + *v) };
                }
            }
        }
        y
    })
}

fn check_answer(d: &dyn Defence, y: &[f32], eps: f64) -> Result<(), TestCaseError> {
    let (m, f) = (0.02f64, 1e-4f64);
    let name = d.name();
    let q = Query {
        x: &[0.0, 1.0, 0.0, 1.0, 1.0, 0.0],
        y,
        seed: 9,
    };
    let out = d.apply(&q).unwrap();
    prop_assert_eq!(
        out.clone(),
        d.apply(&q).unwrap(),
        "{} not deterministic",
        &name
    );
    prop_assert_eq!(out.len(), y.len());
    prop_assert!(out.iter().all(|v| v.is_finite()));
    let keeps = d.keeps_argmax();
    let set = FeasibleSet::new(y, eps, m, f, keeps);
    let Some(set) = set else {
        // Degenerate mass: served unchanged.
        prop_assert_eq!(out, y.to_vec(), "{}", &name);
        return Ok(());
    };
    let (lo, hi) = (f as f32, (1.0 - f) as f32);
    prop_assert!(
        out.iter().all(|&v| v >= lo && v <= hi),
        "{}: {:?} leaves [f, 1−f] for {:?}",
        &name,
        out,
        y
    );
    let (s0, s1): (f64, f64) = (
        y.iter().map(|&v| v as f64).sum(),
        out.iter().map(|&v| v as f64).sum(),
    );
    prop_assert!((s0 - s1).abs() <= 1e-5, "{}: sum {} → {}", &name, s0, s1);
    if keeps {
        let c = argmax(y);
        prop_assert_eq!(argmax(&out), c, "{}: class changed for {:?}", &name, y);
        let gap = out
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != c)
            .map(|(_, &v)| out[c] as f64 - v as f64)
            .fold(f64::INFINITY, f64::min);
        prop_assert!(
            gap >= set.margin - 1e-6,
            "{}: margin {} < {} for {:?} → {:?}",
            &name,
            gap,
            set.margin,
            y,
            out
        );
    }
    if !name.starts_with("rg-logit") {
        let l1: f64 = y
            .iter()
            .zip(&out)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum();
        let floor_cost = set.l1_from_base(&set.served);
        prop_assert!(
            l1 <= eps.max(floor_cost) + 1e-6,
            "{}: L1 {} > ε {} for {:?} → {:?}",
            &name,
            l1,
            eps,
            y,
            out
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 192,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_261_130),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_second_form_defence_keeps_its_guarantees(
        y in served(),
        eps in prop_oneof![Just(0.01), Just(0.1), Just(0.6), Just(1.5), 0.01f64..2.0],
    ) {
        for d in defences(y.len(), eps) {
            check_answer(d.as_ref(), &y, eps)?;
        }
    }
}

#[test]
fn tiny_budgets_serve_the_floored_row() {
    // ε below the floor's own cost: the answer is y0 (the floor wins over the budget).
    let y = [1.0f32, 0.0, 0.0, 0.0];
    let set = FeasibleSet::new(&y, 1e-6, 0.02, 1e-4, true).unwrap();
    for d in defences(4, 1e-6) {
        if d.name().starts_with("rg-logit") {
            continue;
        }
        let out = d
            .apply(&Query {
                x: &[0.0; 6],
                y: &y,
                seed: 1,
            })
            .unwrap();
        let want: Vec<f32> = set.y0.iter().map(|&v| v as f32).collect();
        assert_eq!(out, want, "{}", d.name());
    }
}

// ---------------------------------------------------------------------------------------------
// The solvers against brute force.

/// Every vertex of F (K ≤ 5): solutions of the equality row with K − 1 active inequalities among
/// the box rows, the margin rows and the 2^K facets of the L1 ball, that satisfy every row.
fn vertices(set: &FeasibleSet) -> Vec<Vec<f64>> {
    let k = set.len();
    let (f, c) = (set.floor, set.class);
    let mut rows: Vec<(Vec<f64>, f64)> = Vec::new(); // a·y ≤ b
    for i in 0..k {
        let mut e = vec![0.0; k];
        e[i] = 1.0;
        rows.push((e.clone(), 1.0 - f));
        rows.push((e.iter().map(|v| -v).collect(), -f));
    }
    if set.keeps_class {
        for j in 0..k {
            if j != c {
                let mut a = vec![0.0; k];
                a[j] = 1.0;
                a[c] = -1.0;
                rows.push((a, -set.margin));
            }
        }
    }
    for signs in 0..(1u32 << k) {
        let a: Vec<f64> = (0..k)
            .map(|i| if signs >> i & 1 == 1 { 1.0 } else { -1.0 })
            .collect();
        let b = set.budget + a.iter().zip(&set.y0).map(|(s, y)| s * y).sum::<f64>();
        rows.push((a, b));
    }
    let feasible = |y: &[f64]| {
        (y.iter().sum::<f64>() - set.mass).abs() < 1e-9
            && rows
                .iter()
                .all(|(a, b)| a.iter().zip(y).map(|(p, q)| p * q).sum::<f64>() <= b + 1e-9)
    };
    let mut out = Vec::new();
    let n = rows.len();
    let mut pick = vec![0usize; k - 1];
    fn next(pick: &mut [usize], n: usize) -> bool {
        let m = pick.len();
        for i in (0..m).rev() {
            if pick[i] < n - (m - i) {
                pick[i] += 1;
                for j in i + 1..m {
                    pick[j] = pick[j - 1] + 1;
                }
                return true;
            }
        }
        false
    }
    for (i, p) in pick.iter_mut().enumerate() {
        *p = i;
    }
    loop {
        // Solve [1ᵀ; a_p] y = [M; b_p] by Gaussian elimination with partial pivoting.
        let mut m: Vec<Vec<f64>> = vec![[vec![1.0; k], vec![set.mass]].concat()];
        for &r in &pick {
            m.push([rows[r].0.clone(), vec![rows[r].1]].concat());
        }
        let mut ok = true;
        for col in 0..k {
            let piv = (col..k)
                .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
                .unwrap();
            if m[piv][col].abs() < 1e-12 {
                ok = false;
                break;
            }
            m.swap(col, piv);
            for r in 0..k {
                if r != col {
                    let fct = m[r][col] / m[col][col];
                    for cc in col..=k {
                        m[r][cc] -= fct * m[col][cc];
                    }
                }
            }
        }
        if ok {
            let y: Vec<f64> = (0..k).map(|i| m[i][k] / m[i][i]).collect();
            if feasible(&y) {
                out.push(y);
            }
        }
        if !next(&mut pick, n) {
            break;
        }
    }
    out
}

fn random_row(k: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
    let mut y: Vec<f32> = (0..k).map(|_| rng.random::<f32>()).collect();
    // Often a confident row.
    if rng.random::<f32>() < 0.5 {
        let c = (rng.next_u64() % k as u64) as usize;
        y[c] = 0.8 + 0.19 * rng.random::<f32>();
    }
    y
}

#[test]
fn grad2_is_the_exact_optimum_of_its_linear_programme() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let mut worst = 0.0f64;
    let mut cases = 0;
    for k in 2..=5 {
        for _ in 0..40 {
            let y = random_row(k, &mut rng);
            let eps = [0.05, 0.2, 0.6, 1.5][(rng.next_u64() % 4) as usize];
            let Some(set) = FeasibleSet::new(&y, eps, 0.02, 1e-4, true) else {
                continue;
            };
            if !set.can_move() {
                continue;
            }
            let w: Vec<f64> = (0..k).map(|_| standard_normal(&mut rng) as f64).collect();
            let got = maximize_linear(&set, &w);
            assert!(set.contains_polytope(&got), "{y:?} → {got:?}");
            assert!(set.l1_from_base(&got) <= set.budget + 1e-9);
            let value = |v: &[f64]| v.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>();
            let best = vertices(&set)
                .iter()
                .map(|v| value(v))
                .fold(f64::NEG_INFINITY, f64::max);
            let short = best - value(&got);
            worst = worst.max(short);
            cases += 1;
            assert!(
                short <= 1e-9,
                "K={k} ε={eps} {y:?} w={w:?}: LP {} vs vertices {best}",
                value(&got)
            );
        }
    }
    println!("grad2 LP vs brute force over {cases} cases: largest shortfall {worst:.1e}");
    assert!(cases > 100);
}

/// The largest objective over F's vertices (exact for convex objectives), and over a dense grid
/// of F (K ≤ 4, step h) for the others.
fn dense_max(set: &FeasibleSet, eval: &dyn Fn(&[f64]) -> f64, h: f64) -> f64 {
    let k = set.len();
    let mut best = f64::NEG_INFINITY;
    let steps = (1.0 / h) as usize;
    let mut idx = vec![0usize; k - 1];
    loop {
        let mut y: Vec<f64> = idx.iter().map(|&i| i as f64 * h).collect();
        let last = set.mass - y.iter().sum::<f64>();
        y.push(last);
        if set.contains_polytope(&y) && set.l1_from_base(&y) <= set.budget + 1e-12 {
            best = best.max(eval(&y));
        }
        let mut i = 0;
        while i < k - 1 {
            idx[i] += 1;
            if idx[i] <= steps {
                break;
            }
            idx[i] = 0;
            i += 1;
        }
        if i == k - 1 {
            break;
        }
    }
    best
}

#[test]
fn vertex_solver_against_vertex_enumeration_and_dense_search() {
    // Objective B is convex: its maximum over F is at a vertex, so the enumeration of F's vertices
    // gives it exactly. MAD's angle is not convex: a dense grid (step 0.004, K ≤ 4) bounds it.
    // SPEC §11: "document by how much the heuristic falls short".
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
    let (mut short_b, mut rel_b, mut short_mad) = (0.0f64, 0.0f64, 0.0f64);
    let mut cases = 0;
    for k in 2..=4 {
        let m = victim(k, 40 + k as u64);
        let b_obj = VertexObjective::generation_kl(&m);
        let mad = VertexObjective::MadAngle(Arc::new(
            Surrogate::new(SurrogateKind::Random, &m, 3).unwrap(),
        ));
        for _ in 0..12 {
            let y = random_row(k, &mut rng);
            let eps = [0.1, 0.3, 0.6, 1.0][(rng.next_u64() % 4) as usize];
            let Some(set) = FeasibleSet::new(&y, eps, 0.02, 1e-4, true) else {
                continue;
            };
            if !set.can_move() {
                continue;
            }
            let q = Query {
                x: &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0],
                y: &y,
                seed: 1,
            };
            let pb = b_obj.prepare_with_gradient(&q, &set);
            let eb = &pb.value;
            let exact_b = vertices(&set)
                .iter()
                .map(|v| eb(v))
                .fold(f64::NEG_INFINITY, f64::max);
            let got_b = maximise(&set, &pb).0;
            assert!(got_b <= exact_b + 1e-12);
            short_b = short_b.max(exact_b - got_b);
            rel_b = rel_b.max((exact_b - got_b) / exact_b.max(1e-300));
            let pm = mad.prepare_with_gradient(&q, &set);
            let dense = dense_max(&set, &pm.value, 0.004);
            let got_m = maximise(&set, &pm).0;
            short_mad = short_mad.max(dense - got_m);
            cases += 1;
        }
    }
    println!(
        "vertex solver, K ≤ 4, {cases} cases: objective B short of the vertex optimum by at most \
         {short_b:.2e} ({:.1}% relative); MAD short of a dense search by at most {short_mad:.2e}",
        100.0 * rel_b
    );
    assert!(cases >= 20);
    // Objective B (convex): the solver reaches the best vertex of F on every case (measured
    // 3e-14). MAD's angle is not convex and its maximum can lie inside a face of F, out of reach
    // of any vertex method (the literature's MAD solver is a vertex heuristic too): measured
    // shortfall 0.65 on the angle's scale [0, 2] (one case: dense 1.999, vertices at most 1.490,
    // the solver 1.351); the README's defence table states it.
    assert!(rel_b <= 1e-6, "objective B relative shortfall {rel_b}");
    assert!(short_mad <= 0.7, "MAD shortfall {short_mad}");
}

// ---------------------------------------------------------------------------------------------
// Objective B is the KL of the whole generation chain.

#[test]
fn objective_b_equals_the_enumerated_kl_of_the_generation_chain() {
    for (widths, seed) in [
        (vec![3, 3, 3], 1u64),
        (vec![4, 3, 2, 3], 2),
        (vec![2, 4, 4], 3),
    ] {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let m = DeepRbm::random(&widths, 1.2, &mut rng)
            .unwrap()
            .edited(|_, p| {
                for b in &mut p.b {
                    *b = 0.7 * standard_normal(&mut rng);
                }
            })
            .unwrap();
        let k = m.n_outputs();
        let obj = VertexObjective::generation_kl(&m);
        for _ in 0..5 {
            let y: Vec<f32> = (0..k).map(|_| 0.05 + 0.9 * rng.random::<f32>()).collect();
            let set = FeasibleSet::new(&y, 10.0, 0.0, 1e-4, false).unwrap();
            let q = Query {
                x: &[],
                y: &y,
                seed: 0,
            };
            let eval = obj.prepare(&q, &set);
            let yt: Vec<f64> = (0..k).map(|_| 0.05 + 0.9 * rng.random::<f64>()).collect();
            let p = exact::generation_joint(&m, &y).unwrap();
            let yt32: Vec<f32> = yt.iter().map(|&v| v as f32).collect();
            let qj = exact::generation_joint(&m, &yt32).unwrap();
            let want = exact::kl(&p, &qj);
            let got = eval(&yt32.iter().map(|&v| v as f64).collect::<Vec<_>>());
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1.0),
                "{widths:?}: B {got} vs enumerated joint KL {want}"
            );
            // Data processing: the KL of q̃_0 alone is no larger.
            let p0 = exact::generation_marginals(&m, &y).unwrap();
            let q0 = exact::generation_marginals(&m, &yt32).unwrap();
            assert!(exact::kl(&p0[p0.len() - 1], &q0[q0.len() - 1]) <= got + 1e-12);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand cases of the controls.

#[test]
fn partner_table_moves_the_budget_onto_the_partner() {
    let table = partner_table(5, 3);
    assert!(table.iter().enumerate().all(|(c, &p)| p != c && p < 5));
    let d = VertexDefence {
        rule: VertexRule::Partner(table.clone()),
        eps: 0.6,
        margin: 0.02,
        floor: 1e-4,
        keeps_class: true,
    };
    let y = [0.05f32, 0.9, 0.02, 0.02, 0.01];
    let out = d
        .apply(&Query {
            x: &[],
            y: &y,
            seed: 0,
        })
        .unwrap();
    let p = table[1];
    // The partner gained what the budget allows: L1 0.6 moved, half of it onto the partner.
    assert!(out[p] as f64 - y[p] as f64 > 0.25, "{out:?} partner {p}");
    assert_eq!(argmax(&out), 1);
}

#[test]
fn grad2_moves_mass_towards_the_surrogates_preference() {
    // w = p_s − p: with p confident in class 0, the answer lowers class 0 (the attacker's
    // anti-learning direction) within the margin; the sign of SPEC §11.
    let m = victim(3, 77);
    let s = Arc::new(Surrogate::new(SurrogateKind::Random, &m, 5).unwrap());
    let d = VertexDefence {
        rule: VertexRule::Grad2(s),
        eps: 0.6,
        margin: 0.02,
        floor: 1e-4,
        keeps_class: true,
    };
    let y = [0.9f32, 0.05, 0.05];
    let out = d
        .apply(&Query {
            x: &[1.0; 6],
            y: &y,
            seed: 0,
        })
        .unwrap();
    assert!(out[0] < 0.9 - 0.25, "{out:?}");
    assert_eq!(argmax(&out), 0);
}

// ---------------------------------------------------------------------------------------------
// The syntax.

#[test]
fn every_defence_parses_prints_back_and_builds() {
    let m = victim(4, 1);
    let caches = PoisonCaches::with(vec![
        cache(4, OutputReading::PlugIn, 2),
        cache(4, OutputReading::Mixture, 3),
    ]);
    let key = Key::public("tests");
    let ctx = DefenceContext {
        model: &m,
        key: &key,
        caches: &caches,
    };
    for (name, _) in spec::DEFENCES {
        let p: DefenceParams = name.parse().unwrap();
        let canonical = p.to_string();
        assert!(canonical.starts_with(name), "{canonical}");
        assert_eq!(
            canonical.parse::<DefenceParams>().unwrap(),
            p,
            "{canonical}"
        );
        let d = p.build(&ctx).unwrap();
        assert_eq!(d.name(), canonical);
        assert_eq!(d.keeps_argmax(), p.keeps_class(), "{name}");
        let out = d
            .apply(&Query {
                x: &[0.0; 6],
                y: &[0.6, 0.3, 0.05, 0.05],
                seed: 4,
            })
            .unwrap();
        assert_eq!(out.len(), 4);
    }
    let p: DefenceParams = "rg-vertex:objective=A,reading=C,eps=0.3,margin=0.05,floor=0.001"
        .parse()
        .unwrap();
    assert_eq!(
        p,
        DefenceParams::RgVertex {
            objective: RgObjective::A,
            reading: OutputReading::Mixture,
            eps: 0.3,
            margin: 0.05,
            floor: 0.001
        }
    );
    assert_eq!(p.needs_cache(), Some(OutputReading::Mixture));
    assert_eq!(
        "rg-vertex".parse::<DefenceParams>().unwrap().to_string(),
        "rg-vertex:objective=B,reading=P,eps=0.6,margin=0.02,floor=0.0001"
    );
}

#[test]
fn sweeps_expand_every_combination_in_order() {
    let s: DefenceSweep = "rg-vertex:eps=0.1|0.3,objective=A|B".parse().unwrap();
    let all: Vec<String> = s.expand().unwrap().iter().map(|d| d.to_string()).collect();
    assert_eq!(all.len(), 4);
    // The first knob in canonical order (objective) varies slowest.
    assert!(
        all[0].contains("objective=A") && all[0].contains("eps=0.1"),
        "{all:?}"
    );
    assert!(
        all[1].contains("objective=A") && all[1].contains("eps=0.3"),
        "{all:?}"
    );
    assert!(
        all[3].contains("objective=B") && all[3].contains("eps=0.3"),
        "{all:?}"
    );
    assert_eq!(s.to_string().parse::<DefenceSweep>().unwrap(), s);
    assert!("rg-vertex:eps=0.1|0.3".parse::<DefenceParams>().is_err());
}

#[test]
fn bad_defence_strings_say_what_is_accepted() {
    let err = |s: &str| s.parse::<DefenceSweep>().unwrap_err().to_string();
    let e = err("rg-vortex");
    assert!(
        e.contains("'rg-vortex'") && e.contains("rg-vertex") && e.contains("grad2-argmax"),
        "{e}"
    );
    let e = err("rg-vertex:epsilon=0.3");
    assert!(
        e.contains("'epsilon'") && e.contains("eps (default 0.6)") && e.contains("floor"),
        "{e}"
    );
    let e = err("rg-vertex:objective=C");
    assert!(e.contains("objective=C") && e.contains("A or B"), "{e}");
    let e = err("rg-vertex:eps=-1");
    assert!(e.contains("eps=-1") && e.contains("≥ 0"), "{e}");
    let e = err("rg-vertex:eps=nan");
    assert!(e.contains("eps=nan"), "{e}");
    let e = err("mad:margin=0.1");
    assert!(e.contains("'margin'"), "{e}");
    let e = err("gaussian:sigma=0.1,sigma=0.2");
    assert!(e.contains("twice"), "{e}");
    let e = err("rounding:decimals=7");
    assert!(e.contains("decimals=7") && e.contains("0 to 6"), "{e}");
    let e = err("top1:eps=0.1");
    assert!(e.contains("'eps'") && e.contains("none"), "{e}");
    let e = err("rg-vertex:eps");
    assert!(e.contains("key=value"), "{e}");
    let e = err("mad-argmax:surrogate=oracle");
    assert!(
        e.contains("oracle") && e.contains("random or victim"),
        "{e}"
    );
    let e = err("rg-vertex:eps=0.1|");
    assert!(e.contains("empty value"), "{e}");
}
