//! `rgshield attack`: adversarial attacks along Fisher directions beside gradient baselines.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::analyze::check_analysis_memory;
use super::common::{check_samples, emit, prepare_out_dir, Bar, BasisArg, DataArgs, Inputs};
use super::Global;
use rgshield::data::Dataset;
use rgshield::experiments::attack::{self, AttackParams, AttackReport};
use rgshield::model::io as model_io;
use rgshield::report::stats::Quartiles;
use rgshield::{DeepRbm, Params, Valid};

/// Flags of `rgshield attack`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Test-split inputs to attack: a range A..B or a comma list.
    #[arg(long, default_value_t = Inputs(AttackParams::default().inputs))]
    inputs: Inputs,
    /// L2 budgets ε of the continuous methods, comma-separated (the actual norm after clipping to
    /// [0,1]).
    #[arg(long, value_delimiter = ',', default_values_t = AttackParams::default().epsilons)]
    epsilons: Vec<f64>,
    /// Pixel budgets k of the binary (flip) methods, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = AttackParams::default().pixels)]
    pixels: Vec<usize>,
    /// Ancestral samples S of the input-Fisher estimate.
    #[arg(long, default_value_t = AttackParams::default().samples)]
    samples: usize,
    #[command(flatten)]
    basis: BasisArg,
    /// Samples S of the served output that judges success.
    #[arg(long, default_value_t = AttackParams::default().serve_samples)]
    serve_samples: usize,
    /// PGD steps K (step size 2.5ε/K).
    #[arg(long, default_value_t = AttackParams::default().pgd_steps)]
    pgd_steps: usize,
    /// The ε at which the vulnerability summary quotes success rates.
    #[arg(long, default_value_t = AttackParams::default().reference_epsilon)]
    reference_epsilon: f64,
    /// Seed of the Fisher sampler, the served output and the random baselines.
    #[arg(long, default_value_t = AttackParams::default().seed)]
    seed: u64,
    /// Output directory (default: MODEL/attack).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl TryFrom<&Args> for Valid<AttackParams> {
    type Error = anyhow::Error;
    fn try_from(a: &Args) -> Result<Self> {
        Ok(AttackParams {
            inputs: a.inputs.0.clone(),
            epsilons: a.epsilons.clone(),
            pixels: a.pixels.clone(),
            samples: a.samples,
            basis: a.basis.basis,
            serve_samples: a.serve_samples,
            seed: a.seed,
            pgd_steps: a.pgd_steps,
            reference_epsilon: a.reference_epsilon,
            ..AttackParams::default()
        }
        .check()?)
    }
}

/// Attack `model` and write `attack.json` and the plots into `out`.
pub fn run_in(
    model: &DeepRbm,
    data: &Dataset,
    params: &Valid<AttackParams>,
    out: &Path,
) -> Result<AttackReport> {
    prepare_out_dir(out)?;
    let report = attack::attack(model, data, params, &Bar::new())?;
    emit(out, "attack.json", &report, None, |dir| {
        attack::write_plots(&report, dir, data.image_shape, &data.class_names)
    })?;
    Ok(report)
}

/// Run `rgshield attack`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    check_samples("attack: --samples", a.samples)?;
    check_samples("attack: --serve-samples", a.serve_samples)?;
    let params: Valid<AttackParams> = a.try_into()?;
    if let Some(out) = &a.out {
        prepare_out_dir(out).context("--out")?;
    }
    let (model, _meta) = model_io::load(&a.model)?;
    // The default output directory is inside the model's: checked once the model is found.
    let out = a.out.clone().unwrap_or_else(|| a.model.join("attack"));
    prepare_out_dir(&out).context("--out")?;
    check_analysis_memory(g, "attack", &model.widths(), a.samples, a.inputs.0.len())?;
    let data = a.data.load()?;
    let report = run_in(&model, &data, &params, &out)?;
    println!(
        "attacked {} of {} inputs of {} (served correctly at ε = 0) with model {:?} in {:.1} s; operators per layer {:?}",
        report.n_correct,
        report.n_inputs,
        data.name,
        report.widths,
        report.seconds,
        report.operators
    );
    println!("success rate (mean actual L2 norm):\n");
    print!("{}", attack::table(&report));
    let v = &report.vulnerability;
    let q = |x: &Quartiles| {
        format!(
            "{:.3} [{:.3}, {:.3}]",
            x.median.unwrap_or(f64::NAN),
            x.q1.unwrap_or(f64::NAN),
            x.q3.unwrap_or(f64::NAN)
        )
    };
    println!(
        "top input-Fisher eigenvalue, median [quartiles]: direct {}, mean-field {}, bound {}; ratio to bound: direct {}, mean-field {}",
        q(&v.fisher_top_direct),
        q(&v.fisher_top_mean_field),
        q(&v.fisher_top_bound),
        q(&v.ratio_direct),
        q(&v.ratio_mean_field)
    );
    Ok(())
}
