//! `rgshield analyze`: the RG analysis of a model (SPEC §4–7).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::common::{
    check_memory, check_samples, emit, prepare_out_dir, threads, widths_flag, Bar, BasisArg,
    DataArgs, Inputs,
};
use super::Global;
use rgshield::data::Dataset;
use rgshield::experiments::analyze::{self, AnalysisReport, AnalyzeParams};
use rgshield::model::io as model_io;
use rgshield::report::stats::median;
use rgshield::{DeepRbm, Params, Valid};

/// Flags of `rgshield analyze`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Test-split inputs to analyse: a range A..B or a comma list.
    #[arg(long, default_value_t = Inputs(AnalyzeParams::default().inputs))]
    inputs: Inputs,
    /// Ancestral samples S per input and per class.
    #[arg(long, default_value_t = AnalyzeParams::default().samples)]
    samples: usize,
    #[command(flatten)]
    basis: BasisArg,
    /// Jackknife blocks for the error bars.
    #[arg(long, default_value_t = AnalyzeParams::default().blocks)]
    blocks: usize,
    /// Seed of the samplers.
    #[arg(long, default_value_t = AnalyzeParams::default().seed)]
    seed: u64,
    /// Output directory (default: MODEL/analysis).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl TryFrom<&Args> for Valid<AnalyzeParams> {
    type Error = anyhow::Error;
    fn try_from(a: &Args) -> Result<Self> {
        Ok(AnalyzeParams {
            inputs: a.inputs.0.clone(),
            samples: a.samples,
            seed: a.seed,
            basis: a.basis.basis,
            blocks: a.blocks,
            ..AnalyzeParams::default()
        }
        .check()?)
    }
}

/// Analyse `model` and write `analysis.json` and the plots into `out`.
pub fn run_in(
    model: &DeepRbm,
    data: &Dataset,
    params: &Valid<AnalyzeParams>,
    out: &Path,
) -> Result<(AnalysisReport, Vec<PathBuf>)> {
    prepare_out_dir(out)?;
    let report = analyze::analyze(model, data, params, &Bar::new())?;
    let plots = emit(out, "analysis.json", &report, None, |dir| {
        analyze::write_plots(&report, dir, data.image_shape)
    })?;
    Ok((report, plots))
}

/// Refuse an RG analysis (or attack) of a model of `widths` with `samples` ancestral samples on
/// `inputs` inputs when the estimate — the model, and the samples of one flow
/// ([`rgshield::rg::stability::flow_sample_bytes`]) per thread at work — exceeds the budget. The
/// correlator moments are checked against their own budget when their bases are known.
pub fn check_analysis_memory(
    g: &Global,
    command: &str,
    widths: &[usize],
    samples: usize,
    inputs: usize,
) -> Result<()> {
    let at_once = threads().min(inputs.max(1)) as u64;
    let need = rgshield::rg::stability::flow_sample_bytes(widths, samples)
        .and_then(|b| b.checked_mul(at_once))
        .and_then(|b| b.checked_add(rgshield::model::estimated_bytes(widths)?));
    check_memory(
        g,
        &format!(
            "{command}: --samples {samples} ({at_once} inputs at once) with {}",
            widths_flag(widths)
        ),
        need,
    )
}

/// Run `rgshield analyze`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    check_samples("analyze: --samples", a.samples)?;
    let params: Valid<AnalyzeParams> = a.try_into()?;
    if let Some(out) = &a.out {
        prepare_out_dir(out).context("--out")?;
    }
    let (model, _meta) = model_io::load(&a.model)?;
    // The default output directory is inside the model's: checked once the model is found.
    let out = a.out.clone().unwrap_or_else(|| a.model.join("analysis"));
    prepare_out_dir(&out).context("--out")?;
    check_analysis_memory(g, "analyze", &model.widths(), a.samples, a.inputs.0.len())?;
    let data = a.data.load()?;
    let (report, _) = run_in(&model, &data, &params, &out)?;
    let med = |f: &dyn Fn(&analyze::InputAnalysis) -> f64| {
        median(&report.inputs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    println!(
        "analysed {} inputs of {} with model {:?} in {:.1} s; operators per layer {:?}",
        report.inputs.len(),
        data.name,
        report.widths,
        report.seconds,
        report.classification_operators
    );
    println!(
        "median ratio of the top input-Fisher eigenvalue to the first-layer bound: chain {:.3}, direct {:.3}, mean-field {:.3}",
        med(&|i| i.fisher.ratio_chain),
        med(&|i| i.fisher.ratio_direct),
        med(&|i| i.fisher.ratio_mean_field)
    );
    let warned = report
        .inputs
        .iter()
        .filter(|i| !i.warnings.is_empty())
        .count();
    if warned > 0 {
        println!("{warned} inputs carry warnings (see analysis.json)");
    }
    Ok(())
}
