//! Models trained once and kept on disk for the experiments that reuse them (the depth study's
//! models, the clone protocol's victims).
//!
//! A kept model directory records its widths, the data set's fingerprint and the training
//! configuration (`model.json`). [`kept_model`] reuses it only when all three are the ones asked
//! for, and otherwise refuses with an error that names the file, what differs and what to do;
//! [`train_and_keep`] trains and writes such a directory (atomically, with `train_report.json`).

use std::path::Path;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::io::{self as model_io, ModelMeta};
use crate::model::DeepRbm;
use crate::params::Valid;
use crate::progress::Progress;

use super::{TrainOutcome, TrainParams, Trainer};

/// What [`kept_model`] does with a model that records neither its data set nor its training (one
/// written before rgshield recorded them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrecorded {
    /// Refuse it.
    Refuse,
    /// Reuse it on its widths: the caller vouches for the directory by other means (the clone
    /// protocol's runner refuses a directory whose `protocol.json` is not its protocol's).
    ReuseOnWidths,
}

/// `dir`'s kept model if its `model.json` exists and matches `widths`, `data` and `train`;
/// `Ok(None)` when there is none; an error naming the file when it does not match. `remedy` ends
/// each refusal (e.g. "remove DIR or choose another --models-dir").
pub fn kept_model(
    dir: &Path,
    widths: &[usize],
    data: &Dataset,
    train: &TrainParams,
    remedy: &str,
    unrecorded: Unrecorded,
) -> Result<Option<(DeepRbm, ModelMeta)>> {
    let meta_file = dir.join(model_io::META_FILE);
    if !meta_file.exists() {
        return Ok(None);
    }
    let (model, meta) = model_io::load(dir)?;
    if model.widths() != widths {
        return Err(Error::model(
            &meta_file,
            format!(
                "existing model has widths {:?} but {widths:?} are needed here: refusing to \
                 overwrite it — {remedy}",
                model.widths()
            ),
        ));
    }
    if meta.dataset.is_none() && meta.training.is_none() && unrecorded == Unrecorded::ReuseOnWidths
    {
        return Ok(Some((model, meta)));
    }
    match &meta.dataset {
        Some(d) if d.fingerprint != data.fingerprint => {
            return Err(Error::model(
                &meta_file,
                format!(
                    "existing model was trained on data set '{}' (fingerprint {}), this run uses \
                     '{}' (fingerprint {}): refusing to reuse it — {remedy}",
                    d.name, d.fingerprint, data.name, data.fingerprint
                ),
            ))
        }
        Some(_) => {}
        None => {
            return Err(Error::model(
                &meta_file,
                format!("existing model records no data set: refusing to reuse it — {remedy}"),
            ))
        }
    }
    let recorded = meta
        .training
        .as_ref()
        .and_then(|t| serde_json::from_value::<TrainParams>(t.clone()).ok());
    if recorded.as_ref() != Some(train) {
        return Err(Error::model(
            &meta_file,
            format!(
                "existing model was trained with another configuration than this run's (seed \
                 {}): refusing to reuse it — {remedy}",
                train.seed
            ),
        ));
    }
    Ok(Some((model, meta)))
}

/// Train a model of `widths` on `data` by `train` and keep it in `dir` with its data set, its
/// training configuration and `train_report.json` (the [`TrainOutcome`]), as [`kept_model`]
/// reads it back.
pub fn train_and_keep(
    dir: &Path,
    data: &Dataset,
    widths: &[usize],
    train: &Valid<TrainParams>,
    progress: &dyn Progress,
) -> Result<(DeepRbm, ModelMeta, TrainOutcome)> {
    let (model, outcome) = Trainer::new(data, train)?
        .with_progress(progress)
        .train(widths)?;
    let mut meta = ModelMeta::new(&model, data.class_names.clone());
    meta.dataset = Some(data.info());
    meta.training = Some(
        serde_json::to_value(&**train)
            .map_err(|e| Error::invalid(format!("cannot serialise the training config: {e}")))?,
    );
    let report = serde_json::to_vec_pretty(&outcome)
        .map_err(|e| Error::invalid(format!("cannot serialise the training report: {e}")))?;
    model_io::save_with_files(
        dir,
        &model,
        &meta,
        &[("train_report.json", report.as_slice())],
    )?;
    Ok((model, meta, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, DataSpec, LoadOptions};
    use crate::params::Params;
    use crate::progress::NoProgress;
    use crate::train::Method;

    /// A kept model is reused by the same request and refused, by name, for other widths, another
    /// data set, another configuration, or a record without its data set.
    #[test]
    fn kept_models_are_reused_only_for_the_request_that_made_them() {
        let opts = LoadOptions {
            max_train: Some(120),
            max_test: Some(20),
            ..LoadOptions::default()
        };
        let data = load(&DataSpec::Digits, &opts).unwrap();
        let train = TrainParams {
            finetune_epochs: 2,
            sweeps: 1,
            eval_samples: 4,
            ..TrainParams::for_method(Method::Hybrid, 5)
        }
        .check()
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let widths = [64, 8, 10];
        let remedy = "remove it";
        let refuse = Unrecorded::Refuse;
        assert!(kept_model(&dir, &widths, &data, &train, remedy, refuse)
            .unwrap()
            .is_none());
        let (model, _, outcome) =
            train_and_keep(&dir, &data, &widths, &train, &NoProgress).unwrap();
        assert!(dir.join("train_report.json").exists());
        assert!(!outcome.history.is_empty());
        let (again, _) = kept_model(&dir, &widths, &data, &train, remedy, refuse)
            .unwrap()
            .unwrap();
        assert_eq!(again.fingerprint(), model.fingerprint());
        let refusal = |widths: &[usize], data: &Dataset, train: &TrainParams| {
            kept_model(&dir, widths, data, train, remedy, refuse)
                .err()
                .unwrap()
                .to_string()
        };
        let e = refusal(&[64, 9, 10], &data, &train);
        assert!(
            e.contains("widths") && e.contains("model.json") && e.contains(remedy),
            "{e}"
        );
        let other = load(
            &DataSpec::Digits,
            &LoadOptions {
                max_train: Some(100),
                ..opts.clone()
            },
        )
        .unwrap();
        let e = refusal(&widths, &other, &train);
        assert!(e.contains("fingerprint"), "{e}");
        let e = refusal(&widths, &data, &train.with_seed(6));
        assert!(
            e.contains("another configuration") && e.contains("seed 6"),
            "{e}"
        );
        // a record without its data set is not trusted ...
        let (m, mut meta) = model_io::load(&dir).unwrap();
        meta.dataset = None;
        model_io::save(&dir, &m, &meta).unwrap();
        let e = refusal(&widths, &data, &train);
        assert!(e.contains("records no data set"), "{e}");
        // ... and one recording neither (written before rgshield recorded them) is reused on its
        // widths only where the caller vouches for the directory
        meta.training = None;
        model_io::save(&dir, &m, &meta).unwrap();
        assert!(refusal(&widths, &data, &train).contains("records no data set"));
        let reuse = Unrecorded::ReuseOnWidths;
        let (legacy, _) = kept_model(&dir, &widths, &data, &train.with_seed(6), remedy, reuse)
            .unwrap()
            .unwrap();
        assert_eq!(legacy.fingerprint(), model.fingerprint());
        let e = kept_model(&dir, &[64, 9, 10], &data, &train, remedy, reuse)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("widths"), "{e}");
    }
}
