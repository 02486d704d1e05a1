//! `rgshield bench depth-study`: analysis and attack against depth (SPEC §10).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::analyze::check_analysis_memory;
use crate::cli::common::{
    check_samples, emit, prepare_out_dir, Bar, BasisArg, DataArgs, Depths, Inputs,
};
use crate::cli::train::check_train_memory;
use crate::cli::Global;
use rgshield::experiments::depth_study::{self, DepthStudyParams, ModelSource};
use rgshield::train::{Method, TrainParams};
use rgshield::{Params, Valid};

/// Flags of `rgshield bench depth-study`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Depths N, e.g. 1,2,3,4,5,6.
    #[arg(long, default_value_t = Depths(DepthStudyParams::default().depths))]
    depths: Depths,
    /// Hidden width.
    #[arg(long, default_value_t = DepthStudyParams::default().width)]
    width: usize,
    /// Training method (its documented defaults, as `rgshield train --method`).
    #[arg(long, default_value_t = DepthStudyParams::default().train.method)]
    method: Method,
    /// Training seed.
    #[arg(long, default_value_t = DepthStudyParams::default().train.seed)]
    seed: u64,
    /// Models are saved to, and reused from, DIR/dN (reused when model.json exists with matching
    /// widths; a mismatched model is refused, never overwritten).
    #[arg(long, default_value_os_t = DepthStudyParams::default().models_dir)]
    models_dir: PathBuf,
    /// Test-split inputs analysed and attacked: a range A..B or a comma list.
    #[arg(long, default_value_t = Inputs(DepthStudyParams::default().inputs))]
    inputs: Inputs,
    /// Ancestral samples S of the analysis and the attack's Fisher estimate.
    #[arg(long, default_value_t = DepthStudyParams::default().samples)]
    samples: usize,
    #[command(flatten)]
    basis: BasisArg,
    /// Jackknife blocks of the analysis.
    #[arg(long, default_value_t = DepthStudyParams::default().blocks)]
    blocks: usize,
    /// L2 budget ε of the attack success columns.
    #[arg(long, default_value_t = DepthStudyParams::default().attack_epsilon)]
    attack_epsilon: f64,
    /// Training: override the hybrid's fine-tuning epochs (a short run for tests).
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Training: override the maximum eq. 14 sweeps.
    #[arg(long)]
    sweeps: Option<usize>,
    /// Training: override the greedy pretraining epochs.
    #[arg(long)]
    pretrain_epochs: Option<usize>,
    /// Output directory for depth_study.json, the plots and dN/{analysis,attack}.json (default:
    /// --models-dir).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl TryFrom<&Args> for Valid<DepthStudyParams> {
    type Error = anyhow::Error;
    fn try_from(a: &Args) -> Result<Self> {
        let mut train = TrainParams::for_method(a.method, a.seed);
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
            models_dir: a.models_dir.clone(),
            train,
            inputs: a.inputs.0.clone(),
            samples: a.samples,
            basis: a.basis.basis,
            blocks: a.blocks,
            attack_epsilon: a.attack_epsilon,
            ..DepthStudyParams::default()
        }
        .check()?)
    }
}

/// Run `rgshield bench depth-study`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    check_samples("bench depth-study: --samples", a.samples)?;
    let params: Valid<DepthStudyParams> = a.try_into()?;
    let out = a.out.clone().unwrap_or_else(|| a.models_dir.clone());
    prepare_out_dir(&out).context("--out")?;
    prepare_out_dir(&a.models_dir).context("--models-dir")?;
    let data = a.data.load()?;
    for &n in &params.depths {
        let widths = params.widths(&data, n);
        check_train_memory(g, &widths, &params.train, &data)?;
        check_analysis_memory(
            g,
            "bench depth-study",
            &widths,
            params.samples,
            params.inputs.len(),
        )?;
    }
    println!("{}", depth_study::table_header(&data, &params));
    let report = depth_study::depth_study(&data, &params, Some(&out), &Bar::new(), |row| {
        println!("{}", depth_study::table_row(row))
    })?;
    for r in &report.rows {
        let how = match r.model_source {
            ModelSource::Trained => format!("trained and saved in {:.1} s", r.train_seconds),
            ModelSource::Reused => "reused (widths match)".to_string(),
        };
        println!(
            "N={}: model {} {how}, fingerprint {}",
            r.depth, r.model_dir, r.fingerprint
        );
    }
    emit(&out, "depth_study.json", &report, None, |dir| {
        depth_study::write_plots(&report, dir)
    })?;
    println!("depth study took {:.1} s", report.seconds);
    Ok(())
}
