//! `rgshield verify`: replay the logged watermark queries against a suspect model and test
//! whether it learned the watermark (`rgshield::guard::watermark`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::common::{DataArgs, DefenceStoreArgs};
use rgshield::guard::store::Store;
use rgshield::guard::watermark::{soft_bias_test, verify_classes, Verification};
use rgshield::model::io as model_io;
use rgshield::sample::{OutputMode, Predictor};
use rgshield::serve::client::predict;
use rgshield::serve::to_probabilities;

/// Flags of `rgshield verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The state database of the server that served with --watermark (not needed with
    /// --soft-bias).
    #[arg(long, required_unless_present = "soft_bias")]
    state: Option<PathBuf>,
    /// Run the label-free test instead: does the suspect's soft output carry the keyed bias of
    /// the `random-fixed` defence served under the secret key (--key-file)? The suspect answers
    /// the test images of --data; p-value from --soft-draws null direction sets.
    #[arg(long)]
    soft_bias: bool,
    /// Null draws of the label-free test (its smallest p-value is 1/(1 + draws)).
    #[arg(long, default_value_t = 999)]
    soft_draws: usize,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    store: DefenceStoreArgs,
    /// A suspect model directory (model.json, model.safetensors); classes from its mean-field
    /// output.
    #[arg(
        long,
        conflicts_with = "suspect_url",
        required_unless_present = "suspect_url"
    )]
    suspect_model: Option<PathBuf>,
    /// A suspect prediction API (http://HOST:PORT, speaking rgshield's POST /v1/predict).
    #[arg(long)]
    suspect_url: Option<String>,
    /// API key for the suspect URL, when it asks for one.
    #[arg(long, requires = "suspect_url")]
    suspect_key: Option<String>,
    /// Inputs per request to the suspect URL.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Also write the result as JSON to this file (atomically).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The label-free test: the suspect's soft answers to the data set's test images.
fn run_soft(a: &Args) -> Result<()> {
    let d = a.data.load()?;
    let inputs: Vec<Vec<f32>> = (0..d.test.len()).map(|i| d.test.row(i).to_vec()).collect();
    let probs: Vec<Vec<f32>> = if let Some(dir) = &a.suspect_model {
        let (model, _) = model_io::load(dir)?;
        if model.n_inputs() != d.test.n_features {
            bail!(
                "--suspect-model {}: takes {} inputs, --data {} has {}",
                dir.display(),
                model.n_inputs(),
                d.name,
                d.test.n_features
            );
        }
        let p = Predictor::new(&model, OutputMode::MeanField);
        inputs
            .iter()
            .map(|x| to_probabilities(&p.output(x)))
            .collect()
    } else {
        let url = a.suspect_url.as_deref().unwrap_or_default();
        let (outputs, _) = predict(url, &inputs, a.batch, a.suspect_key.as_deref())?;
        outputs.iter().map(|y| to_probabilities(y)).collect()
    };
    let key = a.store.key()?;
    let t = soft_bias_test(&key, &probs, a.soft_draws)?;
    println!(
        "label-free test on {} test images: statistic {:.5} against the null's {:.5} ± {:.5} \
         (z = {:.2}); p-value {:.4} from {} null draws (H0: the suspect was not trained on \
         random-fixed answers under this key)",
        t.queries,
        t.statistic,
        t.null_mean,
        t.null_sd,
        (t.statistic - t.null_mean) / t.null_sd.max(1e-300),
        t.p_value,
        t.draws
    );
    if let Some(out) = &a.out {
        rgshield::util::write_json(out, &t)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// Run `rgshield verify`.
pub fn run(a: &Args) -> Result<()> {
    if a.soft_bias {
        return run_soft(a);
    }
    let state = a.state.as_ref().context("--state is needed")?;
    if !state.exists() {
        bail!("--state {}: no such database", state.display());
    }
    let store = Store::open(state)?;
    let k: usize = store
        .meta("n_classes")?
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{}: no model recorded in this state", state.display()))?;
    let records = store.watermarks()?;
    if records.is_empty() {
        bail!(
            "{}: no watermarked query is logged (was the server run with --watermark?)",
            state.display()
        );
    }
    let classes: Vec<usize> = if let Some(dir) = &a.suspect_model {
        let (model, _) = model_io::load(dir)?;
        if model.n_outputs() != k {
            bail!(
                "--suspect-model {}: {} classes, the watermarked model has {k}",
                dir.display(),
                model.n_outputs()
            );
        }
        if let Some((i, r)) = records
            .iter()
            .enumerate()
            .find(|(_, r)| r.input.len() != model.n_inputs())
        {
            bail!(
                "--suspect-model {}: takes {} inputs, watermark query {i} has {}",
                dir.display(),
                model.n_inputs(),
                r.input.len()
            );
        }
        let p = Predictor::new(&model, OutputMode::MeanField);
        let x: Vec<f32> = records
            .iter()
            .flat_map(|r| r.input.iter().copied())
            .collect();
        p.classes(&x, records.len())
    } else {
        let url = a.suspect_url.as_deref().unwrap_or_default();
        let inputs: Vec<Vec<f32>> = records.iter().map(|r| r.input.clone()).collect();
        predict(url, &inputs, a.batch, a.suspect_key.as_deref())?.1
    };
    let v = verify_classes(&records, &classes, k)?;
    print(&v);
    if let Some(out) = &a.out {
        rgshield::util::write_json(out, &v)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn print(v: &Verification) {
    println!(
        "{} watermarked queries replayed: the suspect gives the watermark's class on {} ({:.1}%); \
         it leaves the original class on {}, where an innocent model hits the watermark's class \
         with probability 1/(K-1) = {:.4}",
        v.queries,
        v.agree_target,
        100.0 * v.agreement,
        v.disagree_original,
        v.chance
    );
    println!(
        "p-value {:.3e} (exact binomial tail; H0: the suspect was not trained on the watermarked answers)",
        v.p_value
    );
}
