//! `rgshield eval`: a saved model's test accuracy.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde_json::json;

use super::common::{check_memory, check_samples, threads, widths_flag, DataArgs};
use super::Global;
use rgshield::model::io as model_io;
use rgshield::sample::{OutputMode, Predictor};

/// Flags of `rgshield eval`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory (holding model.json and model.safetensors).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Samples S of the served output.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Seed of the served output's sampler.
    #[arg(long, default_value_t = 0)]
    serve_seed: u64,
    /// Use the deterministic mean-field output instead of the served one.
    #[arg(long)]
    mean_field: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Run `rgshield eval`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    check_samples("eval: --samples", a.samples)?;
    let (model, meta) = model_io::load(&a.model)?;
    check_memory(
        g,
        &format!("evaluating {}", widths_flag(&model.widths())),
        rgshield::sample::estimated_bytes(&model.widths(), threads()),
    )?;
    let data = a.data.load()?;
    if model.n_inputs() != data.n_features() {
        bail!(
            "model {} takes {} inputs but data set '{}' has {} features",
            a.model.display(),
            model.n_inputs(),
            data.name,
            data.n_features()
        );
    }
    if model.n_outputs() != data.n_classes() {
        bail!(
            "model {} has {} outputs but data set '{}' has {} classes",
            a.model.display(),
            model.n_outputs(),
            data.name,
            data.n_classes()
        );
    }
    if let Some(d) = &meta.dataset {
        if d.fingerprint != data.fingerprint {
            eprintln!(
                "warning: the model was trained on data with fingerprint {} ({}), evaluating on {} ({})",
                d.fingerprint, d.name, data.fingerprint, data.name
            );
        }
    }
    let mode = if a.mean_field {
        OutputMode::MeanField
    } else {
        OutputMode::Served {
            samples: a.samples,
            seed: a.serve_seed,
        }
    };
    let test_accuracy = Predictor::new(&model, mode).accuracy(&data.test);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "test_accuracy": test_accuracy,
                "n_test": data.test.len(),
                "output": mode,
                "model": a.model,
                "widths": model.widths(),
                "dataset": data.name,
            }))?
        );
    } else {
        let how = match mode {
            OutputMode::MeanField => "mean-field output".to_string(),
            OutputMode::Served { samples, seed } => {
                format!("served output, S = {samples}, seed {seed}")
            }
        };
        println!(
            "{}: test accuracy {test_accuracy:.4} on {} ({} inputs, {how})",
            a.model.display(),
            data.name,
            data.test.len()
        );
    }
    Ok(())
}
