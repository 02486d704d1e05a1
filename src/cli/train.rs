//! `rgshield train`: train a classifier, save it, write its training report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::common::{
    check_memory, check_samples, prepare_model_dir, threads, widths_flag, Bar, DataArgs, TrainArgs,
};
use super::Global;
use rgshield::data::Dataset;
use rgshield::model::io::{self as model_io, ModelMeta};
use rgshield::model::parse_widths;
use rgshield::sample::{OutputMode, Predictor};
use rgshield::train::{check_widths_fit, TrainParams, Trainer};
use rgshield::Valid;

/// Flags of `rgshield train`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Layer widths n_0,…,n_N (first = input size, last = number of classes); default
    /// INPUT,64,64,CLASSES.
    #[arg(long)]
    widths: Option<String>,
    #[command(flatten)]
    train: TrainArgs,
    /// Samples S of the served output for the reported accuracies.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Output directory (model.safetensors, model.json, train_report.json).
    #[arg(long, required_unless_present = "print_defaults")]
    out: Option<PathBuf>,
    /// Print the training parameters these flags give (the method's defaults with the flags
    /// applied) as JSON and exit.
    #[arg(long)]
    print_defaults: bool,
}

/// The training report's file name in a model directory.
pub const REPORT_FILE: &str = "train_report.json";

/// The default widths on a data set: `[n_features, 64, 64, n_classes]`.
pub fn default_widths(data: &Dataset) -> Vec<usize> {
    vec![data.n_features(), 64, 64, data.n_classes()]
}

/// What [`train_and_save`] measured.
pub struct Trained {
    /// The report written to `train_report.json`.
    pub report: serde_json::Value,
    /// Test accuracy of the served output.
    pub test_accuracy: f64,
    /// Test accuracy of the mean-field output.
    pub test_accuracy_mean_field: f64,
    /// Training and evaluation time.
    pub seconds: f64,
}

/// Train, evaluate (served output with `samples` samples, seed 0, and mean field), and write the
/// model directory `out` as a whole: the model and `train_report.json` (an existing model
/// directory is replaced).
pub fn train_and_save(
    data: &Dataset,
    widths: &[usize],
    params: &Valid<TrainParams>,
    samples: usize,
    out: &Path,
) -> Result<Trained> {
    check_widths_fit(widths, data)?;
    prepare_model_dir(out)?;
    let t0 = Instant::now();
    let bar = Bar::new();
    let (model, outcome) = Trainer::new(data, params)?
        .with_progress(&bar)
        .train(widths)?;
    let predictor = Predictor::new(&model, OutputMode::Served { samples, seed: 0 });
    let test_accuracy = predictor.accuracy(&data.test);
    let train_accuracy = predictor.accuracy(&data.train);
    let mf = Predictor::new(&model, OutputMode::MeanField);
    let test_accuracy_mean_field = mf.accuracy(&data.test);
    let seconds = t0.elapsed().as_secs_f64();
    let mut meta = ModelMeta::new(&model, data.class_names.clone());
    meta.dataset = Some(data.info());
    meta.training = Some(serde_json::to_value(params)?);
    meta.metrics.insert("test_accuracy".into(), test_accuracy);
    meta.metrics.insert("train_accuracy".into(), train_accuracy);
    meta.metrics
        .insert("test_accuracy_mean_field".into(), test_accuracy_mean_field);
    meta.metrics.insert("served_samples".into(), samples as f64);
    let report = json!({
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "test_accuracy_mean_field": test_accuracy_mean_field,
        "holdout_accuracy": outcome.holdout_accuracy,
        "served_output": {"samples": samples, "seed": 0},
        "widths": widths,
        "method": params.method,
        "stages": outcome.stages,
        "history": outcome.history,
        "seconds": seconds,
        "dataset": data.info(),
        "config": params,
    });
    let mut report_text = serde_json::to_string_pretty(&report)?;
    report_text.push('\n');
    // The model and its report, written as one directory: never a new model beside an old
    // report, nor new weights beside old metadata.
    model_io::save_with_files(out, &model, &meta, &[(REPORT_FILE, report_text.as_bytes())])?;
    Ok(Trained {
        report,
        test_accuracy,
        test_accuracy_mean_field,
        seconds,
    })
}

/// Refuse training `widths` on `data` when its estimated memory
/// ([`rgshield::train::estimated_bytes`]) exceeds the budget.
pub fn check_train_memory(
    g: &Global,
    widths: &[usize],
    params: &TrainParams,
    data: &Dataset,
) -> Result<()> {
    let need = rgshield::train::estimated_bytes(widths, params, data.train.len(), threads());
    check_memory(
        g,
        &format!(
            "training {} on {} rows",
            widths_flag(widths),
            data.train.len()
        ),
        need,
    )
}

/// Run `rgshield train`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    let params: Valid<TrainParams> = (&a.train).try_into()?;
    if a.print_defaults {
        println!("{}", serde_json::to_string_pretty(&params)?);
        return Ok(());
    }
    check_samples("train: --samples", a.samples)?;
    let out = a
        .out
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--out is required"))?;
    prepare_model_dir(out).context("--out")?;
    let data = a.data.load()?;
    let widths = match &a.widths {
        Some(w) => parse_widths(w)?,
        None => default_widths(&data),
    };
    check_widths_fit(&widths, &data)?;
    check_train_memory(g, &widths, &params, &data)?;
    let t = train_and_save(&data, &widths, &params, a.samples, out)?;
    println!(
        "trained {:?} on {} ({} train / {} test) by {:?} in {:.1} s",
        widths,
        data.name,
        data.train.len(),
        data.test.len(),
        params.method,
        t.seconds
    );
    println!(
        "test accuracy {:.4} (served, S = {}), train accuracy {:.4}; wrote {}",
        t.test_accuracy,
        a.samples,
        t.report["train_accuracy"].as_f64().unwrap_or(f64::NAN),
        out.display()
    );
    Ok(())
}
