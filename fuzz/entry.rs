//! The fuzzed entry points, one function per target. Shared, through `#[path]`, by the fuzz
//! targets (`fuzz_targets/*.rs`, libFuzzer) and by the stable corpus test `tests/fuzz_corpus.rs`,
//! so CI replays every corpus file through exactly the code that was fuzzed.
//!
//! Each function takes arbitrary bytes, must not panic, and asserts what must hold of every
//! accepted input (an error is always a fine answer).

use std::path::Path;

use rgshield::data::{csv_file, idx, Binarize, LoadOptions};
use rgshield::model::io;
use rgshield::serve;

/// Separates `model.json`'s bytes from `model.safetensors`' in a `model_load` input (JSON text
/// has no NUL byte, so the first occurrence is the separator).
pub const MODEL_SEPARATOR: &[u8] = b"\0SAFETENSORS\0";

/// A fuzz target's entry point.
pub type Entry = fn(&[u8]);

/// The fuzz targets: name (the folder under `fuzz/corpus/`) and entry point.
pub const TARGETS: &[(&str, Entry)] = &[
    ("model_load", model_load),
    ("csv", csv),
    ("idx", idx_files),
    ("predict_request", predict_request),
];

/// `model::io::load_from_bytes` on `meta ++ MODEL_SEPARATOR ++ weights`; an accepted model
/// round-trips through the writer bit for bit.
pub fn model_load(data: &[u8]) {
    let (meta, weights) = match data
        .windows(MODEL_SEPARATOR.len())
        .position(|w| w == MODEL_SEPARATOR)
    {
        Some(i) => (&data[..i], &data[i + MODEL_SEPARATOR.len()..]),
        None => (data, &[][..]),
    };
    let dir = Path::new("fuzz-model");
    if let Ok((model, meta)) = io::load_from_bytes(meta, weights, dir) {
        assert_eq!(model.widths(), meta.widths);
        assert_eq!(meta.class_names.len(), model.n_outputs());
        assert_eq!(meta.weights_fingerprint, model.fingerprint_hex());
        let bytes = io::weights_to_bytes(&model).expect("an accepted model serialises");
        let json = serde_json::to_vec(&meta).expect("accepted metadata serialises");
        let (again, _) = io::load_from_bytes(&json, &bytes, dir).expect("a written model loads");
        assert_eq!(again, model);
    }
}

/// `csv_file::from_bytes` with the binarisation chosen by the first byte; an accepted table has
/// values in [0, 1] and labels below the class count.
pub fn csv(data: &[u8]) {
    let Some((&mode, text)) = data.split_first() else {
        return;
    };
    let binarize = match mode % 3 {
        0 => Binarize::Default,
        1 => Binarize::Off,
        _ => Binarize::Threshold(0.5),
    };
    let opts = LoadOptions {
        binarize,
        ..LoadOptions::default()
    };
    if let Ok(d) = csv_file::from_bytes(text, Path::new("fuzz.csv"), &opts) {
        for split in [&d.train, &d.test] {
            assert_eq!(split.x.len(), split.len() * d.n_features());
            assert!(split.x.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(split.y.iter().all(|&y| (y as usize) < d.n_classes()));
        }
    }
}

/// `idx::images_from_bytes` and `idx::labels_from_bytes` (raw or gzipped) on the same bytes;
/// accepted images hold exactly n·rows·cols pixels, accepted labels are below 10.
pub fn idx_files(data: &[u8]) {
    let path = Path::new("fuzz-idx");
    if let Ok(im) = idx::images_from_bytes(data.to_vec(), path) {
        assert_eq!(im.pixels.len(), im.n * im.rows * im.cols);
    }
    if let Ok(labels) = idx::labels_from_bytes(data.to_vec(), path, 10) {
        assert!(!labels.is_empty() && labels.iter().all(|&y| y < 10));
    }
}

/// `serve::parse_predict_request` then `serve::validate_inputs` against a model of 1–8 inputs
/// (the first byte) and a batch limit of 4; an accepted batch is flattened row-major, every value
/// in [0, 1].
pub fn predict_request(data: &[u8]) {
    let Some((&n, body)) = data.split_first() else {
        return;
    };
    let n_inputs = 1 + usize::from(n % 8);
    let Ok(req) = serve::parse_predict_request(body) else {
        return;
    };
    if let Ok(flat) = serve::validate_inputs(&req.inputs, n_inputs, 4) {
        assert!(!req.inputs.is_empty() && req.inputs.len() <= 4);
        assert_eq!(flat.len(), req.inputs.len() * n_inputs);
        assert!(flat.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
