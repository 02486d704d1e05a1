//! The clone pipeline end to end on a small digits stack: every (defence, strength, attacker,
//! seed) row is produced, the argmax guarantee of `rg` holds through the whole pipeline, undefended answers have zero distortion, a distilled
//! clone of an undefended victim learns it, and the run is deterministic.

use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::defence::{DefenceParams, PoisonCache, PoisonCaches};
use rgshield::experiments::clone_eval::{self as ce, clone_eval, AttackerSpec, CloneEvalParams};
use rgshield::model::mlp::MlpParams;
use rgshield::rg::OutputReading;
use rgshield::sample::OutputMode;
use rgshield::train::{Method, TrainParams, Trainer};
use rgshield::{NoProgress, Params, Progress};

/// Counts the steps it is told about.
#[derive(Default)]
struct Count(std::sync::atomic::AtomicUsize);

impl Progress for Count {
    fn inc(&self, n: u64) {
        self.0
            .fetch_add(n as usize, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn clone_pipeline_end_to_end_on_a_small_stack() {
    let d = data::load(&DataSpec::Digits, &LoadOptions::default()).unwrap();
    // A small hybrid victim, trained briefly: accurate enough that a clone has something to learn.
    let tc = TrainParams {
        finetune_epochs: 15,
        sweeps: 0,
        ..TrainParams::for_method(Method::Hybrid, 3)
    }
    .check()
    .unwrap();
    let (victim, _) = Trainer::new(&d, &tc).unwrap().train(&[64, 16, 10]).unwrap();
    let cache =
        PoisonCache::for_model(&victim, d.image_shape, OutputReading::PlugIn, 400, 0).unwrap();
    let mut eq14 = TrainParams::for_method(Method::Eq14, 1);
    eq14.pretrain_epochs = 2;
    eq14.sweeps = 2;
    let cfg = CloneEvalParams {
        defences: ["none", "rg:eps=0.1", "rg:eps=0.5", "top1"]
            .iter()
            .map(|s| s.parse::<DefenceParams>().unwrap())
            .collect(),
        attackers: AttackerSpec::parse_list("eq14,distill,distill+top1").unwrap(),
        budget: 300,
        seeds: vec![1, 2],
        serve: OutputMode::Served {
            samples: 16,
            seed: 0,
        },
        transfer_inputs: 20,
        eq14,
        mlp: MlpParams {
            epochs: 30,
            ..MlpParams::default()
        },
        ..CloneEvalParams::default()
    }
    .check()
    .unwrap();
    let ticks = Count::default();
    let caches = PoisonCaches::with(vec![cache.clone()]);
    let r = clone_eval(&victim, &d, &cfg, &caches, &ticks).unwrap();
    // 4 (defence, strength) settings × 3 attackers × 2 seeds.
    assert_eq!(r.rows.len(), 24);
    assert_eq!(ticks.0.load(std::sync::atomic::Ordering::Relaxed), 24);
    assert_eq!(r.cells.len(), 12);
    assert!(r.cells.iter().all(|c| c.seeds == 2));
    for b in &r.baselines {
        assert_eq!(b.queries, 300);
        assert!(
            b.natural_queries < 300,
            "digits' pool is smaller than the budget"
        );
        assert!(b.transfer_inputs > 0 && b.transfer_inputs <= 20);
    }
    for row in &r.rows {
        for v in [row.clone_accuracy, row.fidelity, row.transfer_success] {
            assert!((0.0..=1.0).contains(&v), "{row:?}");
        }
        match row.defence_kind.as_str() {
            "none" => {
                assert_eq!((row.l1, row.kl, row.changed_argmax), (0.0, 0.0, 0.0));
                assert_eq!(row.defended_accuracy, row.undefended_accuracy);
            }
            // The argmax guarantee through the pipeline: utility unchanged, no answer changed.
            "rg" | "top1" => {
                assert_eq!(row.changed_argmax, 0.0, "{row:?}");
                assert_eq!(row.defended_accuracy, row.undefended_accuracy, "{row:?}");
            }
            other => panic!("unexpected defence {other}"),
        }
        if row.defence_kind == "rg" {
            assert!(row.l1 > 0.0, "rg moved nothing: {row:?}");
        }
    }
    // A larger ε distorts more (the step is clipped per query, so only ≤ holds in general; on
    // this victim some queries have room beyond 0.1).
    let l1 = |eps: f64| {
        r.rows
            .iter()
            .filter(|x| x.defence_kind == "rg" && x.strength == eps)
            .map(|x| x.l1)
            .sum::<f64>()
    };
    assert!(l1(0.5) > l1(0.1), "{} vs {}", l1(0.5), l1(0.1));
    // The distilled clone of the undefended victim learns it (chance fidelity is about 0.1).
    let fid = r
        .rows
        .iter()
        .find(|x| x.defence_kind == "none" && x.attacker == "distill")
        .unwrap()
        .fidelity;
    assert!(fid > 0.6, "distilled clone fidelity {fid}");
    // The written JSON reads back (NaN written as null included) and gives the paired tables.
    let text = serde_json::to_string(&r).unwrap();
    let saved: ce::SavedRows = serde_json::from_str(&text).unwrap();
    assert_eq!(saved.rows.len(), 24);
    let md = ce::tables("", &saved.baselines, &saved.rows);
    assert!(md.contains("rg − none") && md.contains("| top1 |"), "{md}");
    assert!(!md.contains("(n = 1)"), "two seeds have a spread: {md}");
    // One seed has no spread: the tables say n = 1 instead of ± 0.000 [NaN].
    let first = saved.rows[0].seed;
    let one: Vec<ce::CloneRow> = saved
        .rows
        .iter()
        .filter(|x| x.seed == first)
        .cloned()
        .collect();
    let base: Vec<_> = saved
        .baselines
        .iter()
        .filter(|b| b.seed == first)
        .cloned()
        .collect();
    let md1 = ce::tables("", &base, &one);
    assert!(
        md1.contains("rg − none") && md1.contains("(n = 1)"),
        "{md1}"
    );
    assert!(
        !md1.contains("± 0.000") && !md1.contains("[NaN]"),
        "single-seed cells print a spread: {md1}"
    );
    let mut nan_row = serde_json::to_value(&r.rows[0]).unwrap();
    nan_row["transfer_success"] = serde_json::Value::Null;
    let back: ce::CloneRow = serde_json::from_value(nan_row).unwrap();
    assert!(back.transfer_success.is_nan());
    // Deterministic: the same configuration gives the same numbers.
    let again = clone_eval(&victim, &d, &cfg, &caches, &NoProgress).unwrap();
    let key = |rows: &[ce::CloneRow]| -> Vec<(f64, f64, f64, f64)> {
        rows.iter()
            .map(|x| (x.clone_accuracy, x.fidelity, x.transfer_success, x.l1))
            .collect()
    };
    assert_eq!(key(&r.rows), key(&again.rows));
}

#[test]
fn clone_eval_rejects_a_foreign_cache_and_bad_settings() {
    let d = data::load(&DataSpec::Digits, &LoadOptions::default()).unwrap();
    let victim = {
        use rand::SeedableRng;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        rgshield::model::DeepRbm::random(&[64, 8, 10], 0.5, &mut rng).unwrap()
    };
    let base = CloneEvalParams {
        defences: vec!["rg:eps=0.1".parse().unwrap()],
        ..CloneEvalParams::default()
    }
    .check()
    .unwrap();
    // A cache computed for another model is refused, naming both fingerprints.
    let other = {
        use rand::SeedableRng;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(2);
        rgshield::model::DeepRbm::random(&[64, 8, 10], 0.5, &mut rng).unwrap()
    };
    let foreign = PoisonCache::for_model(&other, None, OutputReading::PlugIn, 200, 0).unwrap();
    let e = clone_eval(
        &victim,
        &d,
        &base,
        &PoisonCaches::with(vec![foreign]),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("computed for model"), "{e}");
    let none: Vec<DefenceParams> = vec![DefenceParams::None];
    for (cfg, want) in [
        (
            CloneEvalParams {
                defences: none.clone(),
                budget: 3,
                ..CloneEvalParams::default()
            },
            "budget 3",
        ),
        (
            CloneEvalParams {
                defences: none.clone(),
                transfer_epsilon: f64::NAN,
                ..CloneEvalParams::default()
            },
            "transfer ε",
        ),
        (
            CloneEvalParams {
                defences: none.clone(),
                transfer_inputs: 0,
                ..CloneEvalParams::default()
            },
            "transfer inputs 0",
        ),
        (
            CloneEvalParams {
                defences: Vec::new(),
                ..CloneEvalParams::default()
            },
            "no defence",
        ),
    ] {
        let e = cfg.check().unwrap_err();
        assert!(e.to_string().contains(want), "{e} (wanted '{want}')");
    }
    let wrong = {
        use rand::SeedableRng;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        rgshield::model::DeepRbm::random(&[63, 8, 10], 0.5, &mut rng).unwrap()
    };
    let cfg = CloneEvalParams {
        defences: none,
        ..CloneEvalParams::default()
    }
    .check()
    .unwrap();
    let e = clone_eval(
        &wrong,
        &d,
        &cfg,
        &PoisonCaches::with(Vec::new()),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("widths start with 63"), "{e}");
}
