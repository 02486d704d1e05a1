//! `rgshield bench guard`: the extraction monitor's false alarms and detections, and the
//! watermark's p-values, on the embedded digits (issue 16 items 3 and 5).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::common::{emit, read_train_config};
use crate::cli::Global;
use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::experiments::guard_eval::{self, GuardEvalParams};
use rgshield::model::io as model_io;
use rgshield::train::{TrainParams, Trainer};
use rgshield::{Params, Valid};

/// Flags of `rgshield bench guard`.
#[derive(clap::Args)]
pub struct Args {
    /// Output directory (guard_eval.json, guard_eval.md, plots).
    #[arg(long)]
    out: PathBuf,
    /// Training configuration of the victim trained here and of the innocent RBM classifiers,
    /// from a JSON file as `rgshield train --print-defaults` prints it (default: the hybrid's
    /// defaults); pins them whatever the defaults become.
    #[arg(long)]
    train_config: Option<PathBuf>,
    /// The victim: a model directory trained on digits; default a 64-64-10 hybrid model trained
    /// here (30 fine-tuning epochs, no refinement, seed 1).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Attack seeds per strategy.
    #[arg(long, default_value_t = GuardEvalParams::default().seeds)]
    seeds: usize,
    /// Clone budgets.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000")]
    budgets: Vec<usize>,
    /// Watermark rates.
    #[arg(long, value_delimiter = ',', default_value = "0.005,0.05")]
    rates: Vec<f64>,
    /// δ grid of the monitor.
    #[arg(long, value_delimiter = ',', default_value = "0.8,0.85,0.9,0.95")]
    deltas: Vec<f64>,
    /// Benign clients.
    #[arg(long, default_value_t = GuardEvalParams::default().benign_clients)]
    benign: usize,
    /// Innocent models.
    #[arg(long, default_value_t = GuardEvalParams::default().innocent_models)]
    innocent: usize,
    /// Innocent RBM classifiers (other widths and seeds of the victim's family).
    #[arg(long, default_value_t = GuardEvalParams::default().innocent_rbms)]
    innocent_rbms: usize,
    /// Null draws of the label-free soft-bias test (0 skips it).
    #[arg(long, default_value_t = GuardEvalParams::default().soft_draws)]
    soft_draws: usize,
    /// Training epochs of each clone and innocent model.
    #[arg(long, default_value_t = GuardEvalParams::default().clone.epochs)]
    clone_epochs: usize,
}

impl TryFrom<&Args> for Valid<GuardEvalParams> {
    type Error = anyhow::Error;
    fn try_from(a: &Args) -> Result<Self> {
        let d = GuardEvalParams::default();
        Ok(GuardEvalParams {
            seeds: a.seeds,
            soft_draws: a.soft_draws,
            budgets: a.budgets.clone(),
            rates: a.rates.clone(),
            deltas: a.deltas.clone(),
            benign_clients: a.benign,
            innocent_models: a.innocent,
            innocent_rbms: a.innocent_rbms,
            clone: rgshield::model::mlp::MlpParams {
                epochs: a.clone_epochs,
                ..d.clone.clone()
            },
            rbm_training: match &a.train_config {
                Some(p) => {
                    let t = read_train_config(p)?;
                    if t.method != rgshield::train::Method::Hybrid {
                        anyhow::bail!(
                            "--train-config {}: method {}, but the guard's victim and innocent \
                             RBMs are hybrid models",
                            p.display(),
                            t.method
                        );
                    }
                    t
                }
                None => d.rbm_training.clone(),
            },
            ..d
        }
        .check()?)
    }
}

/// Run `rgshield bench guard`.
pub fn run(a: &Args, _g: &Global) -> Result<()> {
    let params = Valid::<GuardEvalParams>::try_from(a)?;
    let digits = data::load(&DataSpec::Digits, &LoadOptions::default())?;
    let victim = match &a.model {
        Some(dir) => model_io::load(dir)?.0,
        None => {
            let tp = TrainParams {
                seed: 1,
                finetune_epochs: 30,
                sweeps: 0,
                ..params.rbm_training.clone()
            }
            .check()?;
            Trainer::new(&digits, &tp)?
                .train(&[64, 64, 10])
                .context("training the victim")?
                .0
        }
    };
    let report = guard_eval::guard_eval(&digits, &victim, &params, &mut |m| eprintln!("{m}"))?;
    let md = guard_eval::markdown(&report);
    emit(
        &a.out,
        "guard_eval.json",
        &report,
        Some(("guard_eval.md", &md)),
        |dir| guard_eval::write_plots(&report, dir),
    )?;
    print!("{md}");
    Ok(())
}
