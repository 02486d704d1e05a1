//! The SPEC §12 protocol runner end to end on a tiny protocol (`tests/data/protocol_tiny.json`):
//! every cell gets its row, the guarantees the tables rely on hold in the rows, an interrupted
//! run resumes to the same rows, the summary regenerates from the kept files, bad protocol files
//! are refused with their field named, and the README's clone-evaluation tables are what the
//! committed results regenerate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rgshield::experiments::protocol::{
    self, read_jsonl, summary, AttackerKind, CloneRow, PointRow, ProtocolSpec,
};
use rgshield::Params;

mod common;
use common::rgshield;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/protocol_tiny.json")
}

fn run_into(dir: &Path) {
    let (ok, out, err) = rgshield(&[
        "clone-eval",
        "--protocol",
        tiny().to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
}

/// Rows by key with the wall-clock time left out.
fn rows_of(dir: &Path) -> BTreeMap<String, String> {
    read_jsonl::<CloneRow>(&dir.join("rows.jsonl"))
        .unwrap()
        .into_iter()
        .map(|mut r| {
            r.seconds = 0.0;
            (r.key(), serde_json::to_string(&r).unwrap())
        })
        .collect()
}

#[test]
fn tiny_protocol_end_to_end_then_resumed_and_regenerated() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    run_into(&a);
    let spec = ProtocolSpec::read(&tiny()).unwrap().check().unwrap();
    let blocks = spec.blocks().unwrap();
    // Every (victim, budget, attacker seed, defence, attacker) cell of every block has its row.
    let mut want = std::collections::BTreeSet::new();
    for b in &blocks {
        for &v in &b.victims {
            for &budget in &b.budgets {
                for &s in &b.attacker_seeds {
                    for d in &b.defences {
                        for &k in &b.attackers {
                            want.insert(format!("{v}/{budget}/{s}/{d}/{}", k.name()));
                        }
                    }
                }
            }
        }
    }
    let rows = rows_of(&a);
    assert_eq!(
        rows.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        want
    );
    let all: Vec<CloneRow> = read_jsonl(&a.join("rows.jsonl")).unwrap();
    let points: Vec<PointRow> = read_jsonl(&a.join("points.jsonl")).unwrap();
    // What the tables rely on, checked in the rows.
    for p in &points {
        let s = &p.stats;
        if p.defence == "none" {
            assert_eq!((s.l1, s.changed, s.reveal), (0.0, 0.0, 0.0), "{p:?}");
        }
        if p.defence.starts_with("rg-vertex") || p.defence.starts_with("partner-table") {
            assert_eq!(s.changed, 0.0, "{p:?}");
            assert_eq!(
                s.reveal, 0.0,
                "{p:?}: the floor keeps every value off 0 and 1"
            );
            assert!(s.l1 <= p.strength + 1e-6 && s.l1 > 0.0, "{p:?}");
        }
        if p.defence == "top1" {
            assert_eq!(s.reveal, 1.0);
        }
    }
    let cell = |r: &CloneRow, k: AttackerKind| {
        all.iter()
            .find(|o| {
                o.victim == r.victim
                    && o.budget == r.budget
                    && o.attacker_seed == r.attacker_seed
                    && o.defence == r.defence
                    && o.attacker == k
            })
            .unwrap()
            .clone()
    };
    let mut top1_by_group: BTreeMap<(u64, usize, u64), f64> = BTreeMap::new();
    for r in &all {
        if r.attacker == AttackerKind::DistillSelect {
            // The careful thief keeps whichever of its two clones agrees better with its hold-out.
            let (soft, hard) = (
                cell(r, AttackerKind::Distill),
                cell(r, AttackerKind::DistillTop1),
            );
            let labels = hard.holdout_agreement > soft.holdout_agreement;
            assert_eq!(r.chose_labels, Some(labels));
            let kept = if labels { hard } else { soft };
            assert_eq!(r.clone_accuracy, kept.clone_accuracy);
        }
        // Class-keeping defences give the labels-only thief the same labels, hence the same clone.
        let keeps = points
            .iter()
            .any(|p| p.victim == r.victim && p.defence == r.defence && p.keeps_class);
        if r.attacker == AttackerKind::DistillTop1 && keeps {
            let g = (r.victim, r.budget, r.attacker_seed);
            let first = *top1_by_group.entry(g).or_insert(r.clone_accuracy);
            assert_eq!(first, r.clone_accuracy, "{r:?}");
        }
    }
    // The summary names the primary comparisons and regenerates from the kept files alone.
    let md = std::fs::read_to_string(a.join("summary.md")).unwrap();
    assert!(md.contains("rg-vertex:objective=B − partner-table"), "{md}");
    let regen = tmp.path().join("regen");
    let (ok, out, err) = rgshield(&[
        "clone-eval",
        "--from-json",
        a.to_str().unwrap(),
        "--out",
        regen.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(regen.join("summary.md")).unwrap(),
        md
    );

    // Interrupted: half the rows kept, a torn line after them; the rerun completes identically.
    let b = tmp.path().join("b");
    run_into(&b);
    let text = std::fs::read_to_string(b.join("rows.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut cut = lines[..lines.len() / 2].join("\n");
    cut.push('\n');
    cut.push_str(&lines[lines.len() / 2][..20]);
    std::fs::write(b.join("rows.jsonl"), cut).unwrap();
    assert!(read_jsonl::<CloneRow>(&b.join("rows.jsonl")).unwrap().len() == lines.len() / 2);
    run_into(&b);
    assert_eq!(rows_of(&b), rows);
    let lines_after = std::fs::read_to_string(b.join("rows.jsonl")).unwrap();
    assert_eq!(lines_after.lines().count(), lines.len(), "no row twice");
}

#[test]
fn bad_protocol_files_are_refused_with_the_field_named() {
    let tmp = tempfile::tempdir().unwrap();
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny()).unwrap()).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("unknown field", Box::new(|v| v["budgetz"] = 3.into())),
        (
            "primary_budget",
            Box::new(|v| v["primary_budget"] = 999.into()),
        ),
        (
            "defence 'rg-vertex:objective=Z'",
            Box::new(|v| v["blocks"][0]["defences"][2] = "rg-vertex:objective=Z".into()),
        ),
        (
            "unknown variant",
            Box::new(|v| v["blocks"][0]["attackers"][0] = "knn".into()),
        ),
        (
            "budget 70 is not one of",
            Box::new(|v| v["blocks"][1]["budgets"] = serde_json::json!([70])),
        ),
        (
            "serve_samples 0",
            Box::new(|v| v["serve_samples"] = 0.into()),
        ),
        (
            "victim_training beside training",
            Box::new(|v| {
                use rgshield::train::{Method, TrainParams};
                let pin = |m| serde_json::to_value(TrainParams::for_method(m, 1)).unwrap();
                let (hybrid, eq14) = (pin(Method::Hybrid), pin(Method::Eq14));
                v["training"] = serde_json::json!({"hybrid": hybrid, "eq14": eq14});
            }),
        ),
    ];
    for (want, edit) in cases {
        let mut v = base.clone();
        edit(&mut v);
        let f = tmp.path().join("p.json");
        std::fs::write(&f, v.to_string()).unwrap();
        let (ok, _, err) = rgshield(&[
            "clone-eval",
            "--protocol",
            f.to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ]);
        assert!(!ok, "{want}");
        assert!(err.contains(want), "wanted '{want}' in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Resuming into a directory of another protocol is refused.
    let o = tmp.path().join("other");
    std::fs::create_dir_all(&o).unwrap();
    std::fs::write(o.join("protocol.json"), "{}").unwrap();
    let (ok, _, err) = rgshield(&[
        "clone-eval",
        "--protocol",
        tiny().to_str().unwrap(),
        "--out",
        o.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("holds another protocol"), "{err}");
}

#[test]
fn query_orders_are_nested_permutations_and_the_digits_split_is_stratified() {
    let o = protocol::query_order(600, 3);
    let mut s = o.clone();
    s.sort_unstable();
    assert_eq!(s, (0..600).collect::<Vec<_>>());
    assert_ne!(o, protocol::query_order(600, 4));
    // Stratified order: every prefix holds each class within one row of its share.
    let labels: Vec<u32> = (0..300)
        .map(|i| (i % 7 == 0) as u32 + (i % 3 == 0) as u32)
        .collect();
    let order = protocol::stratified_order(&labels, 5);
    for prefix in [30, 100, 201] {
        for c in 0..3u32 {
            let total = labels.iter().filter(|&&y| y == c).count() as f64;
            let got = order[..prefix].iter().filter(|&&i| labels[i] == c).count() as f64;
            let want = total * prefix as f64 / 300.0;
            assert!(
                (got - want).abs() <= 1.0 + 1e-9,
                "class {c}, prefix {prefix}: {got} vs {want}"
            );
        }
    }
}
/// The README's clone-evaluation tables: each of their lines is in the summary that the committed
/// run directories regenerate, and that summary is the committed one.
#[test]
fn readme_clone_eval_tables_are_regenerated_by_the_committed_results() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("docs/results/2026-11-30-clone-eval");
    let runs: Vec<_> = ["digits", "fashion"]
        .iter()
        .map(|n| summary::load_run(&dir.join(n)).unwrap())
        .collect();
    let md = summary::markdown(&summary::summarise(&runs));
    assert_eq!(md, std::fs::read_to_string(dir.join("summary.md")).unwrap());
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("<!-- clone-eval-table -->")
        .expect("README marks its clone-eval table");
    let end = readme.find("<!-- /clone-eval-table -->").unwrap();
    let quoted: Vec<&str> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .collect();
    assert!(!quoted.is_empty());
    for l in quoted {
        assert!(
            md.contains(l),
            "README line not in the regenerated summary: {l}"
        );
    }
}

/// Every kept protocol run was written by the protocol file it names, with its training pinned:
/// `clone-eval --protocol protocols/NAME.json --out docs/results/…/NAME` resumes it (the runner
/// refuses a directory whose protocol.json differs from the file's serialisation), and the
/// changed defaults of the running code cannot change what a rerun trains.
#[test]
fn kept_runs_are_resumable_by_their_protocol_files_and_pin_their_training() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "digits",
        "fashion",
        "digits-adaptive",
        "fashion-adaptive",
        "digits-eq14-readings",
        "fashion-more",
    ] {
        let spec = ProtocolSpec::read(&root.join(format!("protocols/{name}.json")))
            .unwrap()
            .check()
            .unwrap();
        // The hybrid pinned is the one `rgshield train --print-defaults` printed before issue 14
        // changed the defaults (kept by the depth study, written by that binary).
        let before: rgshield::train::TrainParams = serde_json::from_str(
            &std::fs::read_to_string(
                root.join("docs/results/2026-11-30-depth-study/train_config.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            spec.training.as_ref().map(|t| &t.hybrid),
            Some(&before),
            "{name}: training not pinned to the defaults the run used"
        );
        let kept = std::fs::read_to_string(root.join(format!(
            "docs/results/2026-11-30-clone-eval/{name}/protocol.json"
        )))
        .unwrap();
        assert_eq!(
            serde_json::to_string_pretty(&*spec).unwrap(),
            kept.trim_end(),
            "{name}"
        );
    }
}

/// The same for the depth study's clone side (`scripts/depth_clone_study.sh`): each depth's kept
/// run equals the serialisation of its kept protocol file, with the training pinned, and the
/// runner resumes a copy of it (its victims kept before rgshield recorded their data set and
/// training included) without changing a row.
#[test]
fn depth_clone_runs_are_resumable_and_pin_their_training() {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results/2026-11-30-depth-study/clone");
    let tmp = tempfile::tempdir().unwrap();
    for n in 1..=8 {
        let copy = tmp.path().join(format!("d{n}"));
        copy_dir(&root.join(format!("d{n}")), &copy);
        let (ok, _, err) = rgshield(&[
            "clone-eval",
            "--protocol",
            root.join(format!("protocols/d{n}.json")).to_str().unwrap(),
            "--out",
            copy.to_str().unwrap(),
        ]);
        assert!(ok, "d{n}: {err}");
        let rows = |d: &Path| std::fs::read_to_string(d.join("rows.jsonl")).unwrap();
        assert_eq!(rows(&copy), rows(&root.join(format!("d{n}"))), "d{n}");
        let spec = ProtocolSpec::read(&root.join(format!("protocols/d{n}.json")))
            .unwrap()
            .check()
            .unwrap();
        assert!(spec.training.is_some(), "d{n}: training not pinned");
        let kept = std::fs::read_to_string(root.join(format!("d{n}/protocol.json"))).unwrap();
        assert_eq!(
            serde_json::to_string_pretty(&*spec).unwrap(),
            kept.trim_end(),
            "d{n}"
        );
    }
}

/// The kept runs that extend another (same victims, same attacker seeds) reproduce the rows and
/// defence points they share with it: every field both runs measured is equal (the wall-clock
/// seconds aside; adversarial transfer where both measured it). The counts are the ones the
/// results README quotes.
#[test]
fn kept_extension_runs_reproduce_the_cells_they_share() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results/2026-11-30-clone-eval");
    let rows = |name: &str| -> BTreeMap<String, CloneRow> {
        read_jsonl::<CloneRow>(&dir.join(name).join("rows.jsonl"))
            .unwrap()
            .into_iter()
            .map(|r| (r.key(), r))
            .collect()
    };
    let points = |name: &str| -> BTreeMap<(u64, String), String> {
        read_jsonl::<PointRow>(&dir.join(name).join("points.jsonl"))
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    (p.victim, p.defence.clone()),
                    serde_json::to_string(&p).unwrap(),
                )
            })
            .collect()
    };
    for (base, ext, shared_rows, shared_points) in [
        ("digits", "digits-adaptive", 270, 27),
        ("digits", "digits-eq14-readings", 204, 18),
        ("fashion", "fashion-more", 231, 24),
        ("fashion", "fashion-adaptive", 0, 12),
    ] {
        let (a, b) = (rows(base), rows(ext));
        let mut n = 0;
        for (k, rb) in &b {
            let Some(ra) = a.get(k) else { continue };
            let (mut ra, mut rb) = (ra.clone(), rb.clone());
            (ra.seconds, rb.seconds) = (0.0, 0.0);
            if ra.transfer.is_none() || rb.transfer.is_none() {
                (ra.transfer, rb.transfer) = (None, None);
            }
            assert_eq!(
                serde_json::to_string(&ra).unwrap(),
                serde_json::to_string(&rb).unwrap(),
                "{ext} vs {base}: {k}"
            );
            n += 1;
        }
        assert_eq!(n, shared_rows, "{ext} vs {base}: shared rows");
        let (pa, pb) = (points(base), points(ext));
        let mut m = 0;
        for (k, p) in &pb {
            if let Some(q) = pa.get(k) {
                assert_eq!(p, q, "{ext} vs {base}: point {k:?}");
                m += 1;
            }
        }
        assert_eq!(m, shared_points, "{ext} vs {base}: shared points");
    }
}

/// Copy the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
