//! `analyze` end to end on a small random model over real digits inputs: the report is complete
//! and obeys the theorems it is built on (data-processing bound, canonical correlations ≤ 1,
//! poison directions sum to zero).

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::experiments::analyze::{analyze, AnalyzeParams};
use rgshield::rg::BasisChoice;
use rgshield::DeepRbm;
use rgshield::{NoProgress, Params};

#[test]
fn analysis_of_a_small_model_is_complete_and_consistent() {
    let d = data::load(&DataSpec::Digits, &LoadOptions::default()).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let model = DeepRbm::random(&[64, 8, 6, 10], 0.4, &mut rng).unwrap();
    let cfg = AnalyzeParams {
        inputs: vec![0, 1],
        samples: 3_000,
        seed: 1,
        basis: BasisChoice::TopPairs(6),
        blocks: 3,
        pilot_samples: 600,
    };
    let r = analyze(&model, &d, &cfg.clone().check().unwrap(), &NoProgress).unwrap();
    assert_eq!(r.inputs.len(), 2);
    assert_eq!(r.classes.len(), 10);
    assert_eq!(r.classification_operators, vec![8 + 6, 6 + 6, 1023]);
    for inp in &r.inputs {
        assert_eq!(inp.label, d.test.y[inp.index]);
        // T(2), T(3)
        assert_eq!(
            inp.layers.iter().map(|l| l.k).collect::<Vec<_>>(),
            vec![2, 3]
        );
        for l in &inp.layers {
            for c in &l.canonical_correlations {
                assert!(*c <= 1.0 + 1e-9, "canonical correlation {c} > 1");
            }
        }
        let f = &inp.fisher;
        // data-processing inequality: the stochastic readings cannot exceed the first-layer bound
        let se = f.direct_top_std_err.unwrap();
        assert!(f.direct_top <= f.bound_top + 4.0 * se, "{f:?}");
        assert!(f.ratio_direct > 0.0 && f.ratio_direct.is_finite());
        assert_eq!(f.top_eigenvector.len(), 64);
        let norm: f64 = f.top_eigenvector.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-9);
    }
    for c in &r.classes {
        assert_eq!(c.output.len(), 2, "readings (P) and (C)");
        for o in &c.output {
            let s: f64 = o.poison_direction.iter().sum();
            assert!(
                s.abs() < 1e-9,
                "poison direction must sum to zero, sums to {s}"
            );
            assert_eq!(o.poison_direction.len(), 10);
            assert!(o.poison_value >= 0.0);
        }
    }
    // bad selections are errors, not panics
    let bad = AnalyzeParams {
        inputs: vec![100_000],
        ..cfg.clone()
    }
    .check()
    .unwrap();
    let e = analyze(&model, &d, &bad, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("100000") && e.contains("out of range"), "{e}");
    assert!("order3".parse::<BasisChoice>().is_err());
    assert_eq!(
        "order2:5".parse::<BasisChoice>().unwrap(),
        BasisChoice::TopPairs(5)
    );
}
