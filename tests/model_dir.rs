//! Model directories are written as a whole: `rgshield train` killed at every step of the write
//! (the test hook `RGSHIELD_TEST_CRASH_AT`, which aborts the real binary there) leaves the old
//! model intact or the new one complete — loadable, its report its own — and the next run cleans
//! up. Bad output paths, sample counts of zero and models too large for the memory budget fail
//! before any work.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::rgshield;

const CRASH_ENV: &str = "RGSHIELD_TEST_CRASH_AT";

/// `rgshield train` of a small digits model with `seed` into `out`, with the crash hook at
/// `crash` when given.
fn train(out: &Path, seed: u64, crash: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rgshield"));
    cmd.args([
        "train",
        "--widths",
        "64,8,10",
        "--method",
        "hybrid",
        "--finetune-epochs",
        "2",
        "--sweeps",
        "1",
        "--pretrain-epochs",
        "1",
        "--samples",
        "4",
        "--seed",
        &seed.to_string(),
        "--out",
    ])
    .arg(out)
    .env_remove(CRASH_ENV);
    if let Some(point) = crash {
        cmd.env(CRASH_ENV, point);
    }
    cmd.output().expect("run rgshield train")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("JSON")
}

/// The fingerprint and training seed of the model in `dir`, after checking that it loads
/// (`rgshield eval`, which also recovers an interrupted write) and that its report is its own.
fn model_in(dir: &Path) -> (String, u64) {
    let (good, _, stderr) = rgshield(&["eval", "--model", dir.to_str().unwrap(), "--samples", "2"]);
    assert!(
        good,
        "the model in {} does not load: {stderr}",
        dir.display()
    );
    let meta = json(&dir.join("model.json"));
    let report = json(&dir.join("train_report.json"));
    let seed = meta["training"]["seed"].as_u64().expect("training seed");
    assert_eq!(
        report["config"]["seed"].as_u64(),
        Some(seed),
        "train_report.json belongs to another model than model.json"
    );
    let fp = meta["weights_fingerprint"].as_str().unwrap().to_string();
    (fp, seed)
}

/// Entries of `dir` other than `keep`.
fn others(dir: &Path, keep: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep)
        .collect();
    v.sort();
    v
}

#[test]
fn a_crash_at_any_step_of_the_write_leaves_the_old_model_or_the_new_one_complete() {
    let root = tempfile::tempdir().expect("tempdir");
    // The models of seeds 1 and 2, written without a crash, to compare with.
    let reference = |seed| {
        let d = root.path().join(format!("ref{seed}"));
        ok(&train(&d, seed, None));
        model_in(&d)
    };
    let (old, new) = (reference(1), reference(2));
    assert_ne!(old.0, new.0);
    for (point, survivor) in [
        ("after-weights", &old),
        ("after-meta", &old),
        ("before-rename", &old),
        ("after-rename-old", &old),
        ("after-rename-new", &new),
    ] {
        let parent = root.path().join(point);
        let out = parent.join("m");
        ok(&train(&out, 1, None));
        // An earlier model's analysis in the directory belongs to it and goes with it.
        std::fs::create_dir(out.join("analysis")).unwrap();
        let crashed = train(&out, 2, Some(point));
        assert_eq!(
            crashed.status.signal(),
            Some(libc::SIGABRT),
            "{point}: the hook did not abort: {:?} {}",
            crashed.status,
            String::from_utf8_lossy(&crashed.stderr)
        );
        assert!(
            String::from_utf8_lossy(&crashed.stderr).contains(CRASH_ENV),
            "{point}: the abort does not name the hook"
        );
        // The crash left something behind beside the model (a staging or set-aside directory).
        assert!(
            !others(&parent, "m").is_empty(),
            "{point}: no trace of an interrupted write"
        );
        if point == "after-rename-old" {
            assert!(!out.exists(), "the old model is set aside at this point");
        }
        let found = model_in(&out);
        assert_eq!(
            &found, survivor,
            "{point}: neither the old model nor the new one"
        );
        assert_eq!(
            out.join("analysis").exists(),
            survivor == &old,
            "{point}: the directory is a mix of the old and the new"
        );
        // The next write cleans up every leftover and writes its model whole.
        ok(&train(&out, 2, None));
        assert_eq!(others(&parent, "m"), Vec::<String>::new(), "{point}");
        assert_eq!(model_in(&out), new, "{point}");
        assert_eq!(
            others(&out, ""),
            ["model.json", "model.safetensors", "train_report.json"],
            "{point}"
        );
    }
}

#[test]
fn a_crash_writing_a_new_directory_leaves_nothing_visible_and_is_cleaned_up() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = root.path().join("m");
    let crashed = train(&out, 1, Some("before-rename"));
    assert_eq!(crashed.status.signal(), Some(libc::SIGABRT));
    assert!(!out.exists(), "a half-written model became visible");
    let (good, _, stderr) = rgshield(&["eval", "--model", out.to_str().unwrap()]);
    assert!(!good && stderr.contains("model.json"), "{stderr}");
    ok(&train(&out, 1, None));
    assert_eq!(others(root.path(), "m"), Vec::<String>::new());
    model_in(&out);
}

#[test]
fn the_crash_hook_cannot_be_set_by_accident() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = root.path().join("m");
    let o = train(&out, 1, Some("after-weight"));
    assert!(!o.status.success());
    assert_eq!(
        o.status.signal(),
        None,
        "a misspelt hook aborted the process"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(CRASH_ENV) && stderr.contains("'after-weight'"),
        "{stderr}"
    );
    assert!(!out.exists());
    assert_eq!(others(root.path(), ""), Vec::<String>::new());
}

#[test]
fn bad_output_paths_fail_before_any_work() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = root.path().join("file");
    std::fs::write(&file, b"keep").unwrap();
    let foreign = root.path().join("notes");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("todo.txt"), b"mine").unwrap();
    let cases: [(Vec<String>, &str); 6] = [
        (
            vec!["train".into(), "--out".into(), s(&file)],
            "is not a directory",
        ),
        (
            vec!["train".into(), "--out".into(), s(&file.join("m"))],
            "is not a directory",
        ),
        (
            vec!["train".into(), "--out".into(), s(&foreign)],
            "holds no model.json",
        ),
        (
            vec![
                "analyze".into(),
                "--model".into(),
                "/nonexistent".into(),
                "--out".into(),
                s(&file),
            ],
            "is a file",
        ),
        (
            vec!["bench".into(), "rg".into(), "--json".into(), s(root.path())],
            "is a directory",
        ),
        (
            vec![
                "bench".into(),
                "depth".into(),
                "--json".into(),
                s(&file.join("d.json")),
            ],
            "is a file, not a directory",
        ),
    ];
    for (args, words) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (good, _, stderr) = rgshield(&args);
        assert!(!good, "{args:?} succeeded");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    // A missing model does not get an empty output directory made at its path.
    let missing = root.path().join("missing");
    for cmd in ["analyze", "attack", "clone-eval"] {
        let (good, _, stderr) = rgshield(&[cmd, "--model", &s(&missing)]);
        assert!(!good && stderr.contains("model.json"), "{cmd}: {stderr}");
        assert!(!missing.exists(), "{cmd} created {}", missing.display());
    }
    assert_eq!(others(&foreign, ""), ["todo.txt"]);
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn zero_samples_are_refused_naming_the_flag() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = root.path().join("m");
    ok(&train(&out, 1, None));
    let m = s(&out);
    for (args, flag) in [
        (
            vec!["train", "--samples", "0", "--out", "/tmp/unused"],
            "train: --samples = 0",
        ),
        (
            vec!["eval", "--model", &m, "--samples", "0"],
            "eval: --samples = 0",
        ),
        (
            vec!["analyze", "--model", &m, "--samples", "0"],
            "analyze: --samples = 0",
        ),
        (
            vec!["attack", "--model", &m, "--serve-samples", "0"],
            "attack: --serve-samples = 0",
        ),
        (
            vec!["serve", "--model", &m, "--samples", "0"],
            "serve: --samples = 0",
        ),
        (
            vec!["clone-eval", "--model", &m, "--samples", "0"],
            "clone-eval: --samples = 0",
        ),
        (
            vec!["bench", "depth", "--samples", "0"],
            "bench depth: --samples = 0",
        ),
        (
            vec!["bench", "rg", "--samples", "0"],
            "bench rg: --samples = 0",
        ),
    ] {
        let (good, _, stderr) = rgshield(&args);
        assert!(!good, "{args:?} succeeded");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn models_over_the_memory_budget_are_refused_before_allocating() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = root.path().join("m");
    // 6.4 billion weights: refused at once with the estimate and the budget, never allocated.
    let (good, _, stderr) = rgshield(&["train", "--widths", "64,100000000,10", "--out", &s(&out)]);
    assert!(!good);
    assert!(
        stderr.contains("--widths 64,100000000,10")
            && stderr.contains("TiB")
            && stderr.contains("memory budget"),
        "{stderr}"
    );
    // A small model fits the machine but not a budget of 1 MiB.
    let (good, _, stderr) = rgshield(&[
        "--memory-budget",
        "1M",
        "train",
        "--widths",
        "64,4096,10",
        "--out",
        &s(&out),
    ]);
    assert!(!good);
    assert!(
        stderr.contains("--widths 64,4096,10") && stderr.contains("1.0 MiB (--memory-budget)"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing may be written on a refused start");
    let (good, _, stderr) = rgshield(&["--memory-budget", "lots", "eval", "--model", "x"]);
    assert!(!good && stderr.contains("'lots'"), "{stderr}");
    // Under a budget it fits, the same command runs.
    ok(&train(&out, 1, None));
}
