//! The exact series of the depth study (issue 14 item 3): stacks with hidden layers of width 10,
//! depths N = 1…10, random and trained weights, read by exact enumeration (no sampling noise).
//!
//! For each stack `[64, 10 × (N−1), 10]` and each of a fixed set of digits test inputs x:
//! * the top eigenvalue of the exact input Fisher information `F_x` of the output `q_N(·|x)`, and
//!   its ratio to the first-layer bound `W_1ᵀ diag(μ_1(1−μ_1)) W_1`;
//! * the top eigenvalue of the exact `F_k` at every depth k = 1…N within the stack (monotone
//!   non-increasing in k by the data-processing inequality);
//! * the top singular value of the exact served Jacobian `∂E[h_N|x]/∂x`;
//! * the mean-field reading: the top singular value of `∂μ_N/∂x` and the top eigenvalue of the
//!   mean-field Fisher information.
//!
//! Stacks: "random-σ" — Gaussian weights of standard deviation σ ∈ {0.5, 1.0} (0.5 is the hybrid's
//! initialisation), zero biases, seeds 1…5, each N its own draw; "trained" — the hybrid's
//! defaults (`TrainParams::for_method(Method::Hybrid, seed)`) on the embedded digits, seeds 1…3,
//! each N trained on its own. Per stack: quartiles over inputs; per (kind, N): the median over
//! seeds of the per-stack medians, with their min and max. Writes `exact_series.json`,
//! `exact_series.md` and plots into `--out`.
//!
//! Run with
//! `cargo run --profile dev-opt --example exact_series -- --out docs/results/2026-11-30-depth-study/exact_series`.

#[path = "exact_series/series.rs"]
mod series;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use serde::Serialize;

use faer::Mat;
use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::model::stack_widths;
use rgshield::report::stats::{median, quartiles, Quartiles};
use rgshield::report::{line_plot, LinePlot, Point, Series};
use rgshield::rg::fisher::top_eigen;
use rgshield::train::{Method, TrainParams, Trainer};
use rgshield::{DeepRbm, Params};

use series::{random_stack, stack_readings, InputReading};

#[derive(Parser, Debug, Serialize)]
#[command(about = "Exact series of the depth study (issue 14 item 3)")]
struct Args {
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Depths N = 1…max_depth.
    #[arg(long, default_value_t = 10)]
    max_depth: usize,
    /// Hidden width (every hidden layer; at most 12 for enumeration).
    #[arg(long, default_value_t = 10)]
    width: usize,
    /// The first n inputs of the digits test split.
    #[arg(long, default_value_t = 100)]
    inputs: usize,
    /// Random stacks: seeds 1…n per scale.
    #[arg(long, default_value_t = 5)]
    random_seeds: u64,
    /// Random stacks: weight standard deviations.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.5f32, 1.0])]
    scales: Vec<f32>,
    /// Trained stacks: seeds 1…n (hybrid defaults).
    #[arg(long, default_value_t = 3)]
    train_seeds: u64,
    /// Trained stacks: the training configuration from a JSON file, as `rgshield train
    /// --print-defaults` prints it (seed replaced), instead of the hybrid's defaults.
    #[arg(long)]
    train_config: Option<PathBuf>,
}

/// One stack of the series.
#[derive(Serialize)]
struct StackRow {
    kind: String,
    seed: u64,
    depth: usize,
    widths: Vec<usize>,
    /// Trained stacks: held-out accuracy at the end of training and training seconds.
    holdout_accuracy: Option<f64>,
    train_seconds: Option<f64>,
    /// Accuracy of the argmax of the exact served output on the inputs read.
    exact_accuracy: f64,
    fisher_top: Quartiles,
    bound_top: Quartiles,
    ratio: Quartiles,
    /// Quartiles over inputs of the top eigenvalue of `F_k`, k = 1…N.
    fisher_top_by_layer: Vec<Quartiles>,
    served_jacobian_sv: Quartiles,
    mf_jacobian_sv: Quartiles,
    mf_fisher_top: Quartiles,
    /// Per-input ratio `top F_k / top F_{k−1}` never above 1 + 1e-9 (data processing).
    monotone: bool,
    /// Seconds of the series' readings (without the oracle's cross-check).
    seconds: f64,
    /// Cross-check of the first input against `rgshield::exact::fisher_input` (the enumeration
    /// oracle, another arrangement of the same sums): its top eigenvalue of F_x, and the relative
    /// difference to the series' value.
    oracle_fisher_top: f64,
    oracle_rel_diff: f64,
}

/// Median over seeds of the per-stack medians, with their min and max.
#[derive(Serialize, Clone, Copy)]
struct OverSeeds {
    median: f64,
    min: f64,
    max: f64,
}

fn over_seeds(v: &[f64]) -> OverSeeds {
    OverSeeds {
        median: median(v).unwrap_or(f64::NAN),
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// The summary of one (kind, N).
#[derive(Serialize)]
struct SummaryRow {
    kind: String,
    depth: usize,
    seeds: usize,
    exact_accuracy: OverSeeds,
    fisher_top: OverSeeds,
    ratio: OverSeeds,
    served_jacobian_sv: OverSeeds,
    mf_jacobian_sv: OverSeeds,
    mf_fisher_top: OverSeeds,
}

#[derive(Serialize)]
struct Report {
    command: String,
    settings: Args,
    inputs: String,
    stacks: Vec<StackRow>,
    summary: Vec<SummaryRow>,
    seconds: f64,
}

fn med(q: &Quartiles) -> f64 {
    q.median.unwrap_or(f64::NAN)
}

/// Per seed, the median over inputs of the top eigenvalue of F_k at layer k (0-based) of the
/// `kind` stacks of depth `deepest`: the within-stack table and plot read the same values.
fn deepest_layer_medians(report: &Report, kind: &str, deepest: usize, k: usize) -> Vec<f64> {
    report
        .stacks
        .iter()
        .filter(|s| s.kind == kind && s.depth == deepest)
        .map(|s| med(&s.fisher_top_by_layer[k]))
        .collect()
}

fn stack_row(
    kind: &str,
    seed: u64,
    model: &DeepRbm,
    xs: &[&[f32]],
    labels: &[u32],
    trained: Option<(f64, f64)>,
) -> rgshield::Result<StackRow> {
    let t = Instant::now();
    let r: Vec<InputReading> = stack_readings(model, xs)?;
    let col = |f: &dyn Fn(&InputReading) -> f64| quartiles(&r.iter().map(f).collect::<Vec<_>>());
    let depth = model.depth();
    let correct = r
        .iter()
        .zip(labels)
        .filter(|(a, &y)| a.predicted == y as usize)
        .count();
    let monotone = r.iter().all(|a| {
        a.fisher_top
            .windows(2)
            .all(|w| w[1] <= w[0] * (1.0 + 1e-9) + 1e-12)
    });
    let seconds = t.elapsed().as_secs_f64();
    let f = rgshield::exact::fisher_input(model, xs[0])?;
    let n0 = xs[0].len();
    let oracle_fisher_top = top_eigen(Mat::from_fn(n0, n0, |i, j| f[i * n0 + j]).as_ref())?.0;
    let ours = r[0].fisher_top[depth - 1];
    let oracle_rel_diff = (ours - oracle_fisher_top).abs() / oracle_fisher_top.abs();
    Ok(StackRow {
        oracle_fisher_top,
        oracle_rel_diff,
        kind: kind.to_string(),
        seed,
        depth,
        widths: model.widths(),
        holdout_accuracy: trained.map(|t| t.0),
        train_seconds: trained.map(|t| t.1),
        exact_accuracy: correct as f64 / r.len() as f64,
        fisher_top: col(&|a| a.fisher_top[depth - 1]),
        bound_top: col(&|a| a.bound_top),
        ratio: col(&|a| a.ratio),
        fisher_top_by_layer: (0..depth).map(|k| col(&|a| a.fisher_top[k])).collect(),
        served_jacobian_sv: col(&|a| a.served_jacobian_sv),
        mf_jacobian_sv: col(&|a| a.mf_jacobian_sv),
        mf_fisher_top: col(&|a| a.mf_fisher_top),
        monotone,
        seconds,
    })
}

fn summarise(stacks: &[StackRow]) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<(String, usize), Vec<&StackRow>> = BTreeMap::new();
    for s in stacks {
        groups.entry((s.kind.clone(), s.depth)).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|((kind, depth), rows)| {
            let f = |g: &dyn Fn(&StackRow) -> f64| {
                over_seeds(&rows.iter().map(|r| g(r)).collect::<Vec<_>>())
            };
            SummaryRow {
                kind,
                depth,
                seeds: rows.len(),
                exact_accuracy: f(&|r| r.exact_accuracy),
                fisher_top: f(&|r| med(&r.fisher_top)),
                ratio: f(&|r| med(&r.ratio)),
                served_jacobian_sv: f(&|r| med(&r.served_jacobian_sv)),
                mf_jacobian_sv: f(&|r| med(&r.mf_jacobian_sv)),
                mf_fisher_top: f(&|r| med(&r.mf_fisher_top)),
            }
        })
        .collect()
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        format!("{v}")
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e-3 && v.abs() < 1e4 {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn cell(o: &OverSeeds) -> String {
    format!(
        "{} [{}, {}]",
        fmt_num(o.median),
        fmt_num(o.min),
        fmt_num(o.max)
    )
}

fn markdown(report: &Report, kinds: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Exact series (issue 14 item 3)\n");
    let _ = writeln!(md, "`{}`\n", report.command);
    let _ = writeln!(
        md,
        "Inputs: {}. Every cell: median over seeds of the per-stack median over inputs \
         [min, max over seeds]. No sampling: every number is exact enumeration (or the \
         deterministic mean-field network).\n",
        report.inputs
    );
    type Get = fn(&SummaryRow) -> &OverSeeds;
    let tables: [(&str, Get); 6] = [
        ("Top eigenvalue of the exact F_x (output layer)", |r| {
            &r.fisher_top
        }),
        ("Ratio top F_x / top first-layer bound", |r| &r.ratio),
        (
            "Top singular value of the mean-field Jacobian ∂μ_N/∂x",
            |r| &r.mf_jacobian_sv,
        ),
        ("Top eigenvalue of the mean-field Fisher information", |r| {
            &r.mf_fisher_top
        }),
        (
            "Top singular value of the exact served Jacobian ∂E[h_N|x]/∂x",
            |r| &r.served_jacobian_sv,
        ),
        (
            "Accuracy of the exact served output's argmax on the inputs",
            |r| &r.exact_accuracy,
        ),
    ];
    for (title, get) in tables {
        let _ = writeln!(md, "## {title}\n");
        let _ = writeln!(md, "| N | {} |", kinds.join(" | "));
        let _ = writeln!(md, "|---|{}", "---|".repeat(kinds.len()));
        let depths: Vec<usize> = {
            let mut d: Vec<usize> = report.summary.iter().map(|r| r.depth).collect();
            d.sort();
            d.dedup();
            d
        };
        for n in depths {
            let cells: Vec<String> = kinds
                .iter()
                .map(|k| {
                    report
                        .summary
                        .iter()
                        .find(|r| &r.kind == k && r.depth == n)
                        .map(|r| cell(get(r)))
                        .unwrap_or_default()
                })
                .collect();
            let _ = writeln!(md, "| {n} | {} |", cells.join(" | "));
        }
        let _ = writeln!(md);
    }
    // Within the deepest stacks: top F_k against k.
    let _ = writeln!(
        md,
        "## Within one stack: top eigenvalue of F_k against k, deepest stacks\n\n\
         Median over inputs per stack, then median over seeds [min, max].\n"
    );
    let deepest = report.stacks.iter().map(|s| s.depth).max().unwrap_or(0);
    let _ = writeln!(md, "| k | {} |", kinds.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(kinds.len()));
    for k in 0..deepest {
        let cells: Vec<String> = kinds
            .iter()
            .map(|kind| {
                let v = deepest_layer_medians(report, kind, deepest, k);
                if v.is_empty() {
                    String::new()
                } else {
                    cell(&over_seeds(&v))
                }
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", k + 1, cells.join(" | "));
    }
    let _ = writeln!(md);
    let all_monotone = report.stacks.iter().all(|s| s.monotone);
    let _ = writeln!(
        md,
        "Every input of every stack has top F_k non-increasing in k (to 1e-9 relative): {all_monotone}.\n"
    );
    let worst = report
        .stacks
        .iter()
        .map(|s| s.oracle_rel_diff)
        .fold(0.0f64, f64::max);
    let _ = writeln!(
        md,
        "Cross-check: the top eigenvalue of F_x of each stack's first input against \
         `rgshield::exact::fisher_input` (the enumeration oracle): largest relative difference \
         {worst:.1e} over the {} stacks.\n",
        report.stacks.len()
    );
    let trained: Vec<&StackRow> = report
        .stacks
        .iter()
        .filter(|s| s.kind == "trained")
        .collect();
    if !trained.is_empty() {
        let _ = writeln!(md, "## Trained stacks\n");
        let _ = writeln!(md, "| N | seed | held-out accuracy (training) | exact accuracy on the inputs | training s |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for s in trained {
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | {:.3} | {:.1} |",
                s.depth,
                s.seed,
                s.holdout_accuracy.unwrap_or(f64::NAN),
                s.exact_accuracy,
                s.train_seconds.unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "Total time: {:.0} s.", report.seconds);
    md
}

fn plot(
    out: &Path,
    name: &str,
    (title, x_label, y_label): (&str, &str, &str),
    series: Vec<Series>,
) -> rgshield::Result<()> {
    line_plot(
        &out.join(name),
        &LinePlot {
            title,
            x_label,
            y_label,
            // log10 of the values on a linear axis: the shared plot's log axis labels its ticks
            // with long decimals (0.09999999998) over ranges this wide.
            log_y: false,
            bars: Some("point: median over seeds of the per-stack median over inputs; bar: min to max over seeds"),
        },
        &series,
    )
}

fn curve(report: &Report, kind: &str, name: String, get: fn(&SummaryRow) -> &OverSeeds) -> Series {
    Series::with_points(
        name,
        report
            .summary
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| {
                let o = get(r);
                Point {
                    x: r.depth as f64,
                    y: o.median.log10(),
                    bar: Some((o.min.log10(), o.max.log10())),
                }
            })
            .collect(),
    )
}

const N_AXIS: &str = "depth N (number of RBMs)";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let start = Instant::now();
    std::fs::create_dir_all(&args.out)?;
    let digits = data::load(&DataSpec::Digits, &LoadOptions::default())?;
    let n_in = digits.n_features();
    let n_out = digits.n_classes();
    let n_x = args.inputs.min(digits.test.len());
    let xs: Vec<&[f32]> = (0..n_x)
        .map(|i| &digits.test.x[i * n_in..(i + 1) * n_in])
        .collect();
    let labels = &digits.test.y[..n_x];
    let mut kinds: Vec<String> = args
        .scales
        .iter()
        .map(|s| format!("random-{s:.1}"))
        .collect();
    let mut stacks = Vec::new();
    for (scale, kind) in args.scales.iter().zip(&kinds) {
        for seed in 1..=args.random_seeds {
            for depth in 1..=args.max_depth {
                let model = random_stack(n_in, args.width, n_out, depth, *scale, seed)?;
                let row = stack_row(kind, seed, &model, &xs, labels, None)?;
                eprintln!(
                    "{kind} seed {seed} N {depth}: F top {:.3e}, MF J s.v. {:.3e}, oracle diff {:.1e} ({:.1} s)",
                    med(&row.fisher_top),
                    med(&row.mf_jacobian_sv),
                    row.oracle_rel_diff,
                    row.seconds
                );
                stacks.push(row);
            }
        }
    }
    kinds.push("trained".into());
    let base = match &args.train_config {
        Some(p) => TrainParams::read(p).map_err(|e| format!("--train-config: {e}"))?,
        None => TrainParams::for_method(Method::Hybrid, 1),
    };
    for seed in 1..=args.train_seeds {
        let params = base.with_seed(seed).check()?;
        for depth in 1..=args.max_depth {
            let widths = stack_widths(n_in, args.width, depth, n_out);
            let (model, outcome) = Trainer::new(&digits, &params)?.train(&widths)?;
            let row = stack_row(
                "trained",
                seed,
                &model,
                &xs,
                labels,
                Some((outcome.holdout_accuracy, outcome.seconds)),
            )?;
            eprintln!(
                "trained seed {seed} N {depth}: held-out accuracy {:.3}, F top {:.3e}, MF J s.v. {:.3e}, oracle diff {:.1e} ({:.1} s + {:.1} s training)",
                outcome.holdout_accuracy,
                med(&row.fisher_top),
                med(&row.mf_jacobian_sv),
                row.oracle_rel_diff,
                row.seconds,
                outcome.seconds
            );
            stacks.push(row);
        }
    }
    let summary = summarise(&stacks);
    let command = format!(
        "cargo run --profile dev-opt --example exact_series -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let report = Report {
        command,
        inputs: format!("the first {n_x} rows of the digits test split"),
        settings: args,
        stacks,
        summary,
        seconds: start.elapsed().as_secs_f64(),
    };
    let out = report.settings.out.clone();
    std::fs::write(
        out.join("exact_series.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("exact_series.md"), markdown(&report, &kinds))?;
    let curves = |get: fn(&SummaryRow) -> &OverSeeds| -> Vec<Series> {
        kinds
            .iter()
            .map(|k| curve(&report, k, k.clone(), get))
            .collect()
    };
    plot(
        &out,
        "exact_fisher_top_vs_depth.png",
        (
            "Exact input Fisher information of the output, width-10 stacks",
            N_AXIS,
            "log10 top eigenvalue of F_x",
        ),
        curves(|r| &r.fisher_top),
    )?;
    plot(
        &out,
        "fisher_ratio_vs_depth.png",
        (
            "Exact F_x relative to the first-layer bound",
            N_AXIS,
            "log10 (top F_x / top first-layer bound)",
        ),
        curves(|r| &r.ratio),
    )?;
    let mut jac = curves(|r| &r.mf_jacobian_sv);
    for s in &mut jac {
        s.name = format!("{} mean field", s.name);
    }
    for k in &kinds {
        jac.push(curve(&report, k, format!("{k} exact served"), |r| {
            &r.served_jacobian_sv
        }));
    }
    plot(
        &out,
        "jacobian_sv_vs_depth.png",
        (
            "Top singular value of the Jacobian of the output w.r.t. x",
            N_AXIS,
            "log10 top singular value",
        ),
        jac,
    )?;
    // Within the deepest stacks: top F_k against k.
    let deepest = report.stacks.iter().map(|s| s.depth).max().unwrap_or(0);
    let within: Vec<Series> = kinds
        .iter()
        .map(|kind| {
            let points = (0..deepest)
                .map(|k| {
                    let o = over_seeds(&deepest_layer_medians(&report, kind, deepest, k));
                    Point {
                        x: (k + 1) as f64,
                        y: o.median.log10(),
                        bar: Some((o.min.log10(), o.max.log10())),
                    }
                })
                .collect();
            Series::with_points(kind.clone(), points)
        })
        .collect();
    let within_title = format!("Exact F_k at each layer k of the N = {deepest} stacks");
    plot(
        &out,
        "within_stack_fisher_top.png",
        (&within_title, "layer k", "log10 top eigenvalue of F_k"),
        within,
    )?;
    eprintln!("wrote {} ({:.0} s)", out.display(), report.seconds);
    Ok(())
}
