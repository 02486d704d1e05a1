//! The depth study (SPEC §10) on a tiny configuration: one model per depth and seed, the same
//! commonly correct inputs at every depth, minimal norms that really flip the served class, the
//! data-processing bound, models saved and reused, mismatched models refused.

use serde_json::Value;
use std::path::Path;
mod common;
use common::rgshield;

use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::experiments::depth_study::{self, DepthStudyParams, ModelSource};
use rgshield::model::io as model_io;
use rgshield::perturb::pgd;
use rgshield::sample::{argmax, OutputMode, Predictor};
use rgshield::train::{Method, TrainParams};
use rgshield::{NoProgress, Params, Valid};

fn digits() -> rgshield::data::Dataset {
    let spec: DataSpec = "digits".parse().expect("digits spec");
    data::load(&spec, &LoadOptions::default()).expect("embedded digits")
}

/// Depths 1 and 2 at width 8, two seeds, 6 attacked inputs, S = 200, seconds of training.
fn tiny(models: &Path) -> DepthStudyParams {
    let mut c = DepthStudyParams {
        train: TrainParams::for_method(Method::Hybrid, 1),
        ..DepthStudyParams::default()
    };
    c.depths = vec![1, 2];
    c.width = 8;
    c.seeds = vec![1, 2];
    c.models_dir = models.to_path_buf();
    c.inputs = (0..100).collect();
    c.robust_inputs = 6;
    c.analysis_inputs = 2;
    c.samples = 512;
    c.pilot_samples = 400;
    c.blocks = 2;
    c.judge_samples = 32;
    c.convergence_depths = vec![2];
    c.convergence_samples = vec![512, 1024];
    c.convergence_inputs = 2;
    c.train.finetune_epochs = 20;
    c.train.sweeps = 1;
    c
}

fn checked(p: DepthStudyParams) -> Valid<DepthStudyParams> {
    p.check().expect("valid parameters")
}

#[test]
fn every_model_attacks_the_same_inputs_and_the_minimal_norms_flip_the_class() {
    let data = digits();
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let out = dir.path().join("out");
    let cfg = checked(tiny(&models));

    let mut lines = Vec::new();
    let first = depth_study::depth_study(&data, &cfg, Some(&out), &NoProgress, |m| {
        lines.push(depth_study::model_line(m))
    })
    .expect("first run");
    assert_eq!(
        first
            .models
            .iter()
            .map(|m| (m.depth, m.seed))
            .collect::<Vec<_>>(),
        vec![(1, 1), (1, 2), (2, 1), (2, 2)]
    );
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("N=1 seed 1: trained"), "{}", lines[0]);
    let attacked = &first.attacked_inputs;
    assert!(!attacked.is_empty() && attacked.len() <= 6);
    assert!(first.commonly_correct >= attacked.len());
    let bisection = first.bisection;
    assert_eq!(bisection.max, 8.0); // √64, the box diagonal of the digits
    for m in &first.models {
        assert_eq!(m.model_source, ModelSource::Trained);
        assert_eq!(
            m.inputs.iter().map(|i| i.index).collect::<Vec<_>>(),
            *attacked
        );
        let (model, meta) = model_io::load(Path::new(&m.model_dir)).expect("saved model");
        assert_eq!(meta.weights_fingerprint, m.fingerprint);
        assert_eq!(m.training_method.as_deref(), Some("hybrid"));
        let judge = Predictor::new(
            &model,
            OutputMode::Served {
                samples: cfg.judge_samples,
                seed: cfg.seed,
            },
        );
        for i in &m.inputs {
            let x = data.test.row(i.index);
            let c = data.test.y[i.index] as usize;
            assert_eq!(
                argmax(&judge.output(x)),
                c,
                "input {} is served right",
                i.index
            );
            assert!(i.served_margin > 0.0 && i.served_margin <= 1.0);
            // Data processing: the output layer's Fisher never exceeds the first-layer bound by
            // more than 4 jackknife standard errors (exactly equal at N = 1).
            let se = i.fisher_top_std_err.unwrap_or(0.0);
            assert!(
                i.fisher_top <= i.fisher_bound * (1.0 + 1e-6) + 4.0 * se,
                "N={} input {}: {} > {}",
                m.depth,
                i.index,
                i.fisher_top,
                i.fisher_bound
            );
            if m.depth == 1 {
                assert!((i.fisher_top - i.fisher_bound).abs() < 1e-6 * i.fisher_bound);
                assert!(i.fisher_top_std_err.is_none());
            }
            // The PGD minimal norm really flips the served class.
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let class_at = |xp: &[f64]| {
                let xf: Vec<f32> = xp.iter().map(|&v| (v as f32).clamp(0.0, 1.0)).collect();
                argmax(&judge.output(&xf))
            };
            if let Some(b) = i.pgd {
                assert!(b.norm <= b.budget + 1e-9 && b.budget <= bisection.max);
                let xp = pgd(&model, &x64, c, b.budget, cfg.pgd_steps).unwrap();
                assert_ne!(class_at(&xp), c, "N={} input {}", m.depth, i.index);
                assert!(b.evaluations >= 2);
            }
            if let Some(b) = i.random {
                assert!(b.budget <= bisection.max);
            }
            let at_eps = pgd(&model, &x64, c, cfg.attack_epsilon, cfg.pgd_steps).unwrap();
            assert_eq!(i.pgd_success_at_epsilon, class_at(&at_eps) != c);
        }
    }
    // Per depth: seeds summarised, trends over the two depths (one range), convergence at N = 2.
    assert_eq!(first.depths.len(), 2);
    for d in &first.depths {
        assert_eq!(d.test_accuracy.per_seed.len(), 2);
        assert!(d.test_accuracy.interval.is_some());
        assert_eq!(d.attacked, 2 * attacked.len());
        let binned: usize = d.by_margin.iter().map(|b| b.count).sum();
        assert_eq!(binned, d.attacked);
    }
    assert!(first.trends.iter().all(|t| t.from == 1 && t.to == 2));
    assert_eq!(
        first.convergence.len(),
        2 * cfg.convergence_inputs.min(attacked.len())
    );
    assert!(first.convergence.iter().all(|r| r.depth == 2));
    // RG diagnostics of the first seed at both depths; canonical correlations valid.
    assert_eq!(first.rows.len(), 2);
    assert!(first.rows.iter().all(|r| r.seed == 1));
    assert!(first.rows[0].layers.is_empty());
    for l in &first.rows[1].layers {
        assert_eq!(l.canonical_over_one, 0);
    }
    assert!(out.join("rg/d2/analysis.json").is_file());
    let md = depth_study::summary_markdown(&first);
    assert!(md.contains("## Minimal adversarial L2 (primary)"), "{md}");
    let plots = depth_study::write_plots(&first, &out).expect("plots");
    assert_eq!(plots.len(), 5);

    // Second call: the saved models are reused, untouched, and give the same records.
    let weights = |d: usize, s: u64| {
        std::fs::read(models.join(format!("d{d}/s{s}/model.safetensors"))).unwrap()
    };
    let before = (weights(1, 1), weights(2, 2));
    let second =
        depth_study::depth_study(&data, &cfg, None, &NoProgress, |_| {}).expect("second run");
    for (a, b) in first.models.iter().zip(&second.models) {
        assert_eq!(b.model_source, ModelSource::Reused);
        assert_eq!(b.fingerprint, a.fingerprint);
        assert_eq!(b.train_seconds, 0.0);
        assert_eq!(b.test_accuracy, a.test_accuracy);
        assert_eq!(
            serde_json::to_string(&b.inputs).unwrap(),
            serde_json::to_string(&a.inputs).unwrap()
        );
    }
    assert_eq!((weights(1, 1), weights(2, 2)), before);
}

#[test]
fn mismatched_existing_model_is_refused_before_any_work() {
    let data = digits();
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    // A depth-2 model of width 6 where the study wants width 8.
    let mut other = tiny(&models);
    other.depths = vec![2];
    other.seeds = vec![1];
    other.width = 6;
    other.robust_inputs = 1;
    other.analysis_inputs = 0;
    other.convergence_inputs = 0;
    depth_study::depth_study(&data, &checked(other), None, &NoProgress, |_| {})
        .expect("width-6 model");
    let saved = std::fs::read(models.join("d2/s1/model.safetensors")).unwrap();

    let cfg = checked(tiny(&models));
    let err = depth_study::depth_study(&data, &cfg, None, &NoProgress, |_| {})
        .expect_err("mismatched widths must be refused")
        .to_string();
    assert!(err.contains("d2"), "{err}");
    assert!(
        err.contains("[64, 6, 10]") && err.contains("[64, 8, 10]"),
        "{err}"
    );
    assert!(err.contains("refusing to overwrite"), "{err}");
    // Refused before any training: depth 1 (which comes first) was not trained, and the existing
    // model is untouched.
    assert!(!models.join("d1").exists());
    assert_eq!(
        std::fs::read(models.join("d2/s1/model.safetensors")).unwrap(),
        saved
    );
}

#[test]
fn cli_prints_the_summary_writes_files_and_says_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("m");
    let out = dir.path().join("o");
    let (m, o) = (models.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "bench",
        "depth-study",
        "--data",
        "digits",
        "--depths",
        "1,2",
        "--width",
        "8",
        "--seeds",
        "1",
        "--inputs",
        "0..100",
        "--robust-inputs",
        "3",
        "--analysis-inputs",
        "0",
        "--convergence-inputs",
        "0",
        "--samples",
        "200",
        "--blocks",
        "1",
        "--judge-samples",
        "16",
        "--finetune-epochs",
        "20",
        "--sweeps",
        "1",
        "--models-dir",
        m,
        "--out",
        o,
    ];
    let (ok, stdout, stderr) = rgshield(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("N=1 seed 1: trained") && stdout.contains("N=2 seed 1: trained"));
    assert!(
        stdout.contains("## Minimal adversarial L2 (primary)"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("depth_study.json")).unwrap())
            .unwrap();
    assert_eq!(json["models"].as_array().map(|r| r.len()), Some(2));
    assert!(out.join("summary.md").is_file());
    for p in [
        "depth_minimal_l2.png",
        "depth_success.png",
        "depth_input_fisher.png",
    ] {
        assert!(out.join(p).is_file(), "{p}");
    }
    let (ok, stdout, stderr) = rgshield(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("N=1 seed 1: reused") && stdout.contains("N=2 seed 1: reused"));

    // --from-json recomputes the same tables from the kept records.
    let again = dir.path().join("again");
    let kept = out.join("depth_study.json");
    let (ok, _, stderr) = rgshield(&[
        "bench",
        "depth-study",
        "--from-json",
        kept.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(again.join("summary.md")).unwrap(),
        std::fs::read_to_string(out.join("summary.md")).unwrap()
    );

    // Same models directory, another training configuration: refused, not reused.
    let mut other = args.to_vec();
    let at = other
        .iter()
        .position(|a| *a == "--finetune-epochs")
        .unwrap();
    other[at + 1] = "21";
    let (ok, _, stderr) = rgshield(&other);
    assert!(!ok);
    assert!(
        stderr.contains("another configuration") && stderr.contains("refusing to reuse"),
        "{stderr}"
    );

    // Same models directory, another width: a clear refusal, non-zero exit.
    let mut wider = args.to_vec();
    wider[7] = "9";
    let (ok, _, stderr) = rgshield(&wider);
    assert!(!ok);
    assert!(
        stderr.contains("refusing to overwrite") && stderr.contains("--models-dir"),
        "{stderr}"
    );
}

/// The kept digits run comes out of the code at HEAD: seed 1's N = 2 model, trained from the
/// pinned configuration, has the kept fingerprint, and its first attacked inputs give the kept
/// records: every bisection budget, evaluation count and success exactly; the estimated values
/// (the Fisher values, margins, realised norms) to 10⁻¹² relative, since their summation order may
/// change without changing the estimator (the state Fisher moved to the width of layer 1).
#[test]
fn kept_digits_run_is_reproduced_by_the_code_at_head() {
    use rgshield::experiments::depth_study::{
        input_robustness, DepthStudyReport, RobustnessContext,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kept: DepthStudyReport = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("docs/results/2026-11-30-depth-study/digits/depth_study.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let data = digits();
    let s = &kept.settings;
    let record = kept
        .models
        .iter()
        .find(|m| m.depth == 2 && m.seed == 1)
        .unwrap();
    let train = s.train.with_seed(1).check().unwrap();
    let (model, _) = rgshield::train::Trainer::new(&data, &train)
        .unwrap()
        .train(&s.widths(&data, 2))
        .unwrap();
    let meta = model_io::ModelMeta::new(&model, data.class_names.clone());
    assert_eq!(meta.weights_fingerprint, record.fingerprint);
    let ctx = RobustnessContext {
        model: &model,
        judge: Predictor::new(
            &model,
            OutputMode::Served {
                samples: s.judge_samples,
                seed: s.seed,
            },
        ),
        samples: s.samples,
        blocks: s.blocks,
        seed: s.seed,
        pgd_steps: s.pgd_steps,
        bisection: kept.bisection,
        epsilon: s.attack_epsilon,
    };
    for want in record.inputs.iter().take(3) {
        let i = want.index;
        let got = input_robustness(&ctx, i, data.test.row(i), data.test.y[i]).unwrap();
        let got = serde_json::to_value(&got).unwrap();
        let want = serde_json::to_value(want).unwrap();
        if let Some(d) = first_mismatch(&got, &want, "", "") {
            panic!("input {i}: {d}");
        }
    }
}

/// The first place where two records differ: numbers under `budget` or `evaluations` must be
/// equal, other numbers equal to 10⁻¹² relative; everything else equal.
fn first_mismatch(a: &Value, b: &Value, key: &str, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Some(format!("{at}: fields differ"));
            }
            x.iter().find_map(|(k, v)| match y.get(k) {
                Some(w) => first_mismatch(v, w, k, &format!("{at}.{k}")),
                None => Some(format!("{at}.{k}: missing")),
            })
        }
        (Value::Number(x), Value::Number(y)) if key != "budget" && key != "evaluations" => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            ((x - y).abs() > 1e-12 * y.abs().max(1e-300)).then(|| format!("{at}: {x} vs {y}"))
        }
        _ => (a != b).then(|| format!("{at}: {a} vs {b}")),
    }
}
