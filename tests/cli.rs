//! The command line end to end: train → files → eval, and clear errors on bad input.
#![allow(clippy::needless_range_loop)]

use std::path::Path;
mod common;
use common::rgshield;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn train_then_eval_reproduces_the_reported_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let out_s = out.to_str().unwrap();
    let (ok, stdout, stderr) = rgshield(&[
        "train",
        "--data",
        "digits",
        "--widths",
        "64,32,10",
        "--method",
        "hybrid",
        "--seed",
        "3",
        "--finetune-epochs",
        "60",
        "--sweeps",
        "2",
        "--pretrain-epochs",
        "3",
        "--samples",
        "32",
        "--out",
        out_s,
    ]);
    assert!(ok, "train failed: {stdout}\n{stderr}");
    for f in ["model.safetensors", "model.json", "train_report.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let report = json(&out.join("train_report.json"));
    let acc = report["test_accuracy"].as_f64().unwrap();
    // a trained two-layer classifier on binarised digits is far above chance (10%)
    assert!(acc > 0.85, "test accuracy {acc}");
    assert!(report["train_accuracy"].as_f64().unwrap() > 0.85);
    assert!(report["history"].as_array().unwrap().len() >= 3);
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
    let meta = json(&out.join("model.json"));
    assert_eq!(meta["widths"], serde_json::json!([64, 32, 10]));
    assert_eq!(meta["dataset"]["name"], "digits");

    let (ok, stdout, stderr) = rgshield(&[
        "eval",
        "--model",
        out_s,
        "--data",
        "digits",
        "--samples",
        "32",
        "--json",
    ]);
    assert!(ok, "eval failed: {stderr}");
    let ev: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        ev["test_accuracy"].as_f64().unwrap(),
        acc,
        "eval disagrees with train_report"
    );
    // text mode and thread count do not change the answer
    let (ok, stdout, _) = rgshield(&[
        "--threads",
        "1",
        "eval",
        "--model",
        out_s,
        "--samples",
        "32",
    ]);
    assert!(ok);
    assert!(stdout.contains(&format!("{acc:.4}")), "{stdout}");
}

#[test]
fn widths_that_do_not_fit_the_data_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let (ok, _, stderr) = rgshield(&["train", "--widths", "63,10", "--out", out.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("widths start with 63") && stderr.contains("64 input features"),
        "{stderr}"
    );
    let (ok, _, stderr) = rgshield(&[
        "train",
        "--widths",
        "64,32,9",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("end with 9") && stderr.contains("10 classes"),
        "{stderr}"
    );
    let (ok, _, stderr) = rgshield(&[
        "train",
        "--widths",
        "64,abc,10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("'abc'"), "{stderr}");
    assert!(!out.exists(), "nothing may be written on a failed start");
}

#[test]
fn bad_model_and_data_arguments_give_clear_errors() {
    let (ok, _, stderr) = rgshield(&["eval", "--model", "/nonexistent/dir"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/dir/model.json"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.json"), "{ not json").unwrap();
    let (ok, _, stderr) = rgshield(&["eval", "--model", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("model.json") && stderr.contains("malformed JSON"),
        "{stderr}"
    );

    let (ok, _, stderr) = rgshield(&["eval", "--model", "x", "--data", "imagenet"]);
    assert!(!ok);
    assert!(stderr.contains("imagenet"), "{stderr}");

    let (ok, _, stderr) = rgshield(&["train", "--out", "/tmp/x", "--lr", "NaN"]);
    assert!(!ok);
    assert!(stderr.contains("lr"), "{stderr}");
}

/// `bench perf` end to end on the embedded digits (no references, no scaling): every job runs in
/// a child process and comes back with its metrics and peak memory; the table states the goals.
#[test]
fn bench_perf_runs_its_jobs_in_child_processes() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("perf.json");
    let (ok, stdout, stderr) = rgshield(&[
        "bench",
        "perf",
        "--data",
        "digits",
        "--samples",
        "300",
        "--reps",
        "1",
        "--cd-hidden",
        "16",
        "--no-reference",
        "--no-scaling",
        "--work-dir",
        dir.path().join("work").to_str().unwrap(),
        "--json",
        jp.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("≥ 0.5×")
            && stdout.contains("≥ 5×")
            && stdout.contains("≥ 3×: not measured"),
        "{stdout}"
    );
    let r = json(&jp);
    let outcomes = r["outcomes"].as_array().unwrap();
    // Two sampling stacks, the correlators (both paths, then bit-packed alone), the CD epochs.
    assert_eq!(outcomes.len(), 5, "{r}");
    for o in outcomes {
        assert!(o["max_rss_bytes"].as_u64().unwrap() > 1 << 20, "{o}");
    }
    assert_eq!(
        outcomes[0]["metrics"]["unit_updates"],
        300.0 * (256.0 + 256.0 + 10.0)
    );
    assert_eq!(outcomes[3]["job"]["job"], "bit-packed");
    assert_eq!(outcomes[3]["metrics"]["operators"], 2080.0);
    let cd = &outcomes[4]["metrics"];
    assert_eq!(cd["rows"], 1258.0);
    assert!(cd["seconds_per_epoch"].as_f64().unwrap() > 0.0);
    assert!(r["references"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["unavailable"].is_string()));

    // A malformed job is refused with the field named, not a panic.
    let (ok, _, stderr) = rgshield(&["bench", "perf-job", "--job", "{\"job\":\"sampling\"}"]);
    assert!(!ok && stderr.contains("widths"), "{stderr}");
}

/// The benchmarks estimate their memory before allocating: `bench rg` its float path (1.6 GB at
/// width 64, S = 20 000, not only its samples), `bench perf` each job before its process starts.
#[test]
fn benchmarks_over_the_memory_budget_are_refused_before_running() {
    let (ok, stdout, stderr) =
        rgshield(&["--memory-budget", "1G", "bench", "rg", "--samples", "20000"]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("bench rg: --samples 20000 at --width 64")
            && stderr.contains("memory budget of 1.0 GiB"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = rgshield(&[
        "--memory-budget",
        "1G",
        "bench",
        "perf",
        "--data",
        "digits",
        "--samples",
        "100000000",
        "--no-reference",
        "--no-scaling",
        "--work-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("bench perf job") && stderr.contains("memory budget of 1.0 GiB"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("| workload"),
        "a table after a refusal: {stdout}"
    );
}
