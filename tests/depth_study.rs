//! The depth study (SPEC §10) on a tiny configuration: one row per depth, the data-processing
//! bound in every row, models saved and reused, mismatched models refused.

use std::path::Path;
mod common;
use common::rgshield;

use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::experiments::depth_study::{self, DepthStudyParams, ModelSource};
use rgshield::train::{Method, TrainParams};
use rgshield::{NoProgress, Params, Valid};

fn digits() -> rgshield::data::Dataset {
    let spec: DataSpec = "digits".parse().expect("digits spec");
    data::load(&spec, &LoadOptions::default()).expect("embedded digits")
}

/// Depths 1 and 2 at width 8, 3 inputs, S = 200, a few seconds of training.
fn tiny(models: &Path) -> DepthStudyParams {
    let mut c = DepthStudyParams {
        train: TrainParams::for_method(Method::Hybrid, 1),
        ..DepthStudyParams::default()
    };
    c.depths = vec![1, 2];
    c.width = 8;
    c.models_dir = models.to_path_buf();
    c.inputs = (0..3).collect();
    c.samples = 200;
    c.pilot_samples = 400;
    c.blocks = 4;
    c.train.finetune_epochs = 3;
    c.train.sweeps = 1;
    c
}

fn checked(p: DepthStudyParams) -> Valid<DepthStudyParams> {
    p.check().expect("valid parameters")
}

#[test]
fn one_row_per_depth_bounded_fisher_and_models_reused() {
    let data = digits();
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let out = dir.path().join("out");
    let cfg = checked(tiny(&models));

    let mut printed = vec![depth_study::table_header(&data, &cfg)];
    let first = depth_study::depth_study(&data, &cfg, Some(&out), &NoProgress, |r| {
        printed.push(depth_study::table_row(r))
    })
    .expect("first run");
    assert_eq!(
        first.rows.iter().map(|r| r.depth).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // The progressive table: header, separator, one row per depth, in order.
    let table = printed.join("\n");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| N |"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].starts_with("| 1 | trained |"), "{}", rows[0]);
    assert!(rows[1].starts_with("| 2 | trained |"), "{}", rows[1]);

    for r in &first.rows {
        assert_eq!(r.model_source, ModelSource::Trained);
        assert_eq!(r.widths, cfg.widths(&data, r.depth));
        assert_eq!(r.inputs, 3);
        let model_dir = models.join(format!("d{}", r.depth));
        let (m, meta) = rgshield::model::io::load(&model_dir).expect("saved model loads");
        assert_eq!(m.widths(), r.widths);
        assert_eq!(meta.weights_fingerprint, r.fingerprint);
        assert_eq!(r.training_method.as_deref(), Some("hybrid"));
        assert!(out.join(format!("d{}/analysis.json", r.depth)).is_file());
        assert!(out.join(format!("d{}/attack.json", r.depth)).is_file());
        // Data-processing inequality (SPEC §6): no input's direct estimate exceeds its
        // first-layer bound by more than 4 jackknife standard errors, and the medians are ordered.
        assert_eq!(r.bound_violations, 0, "depth {}", r.depth);
        let (d, b) = (
            r.fisher_direct.median.expect("direct median"),
            r.fisher_bound.median.expect("bound median"),
        );
        assert!(
            d > 0.0 && d <= b * (1.0 + 1e-9),
            "depth {}: {d} > {b}",
            r.depth
        );
        assert!(r.ratio_direct_median.expect("ratio") <= 1.0 + 1e-9);
        assert!(r.test_accuracy.is_finite() && (0.0..=1.0).contains(&r.test_accuracy));
        // Both output readings measured for every depth.
        assert!(r.output_fisher_p_median.is_some_and(|v| v > 0.0));
        assert!(r.output_fisher_c_median.is_some_and(|v| v > 0.0));
        assert!(r.attacked <= 3);
    }
    // N = 1 has no stability matrix; N = 2 has T(2) with a canonical correlation in [0, 1]: the
    // estimate is valid by construction (PSD joint covariance estimate), at every depth.
    assert!(first.rows[0].layers.is_empty());
    assert_eq!(first.rows[1].layers.len(), 1);
    assert_eq!(first.rows[1].layers[0].k, 2);
    let cc = first.rows[1].layers[0]
        .max_canonical_correlation_median
        .expect("canonical correlation");
    assert!((0.0..=1.0 + 1e-9).contains(&cc), "{cc}");
    for r in &first.rows {
        for l in &r.layers {
            assert_eq!(l.canonical_over_one, 0, "N = {}, T({})", r.depth, l.k);
        }
    }

    let plots = depth_study::write_plots(&first, &out).expect("plots");
    assert_eq!(plots.len(), 4);
    for p in &plots {
        assert!(std::fs::metadata(p).expect("plot").len() > 0);
    }

    // Second call: the saved models are reused, untouched, and give the same accuracy.
    let weights = |d: usize| std::fs::read(models.join(format!("d{d}/model.safetensors"))).unwrap();
    let before = (weights(1), weights(2));
    let second =
        depth_study::depth_study(&data, &cfg, None, &NoProgress, |_| {}).expect("second run");
    assert_eq!(second.rows.len(), 2);
    for (a, b) in first.rows.iter().zip(&second.rows) {
        assert_eq!(b.model_source, ModelSource::Reused);
        assert_eq!(b.fingerprint, a.fingerprint);
        assert_eq!(b.train_seconds, 0.0);
        assert_eq!(b.test_accuracy, a.test_accuracy);
        assert!(depth_study::table_row(b).starts_with(&format!("| {} | reused |", b.depth)));
    }
    assert_eq!((weights(1), weights(2)), before);
}

#[test]
fn mismatched_existing_model_is_refused_before_any_work() {
    let data = digits();
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    // A depth-2 model of width 6 where the study wants width 8.
    let mut other = tiny(&models);
    other.depths = vec![2];
    other.width = 6;
    other.inputs = vec![0];
    depth_study::depth_study(&data, &checked(other), None, &NoProgress, |_| {})
        .expect("width-6 model");
    let saved = std::fs::read(models.join("d2/model.safetensors")).unwrap();

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
        std::fs::read(models.join("d2/model.safetensors")).unwrap(),
        saved
    );
}

#[test]
fn cli_prints_the_table_writes_files_and_says_reused() {
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
        "--inputs",
        "0..2",
        "--samples",
        "200",
        "--finetune-epochs",
        "2",
        "--sweeps",
        "1",
        "--models-dir",
        m,
        "--out",
        o,
    ];
    let (ok, stdout, stderr) = rgshield(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("| 1 | trained |") && stdout.contains("| 2 | trained |"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("depth_study.json")).unwrap())
            .unwrap();
    assert_eq!(json["rows"].as_array().map(|r| r.len()), Some(2));
    for p in [
        "depth_input_fisher.png",
        "depth_attack_success.png",
        "depth_stability.png",
        "depth_output_fisher.png",
    ] {
        assert!(out.join(p).is_file(), "{p}");
    }
    let (ok, stdout, stderr) = rgshield(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("| 1 | reused |") && stdout.contains("| 2 | reused |"));
    assert!(stdout.contains("reused (widths match)"), "{stdout}");

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
