//! The protocol's results as tables (SPEC §12): the frame (soft outputs against labels only), each
//! defence point's answers and clones, clone accuracy at equal realised L1, the protection ratio,
//! MAD's plane for defences that change classes, and the comparisons with Holm's correction.
//!
//! **Equal distortion.** A defence family is a defence with every knob but its strength fixed
//! (e.g. `rg-vertex:objective=B` swept over `eps`). For one victim and attacker seed its curve is
//! (realised mean L1 on the evaluation answers, clone accuracy) over the family's points, anchored
//! at (0, the clone under `none`), read by linear interpolation at L1 ∈ [`L1_TARGETS`] (no value
//! outside the points' range — a family that never reaches an L1 has no entry there — except that
//! a largest point within [`L1_TOLERANCE`] below the target is read as the target).
//!
//! **Comparisons.** A difference of two families at one L1 is taken per (victim, attacker seed)
//! pair — the same queries and clone initialisation — and estimated clustered by victim
//! ([`compare::clustered`]): victims are the sampling units, so the interval is over models, not
//! over clones of one model. The **primary family** is fixed here, before any run:
//! `rg-vertex:objective=B` − `partner-table` and `rg-vertex:objective=B` − `grad2-argmax`, for the
//! `distill` and `hybrid` attackers, at L1 = 0.6 and each protocol's primary budget; Holm's
//! correction runs over the primary comparisons of every run summarised together, and separately
//! over all the secondary ones. A negative difference means the first family leaves the clone
//! *less* accurate (the better defence).
//!
//! **Protection ratio** at L1: `(acc_none − acc_F(L1)) / (acc_none − acc_top1)`, from the means
//! over (victim, seed) pairs: the share of the soft-output advantage the family removes.
//!
//! **MAD's plane** (class-changing families): the lowest clone accuracy among the family's points
//! (and `none`) whose defender-accuracy loss is at most 1, 2 or 5 points, averaged over pairs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::answers::AnswerStats;
use super::{
    read_jsonl, AttackerKind, CloneRow, PointRow, ProtocolSpec, TuningChoice, VictimRecord,
};
use crate::error::{Error, Result};
use crate::report::compare::{self, Estimate, HolmStep};

/// The L1 distortions at which families are compared.
pub const L1_TARGETS: [f64; 4] = [0.1, 0.3, 0.6, 1.0];
/// How far below an L1 target a family's largest realised L1 may fall and still be read at the
/// target (its value there): a budget ε is realised up to the floor and float rounding (e.g.
/// 0.5999 for ε = 0.6).
pub const L1_TOLERANCE: f64 = 0.01;
/// Primary comparisons: (first family, second family).
pub const PRIMARY_PAIRS: [(&str, &str); 2] = [
    ("rg-vertex:objective=B", "partner-table"),
    ("rg-vertex:objective=B", "grad2-argmax"),
];
/// Attackers of the primary comparisons.
pub const PRIMARY_ATTACKERS: [AttackerKind; 2] = [AttackerKind::Distill, AttackerKind::Hybrid];
/// L1 of the primary comparisons.
pub const PRIMARY_L1: f64 = 0.6;
/// Secondary pairs (besides every class-keeping family against `none`).
pub const SECONDARY_PAIRS: [(&str, &str); 4] = [
    ("rg-vertex:objective=B", "random-vertex"),
    ("rg-vertex:objective=B", "random-fixed"),
    ("rg-vertex:objective=B", "rg-vertex:objective=A"),
    ("partner-table", "random-vertex"),
];
/// Family level of both Holm corrections.
pub const ALPHA: f64 = 0.05;

/// Knobs that are a family's strength, dropped from its name.
const STRENGTH_KNOBS: [&str; 5] = ["eps", "tau", "sigma", "beta", "decimals"];
/// Knob values left out of a family's name when they are the defaults.
const DEFAULT_TOKENS: [&str; 7] = [
    "reading=P",
    "margin=0.02",
    "floor=0.0001",
    "surrogate=random",
    "gamma=0.1",
    "sign=feasible",
    "margin=0.001",
];

/// The family of a defence point (its canonical string without the strength knob and default
/// knobs), e.g. `rg-vertex:objective=B,eps=0.6,…` → `rg-vertex:objective=B`.
pub fn family(point: &str) -> String {
    let (kind, knobs) = point.split_once(':').unwrap_or((point, ""));
    let kept: Vec<&str> = knobs
        .split(',')
        .filter(|t| !t.is_empty())
        .filter(|t| {
            let k = t.split('=').next().unwrap_or("");
            !STRENGTH_KNOBS.contains(&k) && !DEFAULT_TOKENS.contains(t)
        })
        .collect();
    if kept.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}:{}", kept.join(","))
    }
}

/// Everything one run directory holds.
pub struct RunData {
    /// The protocol.
    pub spec: ProtocolSpec,
    /// Its victims.
    pub victims: Vec<VictimRecord>,
    /// The MLP thief's tuning.
    pub tuning: Vec<TuningChoice>,
    /// Answer-level rows.
    pub points: Vec<PointRow>,
    /// Clone rows.
    pub rows: Vec<CloneRow>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&t).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

/// Read a run directory written by [`super::run`].
pub fn load_run(dir: &Path) -> Result<RunData> {
    Ok(RunData {
        spec: read_json(&dir.join("protocol.json"))?,
        victims: read_json(&dir.join("victims.json"))?,
        tuning: read_json(&dir.join("tuning.json"))?,
        points: read_jsonl(&dir.join("points.jsonl"))?,
        rows: read_jsonl(&dir.join("rows.jsonl"))?,
    })
}

/// One comparison of two families at equal L1.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Protocol name (data set).
    pub protocol: String,
    /// First family.
    pub first: String,
    /// Second family.
    pub second: String,
    /// Attacker.
    pub attacker: AttackerKind,
    /// Budget.
    pub budget: usize,
    /// L1 at which the curves are read.
    pub l1: f64,
    /// Clone accuracy under `first` − under `second`.
    pub estimate: Estimate,
    /// Holm's step for it within its family.
    pub holm: Option<HolmStep>,
    /// The interval at Holm's level.
    pub interval: (f64, f64),
}

/// Mean, and the 95% interval over victims (clustered), of per-pair values.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Interval {
    /// Mean.
    pub mean: f64,
    /// Lower end (NaN with one victim).
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Values that went in.
    pub n: usize,
    /// Victims.
    pub victims: usize,
}

fn interval_of(values: &[(u64, f64)]) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    let e = compare::clustered(values);
    let (lo, hi) = e.interval(0.95);
    Some(Interval {
        mean: e.mean,
        lo,
        hi,
        n: e.n,
        victims: e.units,
    })
}

/// Clone accuracy by (budget, defence, attacker) → (victim, seed) → value.
type Acc = BTreeMap<(usize, String, AttackerKind), BTreeMap<(u64, u64), f64>>;

fn accuracies(run: &RunData) -> Acc {
    by_cell(run, |r| Some(r.clone_accuracy))
}

/// Adversarial transfer ([`CloneRow::transfer`]) by cell, for the rows that measured it.
fn transfers(run: &RunData) -> Acc {
    by_cell(run, |r| r.transfer)
}

fn by_cell(run: &RunData, value: impl Fn(&CloneRow) -> Option<f64>) -> Acc {
    let mut acc: Acc = BTreeMap::new();
    for r in &run.rows {
        if let Some(v) = value(r) {
            acc.entry((r.budget, r.defence.clone(), r.attacker))
                .or_default()
                .insert((r.victim, r.attacker_seed), v);
        }
    }
    acc
}

/// Per (victim, seed) values of a cell as `(victim, value)` pairs, summarised over victims.
fn cell_interval(vals: &BTreeMap<(u64, u64), f64>) -> Option<Interval> {
    let v: Vec<(u64, f64)> = vals.iter().map(|(&(vi, _), &x)| (vi, x)).collect();
    interval_of(&v)
}

/// Families of a run's points, in the protocol's order, with their points.
fn families(run: &RunData) -> Families {
    let mut out: Families = Vec::new();
    for p in &run.points {
        if p.defence == "none" || p.defence == "top1" {
            continue;
        }
        let f = family(&p.defence);
        match out.iter_mut().find(|(g, _, _)| *g == f) {
            Some((_, pts, _)) => {
                if !pts.contains(&p.defence) {
                    pts.push(p.defence.clone())
                }
            }
            None => out.push((f, vec![p.defence.clone()], p.keeps_class)),
        }
    }
    out
}

/// Per (victim, seed): the family's clone accuracy read at `l1`.
fn at_l1(
    run: &RunData,
    acc: &Acc,
    fam: &[String],
    k: AttackerKind,
    b: usize,
    l1: f64,
) -> BTreeMap<(u64, u64), f64> {
    let mut out = BTreeMap::new();
    let Some(none) = acc.get(&(b, "none".to_string(), k)) else {
        return out;
    };
    for (&(v, a), &base) in none {
        let mut pts = vec![(0.0, base)];
        for d in fam {
            let l = run
                .points
                .iter()
                .find(|p| p.victim == v && &p.defence == d)
                .map(|p| p.stats.l1);
            let y = acc.get(&(b, d.clone(), k)).and_then(|m| m.get(&(v, a)));
            if let (Some(l), Some(&y)) = (l, y) {
                pts.push((l, y));
            }
        }
        if pts.len() > 1 {
            // A point within L1_TOLERANCE below the target stands for it.
            let top = pts.iter().map(|p| p.0).fold(0.0, f64::max);
            let x = if l1 > top && l1 - top <= L1_TOLERANCE {
                top
            } else {
                l1
            };
            if let Some(y) = compare::interpolate(&pts, x) {
                out.insert((v, a), y);
            }
        }
    }
    out
}

fn diff(a: &BTreeMap<(u64, u64), f64>, b: &BTreeMap<(u64, u64), f64>) -> Vec<(u64, f64)> {
    a.iter()
        .filter_map(|(k, x)| b.get(k).map(|y| (k.0, x - y)))
        .collect()
}

/// A run's families as [`families`] returns them.
type Families = Vec<(String, Vec<String>, bool)>;

/// A run with what every comparison of it reads: its accuracies and its families, built once.
struct RunView<'a> {
    run: &'a RunData,
    acc: Acc,
    fams: Families,
}

impl<'a> RunView<'a> {
    fn new(run: &'a RunData) -> Self {
        RunView {
            run,
            acc: accuracies(run),
            fams: families(run),
        }
    }
}

fn compare_families(
    view: &RunView<'_>,
    first: &str,
    second: &str,
    k: AttackerKind,
    b: usize,
    l1: f64,
) -> Option<Comparison> {
    let (run, acc, fams) = (view.run, &view.acc, &view.fams);
    let pts = |name: &str| -> Option<Vec<String>> {
        if name == "none" {
            return Some(Vec::new());
        }
        fams.iter()
            .find(|(f, _, _)| f == name)
            .map(|(_, p, _)| p.clone())
    };
    let (p1, p2) = (pts(first)?, pts(second)?);
    let d = diff(
        &at_l1(run, acc, &p1, k, b, l1),
        &at_l1(run, acc, &p2, k, b, l1),
    );
    if d.is_empty() {
        return None;
    }
    let estimate = compare::clustered(&d);
    Some(Comparison {
        protocol: run.spec.name.clone(),
        first: first.to_string(),
        second: second.to_string(),
        attacker: k,
        budget: b,
        l1,
        estimate,
        holm: None,
        interval: estimate.interval(0.95),
    })
}

/// The comparisons of the runs: (primary, secondary), each Holm-corrected within itself.
pub fn comparisons(runs: &[RunData]) -> (Vec<Comparison>, Vec<Comparison>) {
    let mut primary = Vec::new();
    let mut secondary = Vec::new();
    for run in runs {
        let view = RunView::new(run);
        let fams = &view.fams;
        // A labels-only clone is the same under every class-keeping defence: nothing to compare.
        let attackers: BTreeSet<AttackerKind> = run
            .rows
            .iter()
            .map(|r| r.attacker)
            .filter(|k| !k.labels_only())
            .collect();
        for &(f, s) in &PRIMARY_PAIRS {
            for &k in PRIMARY_ATTACKERS.iter().filter(|k| attackers.contains(k)) {
                if let Some(c) =
                    compare_families(&view, f, s, k, run.spec.primary_budget, PRIMARY_L1)
                {
                    primary.push(c);
                }
            }
        }
        let keeping: Vec<String> = fams.iter().filter(|f| f.2).map(|f| f.0.clone()).collect();
        let mut pairs: Vec<(String, String)> = SECONDARY_PAIRS
            .iter()
            .map(|&(a, b)| (a.to_string(), b.to_string()))
            .collect();
        pairs.extend(keeping.iter().map(|f| (f.clone(), "none".to_string())));
        for &b in &run.spec.budgets {
            for &k in &attackers {
                for &l1 in &L1_TARGETS {
                    for (f, s) in &pairs {
                        if let Some(c) = compare_families(&view, f, s, k, b, l1) {
                            secondary.push(c);
                        }
                    }
                    for &(f, s) in &PRIMARY_PAIRS {
                        let is_primary = PRIMARY_ATTACKERS.contains(&k)
                            && b == run.spec.primary_budget
                            && l1 == PRIMARY_L1;
                        if !is_primary {
                            if let Some(c) = compare_families(&view, f, s, k, b, l1) {
                                secondary.push(c);
                            }
                        }
                    }
                }
            }
        }
    }
    for set in [&mut primary, &mut secondary] {
        let p: Vec<f64> = set.iter().map(|c| c.estimate.p_value()).collect();
        for (c, h) in set.iter_mut().zip(compare::holm(&p, ALPHA)) {
            c.interval = c.estimate.interval(h.level);
            c.holm = Some(h);
        }
    }
    (primary, secondary)
}

/// One row of a budget's table: a defence point with what it does to answers and clones.
#[derive(Clone, Debug, Serialize)]
pub struct PointSummary {
    /// Defence point.
    pub defence: String,
    /// Its family.
    pub family: String,
    /// Keeps every class.
    pub keeps_class: bool,
    /// What it does to the answers, each field the mean over victims.
    pub stats: AnswerStats,
    /// Clone accuracy per attacker.
    pub clones: BTreeMap<String, Interval>,
    /// Adversarial transfer per attacker, where the run measured it (`transfer_inputs` > 0).
    pub transfer: BTreeMap<String, Interval>,
    /// Protection ratio of the `distill` attacker (NaN without none and top1).
    pub protection_ratio: f64,
    /// Share of `distill-select` clones that kept the labels-only clone.
    pub select_chose_labels: Option<f64>,
}

/// The summary of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Protocol name.
    pub protocol: String,
    /// Victims' served accuracies.
    pub victims: Vec<VictimRecord>,
    /// The MLP thief's tuning.
    pub tuning: Vec<TuningChoice>,
    /// Per budget: the frame (none/distill, none/top1, none/select) and the points.
    pub budgets: Vec<(usize, Vec<PointSummary>)>,
    /// Per (attacker, budget, family): clone accuracy at each L1 target (mean over pairs).
    pub curves: Vec<(String, usize, String, Vec<Option<f64>>)>,
    /// Per (attacker, budget, family): protection ratio at each L1 target.
    pub ratios: Vec<(String, usize, String, Vec<Option<f64>>)>,
    /// Per (attacker, budget, class-changing family): lowest clone accuracy at a defender loss of
    /// at most 1, 2, 5 points.
    pub mad_plane: Vec<(String, usize, String, [Option<f64>; 3])>,
    /// Clones in the run and their total wall-clock seconds.
    pub clones: (usize, f64),
}

/// Everything [`markdown`] prints.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Per run.
    pub runs: Vec<RunSummary>,
    /// Primary comparisons.
    pub primary: Vec<Comparison>,
    /// Secondary comparisons.
    pub secondary: Vec<Comparison>,
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

fn run_summary(run: &RunData) -> RunSummary {
    let acc = accuracies(run);
    let tra = transfers(run);
    let attackers: BTreeSet<AttackerKind> = run.rows.iter().map(|r| r.attacker).collect();
    let mut defences: Vec<String> = Vec::new();
    for p in &run.points {
        if !defences.contains(&p.defence) {
            defences.push(p.defence.clone());
        }
    }
    let mean_acc = |b: usize, d: &str, k: AttackerKind| -> Option<f64> {
        acc.get(&(b, d.to_string(), k))
            .map(|m| mean(m.values().copied()))
    };
    let mut budgets = Vec::new();
    for &b in &run.spec.budgets {
        let mut rows = Vec::new();
        for d in &defences {
            let pts: Vec<&PointRow> = run.points.iter().filter(|p| &p.defence == d).collect();
            let per_attacker = |m: &Acc| -> BTreeMap<String, Interval> {
                attackers
                    .iter()
                    .filter_map(|&k| {
                        let i = cell_interval(m.get(&(b, d.clone(), k))?)?;
                        Some((k.name().to_string(), i))
                    })
                    .collect()
            };
            let clones = per_attacker(&acc);
            let transfer = per_attacker(&tra);
            if clones.is_empty() {
                continue;
            }
            let k = AttackerKind::Distill;
            let protection_ratio = match (
                mean_acc(b, "none", k),
                mean_acc(b, d, k),
                mean_acc(b, "top1", AttackerKind::DistillTop1).or(mean_acc(
                    b,
                    "none",
                    AttackerKind::DistillTop1,
                )),
            ) {
                (Some(n), Some(x), Some(t)) if n != t => (n - x) / (n - t),
                _ => f64::NAN,
            };
            let sel: Vec<bool> = run
                .rows
                .iter()
                .filter(|r| r.budget == b && &r.defence == d)
                .filter_map(|r| r.chose_labels)
                .collect();
            rows.push(PointSummary {
                defence: d.clone(),
                family: family(d),
                keeps_class: pts.first().is_none_or(|p| p.keeps_class),
                stats: AnswerStats::mean(pts.iter().map(|p| &p.stats)),
                clones,
                transfer,
                protection_ratio,
                select_chose_labels: (!sel.is_empty())
                    .then(|| sel.iter().filter(|&&c| c).count() as f64 / sel.len() as f64),
            });
        }
        if !rows.is_empty() {
            budgets.push((b, rows));
        }
    }
    let fams = families(run);
    let mut curves = Vec::new();
    let mut ratios = Vec::new();
    let mut mad_plane = Vec::new();
    for &k in &attackers {
        for &b in &run.spec.budgets {
            let none = mean_acc(b, "none", k);
            let top1 = mean_acc(b, "none", AttackerKind::DistillTop1);
            for (f, pts, keeps) in &fams {
                if !pts.iter().any(|d| acc.contains_key(&(b, d.clone(), k))) {
                    continue;
                }
                if *keeps {
                    let at: Vec<Option<f64>> = L1_TARGETS
                        .iter()
                        .map(|&l| {
                            let m = at_l1(run, &acc, pts, k, b, l);
                            (!m.is_empty()).then(|| mean(m.values().copied()))
                        })
                        .collect();
                    let r: Vec<Option<f64>> = at
                        .iter()
                        .map(|y| match (y, none, top1) {
                            (Some(y), Some(n), Some(t)) if n != t => Some((n - y) / (n - t)),
                            _ => None,
                        })
                        .collect();
                    curves.push((k.name().to_string(), b, f.clone(), at));
                    ratios.push((k.name().to_string(), b, f.clone(), r));
                } else {
                    let mut plane = [None; 3];
                    for (slot, &loss) in plane.iter_mut().zip(&[0.01, 0.02, 0.05]) {
                        let Some(nm) = acc.get(&(b, "none".to_string(), k)) else {
                            continue;
                        };
                        let vals: Vec<f64> = nm
                            .iter()
                            .map(|(&(v, a), &base)| {
                                let undefended = run
                                    .points
                                    .iter()
                                    .find(|p| p.victim == v && p.defence == "none")
                                    .map_or(f64::NAN, |p| p.stats.defender_accuracy);
                                pts.iter()
                                    .filter_map(|d| {
                                        let p = run
                                            .points
                                            .iter()
                                            .find(|p| p.victim == v && &p.defence == d)?;
                                        let y = acc.get(&(b, d.clone(), k))?.get(&(v, a))?;
                                        (undefended - p.stats.defender_accuracy <= loss + 1e-12)
                                            .then_some(*y)
                                    })
                                    .fold(base, f64::min)
                            })
                            .collect();
                        *slot = (!vals.is_empty()).then(|| mean(vals.into_iter()));
                    }
                    mad_plane.push((k.name().to_string(), b, f.clone(), plane));
                }
            }
        }
    }
    RunSummary {
        protocol: run.spec.name.clone(),
        victims: run.victims.clone(),
        tuning: run.tuning.clone(),
        budgets,
        curves,
        ratios,
        mad_plane,
        clones: (
            run.rows.iter().filter(|r| r.seconds > 0.0).count(),
            run.rows.iter().map(|r| r.seconds).sum(),
        ),
    }
}

/// The summary of runs read together (their primary comparisons share one Holm correction).
pub fn summarise(runs: &[RunData]) -> Summary {
    let (primary, secondary) = comparisons(runs);
    Summary {
        runs: runs.iter().map(run_summary).collect(),
        primary,
        secondary,
    }
}

fn f3(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.3}")
    }
}

fn opt(x: &Option<f64>) -> String {
    x.map_or("–".into(), f3)
}

fn ci(i: &Interval) -> String {
    if i.victims < 2 {
        format!("{:.3} (n = {}, 1 victim)", i.mean, i.n)
    } else {
        format!("{:.3} [{:.3}, {:.3}]", i.mean, i.lo, i.hi)
    }
}

fn comparison_table(out: &mut String, set: &[Comparison]) {
    out.push_str("| protocol | first − second | attacker | budget | L1 | difference | interval (Holm level) | p | Holm p | rejected |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for c in set {
        let h = c.holm.expect("set by comparisons()");
        let _ = writeln!(
            out,
            "| {} | {} − {} | {} | {} | {} | {:+.4} | [{:+.4}, {:+.4}] ({:.4}) | {} | {} | {} |",
            c.protocol,
            c.first,
            c.second,
            c.attacker.name(),
            c.budget,
            c.l1,
            c.estimate.mean,
            c.interval.0,
            c.interval.1,
            h.level,
            f3(c.estimate.p_value()),
            f3(h.adjusted_p),
            if h.rejected { "yes" } else { "no" }
        );
    }
}

/// A budget's adversarial-transfer table, when any of its clones measured transfer.
fn transfer_table(out: &mut String, rows: &[PointSummary]) {
    let attackers: BTreeSet<&String> = rows.iter().flat_map(|p| p.transfer.keys()).collect();
    if attackers.is_empty() {
        return;
    }
    out.push_str("\nAdversarial transfer: share of the victim's correctly served evaluation inputs (the protocol's first `transfer_inputs`) whose served class changes when moved by L2 `transfer_epsilon` along the clone's signed input-Fisher direction; mean over victims × attacker seeds [95% interval over victims].\n\n| defence |");
    for a in &attackers {
        let _ = write!(out, " {a} |");
    }
    out.push_str("\n|---|");
    for _ in &attackers {
        out.push_str("---|");
    }
    out.push('\n');
    for p in rows.iter().filter(|p| !p.transfer.is_empty()) {
        let _ = write!(out, "| {} |", p.defence);
        for a in &attackers {
            let _ = write!(out, " {} |", p.transfer.get(*a).map_or("–".into(), ci));
        }
        out.push('\n');
    }
}

/// The summary as Markdown.
pub fn markdown(s: &Summary) -> String {
    let mut out = String::new();
    out.push_str("# Clone evaluation, second form (SPEC §12)\n\nGenerated by `rgshield clone-eval --from-json`; every number below comes from the rows beside this file.\n\n");
    out.push_str("## Primary comparisons (fixed before the runs)\n\nClone accuracy under the first family minus under the second, at equal realised L1, clustered by victim; Holm over this table. Negative: the first family leaves the clone less accurate.\n\n");
    comparison_table(&mut out, &s.primary);
    for r in &s.runs {
        let _ = writeln!(out, "\n## {}\n", r.protocol);
        out.push_str("Victims (served accuracy on the evaluation set): ");
        let v: Vec<String> = r
            .victims
            .iter()
            .map(|v| format!("seed {} {:.4}", v.seed, v.served_accuracy))
            .collect();
        out.push_str(&v.join(", "));
        let _ = writeln!(
            out,
            ". Clones trained: {}, {:.0} s of clone training in all.\n",
            r.clones.0, r.clones.1
        );
        out.push_str("MLP thief tuned on undefended answers (hold-out agreement): ");
        let t: Vec<String> = r
            .tuning
            .iter()
            .map(|t| format!("budget {}: {} epochs, lr {}", t.budget, t.epochs, t.lr))
            .collect();
        out.push_str(&t.join("; "));
        out.push_str(".\n");
        for (b, rows) in &r.budgets {
            let attackers: BTreeSet<&String> = rows.iter().flat_map(|p| p.clones.keys()).collect();
            let _ = writeln!(out, "\n### {} — budget {b}\n", r.protocol);
            out.push_str("Clone accuracy: mean over victims × attacker seeds [95% interval over victims]. ratio = protection ratio of `distill`.\n\n| defence | L1 | changed | reveal | AUC | def. acc | Brier | ECE |");
            for a in &attackers {
                let _ = write!(out, " {a} |");
            }
            out.push_str(" ratio | select→labels |\n|---|---|---|---|---|---|---|---|");
            for _ in &attackers {
                out.push_str("---|");
            }
            out.push_str("---|---|\n");
            for p in rows {
                let _ = write!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    p.defence,
                    f3(p.stats.l1),
                    f3(p.stats.changed),
                    f3(p.stats.reveal),
                    f3(p.stats.detect_auc),
                    f3(p.stats.defender_accuracy),
                    f3(p.stats.brier),
                    f3(p.stats.ece)
                );
                for a in &attackers {
                    let _ = write!(out, " {} |", p.clones.get(*a).map_or("–".into(), ci));
                }
                let _ = writeln!(
                    out,
                    " {} | {} |",
                    f3(p.protection_ratio),
                    opt(&p.select_chose_labels)
                );
            }
            transfer_table(&mut out, rows);
        }
        let _ = writeln!(
            out,
            "\n### {} — clone accuracy and protection ratio at equal L1\n\n| attacker | budget | family | acc @ L1 0.1 | 0.3 | 0.6 | 1.0 | ratio @ 0.1 | 0.3 | 0.6 | 1.0 |\n|---|---|---|---|---|---|---|---|---|---|---|",
            r.protocol
        );
        for ((k, b, f, at), (_, _, _, rat)) in r.curves.iter().zip(&r.ratios) {
            let _ = write!(out, "| {k} | {b} | {f} |");
            for x in at.iter().chain(rat) {
                let _ = write!(out, " {} |", opt(x));
            }
            out.push('\n');
        }
        if !r.mad_plane.is_empty() {
            let _ = writeln!(
                out,
                "\n### {} — defences that change classes (MAD's plane)\n\nLowest clone accuracy at a defender-accuracy loss of at most 1, 2, 5 points.\n\n| attacker | budget | family | ≤ 1 pt | ≤ 2 pts | ≤ 5 pts |\n|---|---|---|---|---|---|",
                r.protocol
            );
            for (k, b, f, p) in &r.mad_plane {
                let _ = writeln!(
                    out,
                    "| {k} | {b} | {f} | {} | {} | {} |",
                    opt(&p[0]),
                    opt(&p[1]),
                    opt(&p[2])
                );
            }
        }
    }
    out.push_str("\n## Secondary comparisons\n\nSame estimate; Holm over this whole table (a separate family).\n\n");
    comparison_table(&mut out, &s.secondary);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_drop_the_strength_and_default_knobs() {
        assert_eq!(
            family("rg-vertex:objective=B,reading=P,eps=0.6,margin=0.02,floor=0.0001"),
            "rg-vertex:objective=B"
        );
        assert_eq!(
            family("rg-vertex:objective=A,reading=C,eps=1,margin=0.02,floor=0.0001"),
            "rg-vertex:objective=A,reading=C"
        );
        assert_eq!(
            family("partner-table:eps=0.3,margin=0.02,floor=0.0001"),
            "partner-table"
        );
        assert_eq!(
            family("reverse-sigmoid:beta=0.3,gamma=0.1"),
            "reverse-sigmoid"
        );
        assert_eq!(family("none"), "none");
    }

    fn point(victim: u64, defence: &str, l1: f64) -> PointRow {
        PointRow {
            victim,
            defence: defence.into(),
            defence_kind: defence.split(':').next().unwrap().into(),
            strength: 0.0,
            keeps_class: true,
            stats: crate::experiments::protocol::answers::AnswerStats {
                l1,
                ..Default::default()
            },
        }
    }

    fn row(victim: u64, seed: u64, defence: &str, acc: f64) -> CloneRow {
        CloneRow {
            victim,
            budget: 100,
            attacker_seed: seed,
            defence: defence.into(),
            attacker: AttackerKind::Distill,
            clone_accuracy: acc,
            fidelity: acc,
            transfer: None,
            holdout_agreement: acc,
            chose_labels: None,
            seconds: 1.0,
        }
    }

    #[test]
    fn curves_are_read_at_equal_l1_with_the_tolerance_and_not_beyond() {
        let (x3, x6) = ("partner-table:eps=0.3", "partner-table:eps=0.6");
        let mut points = Vec::new();
        let mut rows = Vec::new();
        for v in [1, 2] {
            points.push(point(v, "none", 0.0));
            points.push(point(v, x3, 0.3));
            points.push(point(v, x6, 0.5999));
            for s in [1, 2] {
                let shift = 0.01 * v as f64;
                rows.push(row(v, s, "none", 0.8 + shift));
                rows.push(row(v, s, x3, 0.7 + shift));
                rows.push(row(v, s, x6, 0.6 + shift));
            }
        }
        let spec: ProtocolSpec =
            serde_json::from_str(include_str!("../../../tests/data/protocol_tiny.json")).unwrap();
        let run = RunData {
            spec,
            victims: Vec::new(),
            tuning: Vec::new(),
            points,
            rows,
        };
        let acc = accuracies(&run);
        let fam = vec![x3.to_string(), x6.to_string()];
        let at = |l1: f64| at_l1(&run, &acc, &fam, AttackerKind::Distill, 100, l1);
        // Halfway between 0.3 and 0.5999 ≈ 0.45: between 0.7 and 0.6, plus the victim's shift.
        let m = at(0.45);
        assert!(
            (m[&(1, 1)] - (0.71 - 0.1 * (0.15 / 0.2999))).abs() < 1e-9,
            "{m:?}"
        );
        // 0.6 is read at the 0.5999 point; 1.0 is beyond every point: no value.
        assert!((at(0.6)[&(2, 2)] - 0.62).abs() < 1e-12);
        assert!(at(1.0).is_empty());
        // The anchor: L1 0.1 interpolates between none (0) and the 0.3 point.
        assert!((at(0.1)[&(1, 2)] - (0.81 - 0.1 / 3.0)).abs() < 1e-9);
        // A family against itself differs by exactly 0, with one value per (victim, seed).
        let c = compare_families(
            &RunView::new(&run),
            "partner-table",
            "partner-table",
            AttackerKind::Distill,
            100,
            0.6,
        )
        .unwrap();
        assert_eq!(
            (c.estimate.mean, c.estimate.n, c.estimate.units),
            (0.0, 4, 2)
        );
    }

    /// The transfer table: the mean over victims × seeds of the rows' transfer per defence and
    /// attacker, and no table when no row measured transfer.
    #[test]
    fn transfer_is_tabled_per_defence_and_attacker_only_when_measured() {
        let spec: ProtocolSpec =
            serde_json::from_str(include_str!("../../../tests/data/protocol_tiny.json")).unwrap();
        let mut rows = Vec::new();
        let mut points = Vec::new();
        for v in [1, 2] {
            points.push(point(v, "none", 0.0));
            for s in [1, 2] {
                let mut r = row(v, s, "none", 0.8);
                r.transfer = Some(0.1 * v as f64 + 0.05 * s as f64);
                rows.push(r);
            }
        }
        let mut run = RunData {
            spec,
            victims: Vec::new(),
            tuning: Vec::new(),
            points,
            rows,
        };
        let s = run_summary(&run);
        let t = &s.budgets[0].1[0].transfer["distill"];
        // (0.15 + 0.2 + 0.25 + 0.3) / 4
        assert!((t.mean - 0.225).abs() < 1e-12 && t.victims == 2, "{t:?}");
        let mut md = String::new();
        transfer_table(&mut md, &s.budgets[0].1);
        assert!(md.contains("| defence | distill |"), "{md}");
        assert!(md.contains("| none | 0.225 ["), "{md}");
        run.rows.iter_mut().for_each(|r| r.transfer = None);
        let s = run_summary(&run);
        let mut md = String::new();
        transfer_table(&mut md, &s.budgets[0].1);
        assert!(md.is_empty() && s.budgets[0].1[0].transfer.is_empty());
    }
}
