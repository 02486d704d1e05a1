//! `rgshield bench depth-study`: minimal adversarial norms, Fisher values and RG diagnostics
//! against depth (SPEC §10).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::analyze::check_analysis_memory;
use crate::cli::common::{
    check_samples, emit, prepare_out_dir, read_train_config, Bar, BasisArg, DataArgs, Depths,
    Inputs,
};
use crate::cli::train::check_train_memory;
use crate::cli::Global;
use rgshield::experiments::depth_study::{self, DepthStudyParams};
use rgshield::train::{Method, TrainParams};
use rgshield::{Params, Valid};

/// Flags of `rgshield bench depth-study`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Depths N, e.g. 1,2,3,4,5,6,7,8.
    #[arg(long, default_value_t = Depths(DepthStudyParams::default().depths))]
    depths: Depths,
    /// Hidden width.
    #[arg(long, default_value_t = DepthStudyParams::default().width)]
    width: usize,
    /// Training method (its documented defaults, as `rgshield train --method`).
    #[arg(long, default_value_t = DepthStudyParams::default().train.method)]
    method: Method,
    /// Training seeds: one model per depth and seed.
    #[arg(long, value_delimiter = ',', default_values_t = DepthStudyParams::default().seeds)]
    seeds: Vec<u64>,
    /// Models are saved to, and reused from, DIR/dN/sSEED (reused when model.json exists with
    /// matching widths and data set; a mismatched model is refused, never overwritten).
    #[arg(long, default_value_os_t = DepthStudyParams::default().models_dir)]
    models_dir: PathBuf,
    /// Candidate test-split inputs, in order: a range A..B or a comma list. The first
    /// --robust-inputs of those that every model serves correctly are attacked.
    #[arg(long, default_value_t = Inputs(DepthStudyParams::default().inputs))]
    inputs: Inputs,
    /// How many commonly correct candidates are attacked.
    #[arg(long, default_value_t = DepthStudyParams::default().robust_inputs)]
    robust_inputs: usize,
    /// How many of them get the full RG analysis on the first seed's models (0: none).
    #[arg(long, default_value_t = DepthStudyParams::default().analysis_inputs)]
    analysis_inputs: usize,
    /// Ancestral samples S of the Fisher estimates and the analysis.
    #[arg(long, default_value_t = DepthStudyParams::default().samples)]
    samples: usize,
    #[command(flatten)]
    basis: BasisArg,
    /// Jackknife blocks (standard errors and bias correction of the Fisher estimates).
    #[arg(long, default_value_t = DepthStudyParams::default().blocks)]
    blocks: usize,
    /// L2 budget ε of the fixed-budget success rates.
    #[arg(long, default_value_t = DepthStudyParams::default().attack_epsilon)]
    attack_epsilon: f64,
    /// Samples S of the served output that selects the inputs and judges every attack.
    #[arg(long, default_value_t = DepthStudyParams::default().judge_samples)]
    judge_samples: usize,
    /// PGD steps K.
    #[arg(long, default_value_t = DepthStudyParams::default().pgd_steps)]
    pgd_steps: usize,
    /// Width of the final bisection bracket of the minimal norms (L2 units).
    #[arg(long, default_value_t = DepthStudyParams::default().bisection_tol)]
    bisection_tol: f64,
    /// Depths at which the top Fisher eigenvalue's convergence in S is measured (first seed;
    /// depths not studied are skipped).
    #[arg(long, value_delimiter = ',', default_values_t = DepthStudyParams::default().convergence_depths)]
    convergence_depths: Vec<usize>,
    /// Sample sizes of the convergence check.
    #[arg(long, value_delimiter = ',', default_values_t = DepthStudyParams::default().convergence_samples)]
    convergence_samples: Vec<usize>,
    /// Inputs (the first attacked ones) of the convergence check (0: no check).
    #[arg(long, default_value_t = DepthStudyParams::default().convergence_inputs)]
    convergence_inputs: usize,
    /// Training parameters from a JSON file, as `rgshield train --print-defaults` prints them
    /// (every field; the seed is replaced by each of --seeds): pins the models' configuration
    /// whatever the defaults become.
    #[arg(long, conflicts_with_all = ["method", "finetune_epochs", "sweeps", "pretrain_epochs"])]
    train_config: Option<PathBuf>,
    /// Training: override the hybrid's fine-tuning epochs (a short run for tests).
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Training: override the maximum eq. 14 sweeps.
    #[arg(long)]
    sweeps: Option<usize>,
    /// Training: override the greedy pretraining epochs.
    #[arg(long)]
    pretrain_epochs: Option<usize>,
    /// Instead of running: read a kept depth_study.json, recompute its per-depth summaries and
    /// trends from its per-input records, and write depth_study.json, summary.md and the plots
    /// into --out (default: the file's folder).
    #[arg(long)]
    from_json: Option<PathBuf>,
    /// Output directory for depth_study.json, summary.md, the plots and rg/dN/analysis.json
    /// (default: --models-dir).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl TryFrom<&Args> for Valid<DepthStudyParams> {
    type Error = anyhow::Error;
    fn try_from(a: &Args) -> Result<Self> {
        let mut train = match &a.train_config {
            Some(p) => read_train_config(p)?,
            None => TrainParams::for_method(a.method, a.seeds.first().copied().unwrap_or(1)),
        };
        if let Some(v) = a.finetune_epochs {
            train.finetune_epochs = v;
        }
        if let Some(v) = a.sweeps {
            train.sweeps = v;
        }
        if let Some(v) = a.pretrain_epochs {
            train.pretrain_epochs = v;
        }
        Ok(DepthStudyParams {
            depths: a.depths.0.clone(),
            width: a.width,
            seeds: a.seeds.clone(),
            models_dir: a.models_dir.clone(),
            train,
            inputs: a.inputs.0.clone(),
            robust_inputs: a.robust_inputs,
            analysis_inputs: a.analysis_inputs,
            samples: a.samples,
            basis: a.basis.basis,
            blocks: a.blocks,
            attack_epsilon: a.attack_epsilon,
            judge_samples: a.judge_samples,
            pgd_steps: a.pgd_steps,
            bisection_tol: a.bisection_tol,
            convergence_depths: a.convergence_depths.clone(),
            convergence_samples: a.convergence_samples.clone(),
            convergence_inputs: a.convergence_inputs,
            ..DepthStudyParams::default()
        }
        .check()?)
    }
}

/// Run `rgshield bench depth-study` (or, with --from-json, summarise a kept run again).
pub fn run(a: &Args, g: &Global) -> Result<()> {
    let (report, out) = match &a.from_json {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--from-json {}", file.display()))?;
            let kept: depth_study::DepthStudyReport =
                serde_json::from_str(&text).with_context(|| {
                    format!("--from-json {}: not a depth_study.json", file.display())
                })?;
            let out = a.out.clone().unwrap_or_else(|| {
                file.parent()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| PathBuf::from("."))
            });
            (depth_study::resummarise(kept), out)
        }
        None => study(a, g)?,
    };
    let md = depth_study::summary_markdown(&report);
    println!("\n{md}");
    emit(
        &out,
        "depth_study.json",
        &report,
        Some(("summary.md", &md)),
        |dir| depth_study::write_plots(&report, dir),
    )?;
    if a.from_json.is_none() {
        println!("depth study took {:.1} s", report.seconds);
    }
    Ok(())
}

/// Train, attack and analyse: the study itself, and the folder its report goes to.
fn study(a: &Args, g: &Global) -> Result<(depth_study::DepthStudyReport, PathBuf)> {
    check_samples("bench depth-study: --samples", a.samples)?;
    check_samples("bench depth-study: --judge-samples", a.judge_samples)?;
    let params: Valid<DepthStudyParams> = a.try_into()?;
    let out = a.out.clone().unwrap_or_else(|| a.models_dir.clone());
    prepare_out_dir(&out).context("--out")?;
    prepare_out_dir(&a.models_dir).context("--models-dir")?;
    let data = a.data.load()?;
    let largest_s = params
        .convergence_samples
        .iter()
        .copied()
        .chain([params.samples])
        .max()
        .unwrap_or(params.samples);
    for &n in &params.depths {
        let widths = params.widths(&data, n);
        check_train_memory(g, &widths, &params.train, &data)?;
        check_analysis_memory(
            g,
            "bench depth-study",
            &widths,
            largest_s,
            params.robust_inputs,
        )?;
    }
    let report = depth_study::depth_study(&data, &params, Some(&out), &Bar::new(), |m| {
        println!("{}", depth_study::model_line(m))
    })?;
    Ok((report, out))
}
