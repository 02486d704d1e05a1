//! Model files: `model.safetensors` (f32 tensors `rbm{k}.W` `[n_k, n_{k-1}]`, `rbm{k}.a` `[n_k]`,
//! `rbm{k}.b` `[n_{k-1}]`, k = 1…N, readable by PyTorch and numpy) and `model.json` (widths, class
//! names, data set and fingerprint, training configuration, metrics, format version, and the
//! weights' fingerprint, which ties the two files together). A model directory is written as a
//! whole ([`save_with_files`]); loading validates shapes, finiteness and the agreement of the two
//! files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::{DeepRbm, Rbm};
use crate::data::DatasetInfo;
use crate::error::{Error, Result};
use crate::util::transaction::{recover_dir, DirTransaction};

/// `model.json`'s `format` field.
pub const FORMAT: &str = "rgshield-deep-rbm";
/// `model.json`'s `format_version` this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The weights' file name in a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The metadata's file name in a model directory.
pub const META_FILE: &str = "model.json";

/// Contents of `model.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// `n_0 … n_N`.
    pub widths: Vec<usize>,
    /// One name per output unit.
    pub class_names: Vec<String>,
    /// FNV-1a fingerprint of the weights (hex), checked against `model.safetensors` on load.
    pub weights_fingerprint: String,
    #[serde(default)]
    /// The data set the model was trained on.
    pub dataset: Option<DatasetInfo>,
    /// The training configuration (free-form JSON so older files stay readable).
    #[serde(default)]
    pub training: Option<serde_json::Value>,
    #[serde(default)]
    /// Measured numbers (test accuracy and the like).
    pub metrics: BTreeMap<String, f64>,
    /// `rgshield VERSION`.
    pub created_by: String,
}

impl ModelMeta {
    /// Metadata for `model` with the given class names and nothing else filled in.
    pub fn new(model: &DeepRbm, class_names: Vec<String>) -> Self {
        ModelMeta {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            widths: model.widths(),
            class_names,
            weights_fingerprint: format!("{:016x}", model.fingerprint()),
            dataset: None,
            training: None,
            metrics: BTreeMap::new(),
            created_by: format!("rgshield {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialise the weights to safetensors bytes.
pub fn weights_to_bytes(model: &DeepRbm) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, l) in model.layers.iter().enumerate() {
        let k = i + 1;
        owned.push((format!("rbm{k}.W"), vec![l.n_up, l.n_down], f32_bytes(&l.w)));
        owned.push((format!("rbm{k}.a"), vec![l.n_up], f32_bytes(&l.a)));
        owned.push((format!("rbm{k}.b"), vec![l.n_down], f32_bytes(&l.b)));
    }
    let views = owned
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), FORMAT.to_string());
    info.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    safetensors::tensor::serialize(views, Some(info))
        .map_err(|e| Error::invalid(format!("cannot serialise weights: {e}")))
}

/// Save the model as the directory `dir`: `model.safetensors` and `model.json`, written as a
/// whole ([`save_with_files`] without other files).
pub fn save(dir: &Path, model: &DeepRbm, meta: &ModelMeta) -> Result<()> {
    save_with_files(dir, model, meta, &[])
}

/// Write the model directory `dir` as a whole: `model.safetensors`, `model.json` and the `files`
/// given as (file name, contents), into a hidden sibling directory, synced, then moved into
/// place ([`DirTransaction`]: a crash at any moment leaves the old directory intact or the new
/// one complete, and [`load`] and the next write recover from it). An existing `dir` must be a
/// model directory (holding `model.json`) or empty, and is replaced with everything in it (the
/// analyses and poison caches of the old model included). `meta.widths` and
/// `meta.weights_fingerprint` are set from the model.
pub fn save_with_files(
    dir: &Path,
    model: &DeepRbm,
    meta: &ModelMeta,
    files: &[(&str, &[u8])],
) -> Result<()> {
    check_class_names(model, meta)?;
    let tx = DirTransaction::begin(dir, META_FILE)?;
    write_model(&tx, model, meta)?;
    for (name, bytes) in files {
        tx.write(name, bytes)?;
    }
    tx.commit()
}

fn check_class_names(model: &DeepRbm, meta: &ModelMeta) -> Result<()> {
    if meta.class_names.len() != model.n_outputs() {
        return Err(Error::shape(format!(
            "{} class names for {} output units",
            meta.class_names.len(),
            model.n_outputs()
        )));
    }
    Ok(())
}

/// Write `model.safetensors` and `model.json` into a directory transaction (for writers that add
/// files of their own before the commit; [`save_with_files`] is the usual way).
/// `meta.widths` and `meta.weights_fingerprint` are set from the model.
pub fn write_model(tx: &DirTransaction, model: &DeepRbm, meta: &ModelMeta) -> Result<()> {
    check_class_names(model, meta)?;
    let mut meta = meta.clone();
    meta.widths = model.widths();
    meta.weights_fingerprint = format!("{:016x}", model.fingerprint());
    tx.write(WEIGHTS_FILE, &weights_to_bytes(model)?)?;
    tx.crash_point("after-weights");
    tx.write_json(META_FILE, &meta)?;
    tx.crash_point("after-meta");
    Ok(())
}

/// Load and validate a model directory (or a path to its `model.json`).
///
/// A model directory missing because a write was interrupted between setting the old directory
/// aside and moving the new one in is restored first ([`recover_dir`]).
pub fn load(path: &Path) -> Result<(DeepRbm, ModelMeta)> {
    let names_meta = path.file_name().is_some_and(|n| n == META_FILE);
    let dir = if path.is_file() || (names_meta && !path.exists()) {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    } else {
        path
    };
    if !dir.exists() {
        recover_dir(dir)?;
    }
    let meta_path = dir.join(META_FILE);
    let text = std::fs::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
    // A malformed model.json is reported before a missing or unreadable weights file.
    parse_meta(&text, dir)?;
    let w_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&w_path).map_err(|e| Error::io(&w_path, e))?;
    load_from_bytes(&text, &bytes, dir)
}

/// Parse and validate a model from the bytes of its two files: `meta_json` (the contents of
/// `model.json`) and `weights` (of `model.safetensors`). `dir` only names the files in errors.
/// [`load`] reads the files and calls this; any bytes give a model or an error, never a panic.
pub fn load_from_bytes(
    meta_json: &[u8],
    weights: &[u8],
    dir: &Path,
) -> Result<(DeepRbm, ModelMeta)> {
    let meta_path = dir.join(META_FILE);
    let meta = parse_meta(meta_json, dir)?;
    let w_path = dir.join(WEIGHTS_FILE);
    let model = weights_from_bytes(weights, &meta.widths).map_err(|m| Error::model(&w_path, m))?;
    let fp = format!("{:016x}", model.fingerprint());
    if fp != meta.weights_fingerprint {
        return Err(Error::model(
            &meta_path,
            format!(
                "field 'weights_fingerprint' is {} but {WEIGHTS_FILE} has {fp}: the two files do not belong together",
                meta.weights_fingerprint
            ),
        ));
    }
    Ok((model, meta))
}

/// Parse and check `model.json`'s bytes (format, version, widths, class names).
fn parse_meta(meta_json: &[u8], dir: &Path) -> Result<ModelMeta> {
    let meta_path = dir.join(META_FILE);
    let meta: ModelMeta = serde_json::from_slice(meta_json)
        .map_err(|e| Error::model(&meta_path, format!("malformed JSON: {e}")))?;
    if meta.format != FORMAT {
        return Err(Error::model(
            &meta_path,
            format!("field 'format' is '{}', expected '{FORMAT}'", meta.format),
        ));
    }
    if meta.format_version != FORMAT_VERSION {
        return Err(Error::model(
            &meta_path,
            format!(
                "field 'format_version' is {}, this build reads version {FORMAT_VERSION}",
                meta.format_version
            ),
        ));
    }
    if meta.widths.len() < 2 || meta.widths.contains(&0) {
        return Err(Error::model(
            &meta_path,
            format!(
                "field 'widths' is {:?}: need ≥ 2 positive widths",
                meta.widths
            ),
        ));
    }
    let n_out = meta.widths[meta.widths.len() - 1];
    if meta.class_names.len() != n_out {
        return Err(Error::model(
            &meta_path,
            format!(
                "field 'class_names' has {} names but the output width is {n_out}",
                meta.class_names.len()
            ),
        ));
    }
    Ok(meta)
}

/// Parse safetensors bytes into a stack of the given widths; the error message says what is wrong.
pub(crate) fn weights_from_bytes(
    bytes: &[u8],
    widths: &[usize],
) -> std::result::Result<DeepRbm, String> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let n = widths.len() - 1;
    let read = |name: &str, shape: &[usize]| -> std::result::Result<Vec<f32>, String> {
        let t = st
            .tensor(name)
            .map_err(|_| format!("tensor '{name}' is missing (expected shape {shape:?})"))?;
        if t.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor '{name}' has dtype {:?}, expected F32",
                t.dtype()
            ));
        }
        if t.shape() != shape {
            return Err(format!(
                "tensor '{name}' has shape {:?}, but model.json's widths imply {shape:?}",
                t.shape()
            ));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let mut layers = Vec::with_capacity(n);
    for k in 1..=n {
        let (nd, nu) = (widths[k - 1], widths[k]);
        let rbm = Rbm {
            n_up: nu,
            n_down: nd,
            w: read(&format!("rbm{k}.W"), &[nu, nd])?,
            a: read(&format!("rbm{k}.a"), &[nu])?,
            b: read(&format!("rbm{k}.b"), &[nd])?,
        };
        rbm.validate(&format!("rbm{k}"))
            .map_err(|e| e.to_string())?;
        layers.push(rbm);
    }
    let expected = 3 * n;
    if st.len() != expected {
        let mut extra: Vec<String> = st
            .names()
            .into_iter()
            .filter(|nm| {
                !(1..=n).any(|k| {
                    [
                        format!("rbm{k}.W"),
                        format!("rbm{k}.a"),
                        format!("rbm{k}.b"),
                    ]
                    .iter()
                    .any(|e| e == *nm)
                })
            })
            .map(|s| s.to_string())
            .collect();
        extra.sort();
        return Err(format!(
            "unexpected tensors {extra:?}: model.json's widths imply {n} RBMs ({expected} tensors)"
        ));
    }
    DeepRbm::new(layers).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn model() -> DeepRbm {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let mut m = DeepRbm::random(&[6, 5, 3], 0.7, &mut rng).unwrap();
        m.layers[0].a[2] = 0.25;
        m.layers[1].b[4] = -1.5;
        m
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn round_trip_is_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let m = model();
        let mut meta = ModelMeta::new(&m, names());
        meta.metrics.insert("test_accuracy".into(), 0.5);
        save(dir.path(), &m, &meta).unwrap();
        let (m2, meta2) = load(dir.path()).unwrap();
        assert_eq!(m, m2);
        for (a, b) in m.layers.iter().zip(&m2.layers) {
            assert!(a
                .w
                .iter()
                .zip(&b.w)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        assert_eq!(meta2.metrics["test_accuracy"], 0.5);
        assert_eq!(meta2.widths, vec![6, 5, 3]);
        // loading through the path of model.json works too
        assert!(load(&dir.path().join(META_FILE)).is_ok());
    }

    fn saved() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &model(), &ModelMeta::new(&model(), names())).unwrap();
        let json = std::fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        (dir, json)
    }

    fn load_err(dir: &Path) -> String {
        load(dir).unwrap_err().to_string()
    }

    #[test]
    fn malformed_json_is_reported_with_the_file() {
        let (dir, json) = saved();
        std::fs::write(dir.path().join(META_FILE), &json[..json.len() / 2]).unwrap();
        let e = load_err(dir.path());
        assert!(
            e.contains("model.json") && e.contains("malformed JSON"),
            "{e}"
        );
    }

    #[test]
    fn mismatched_widths_and_class_names_are_reported() {
        let (dir, json) = saved();
        let bad = json.replace(
            "\"widths\": [\n    6,\n    5,\n    3\n  ]",
            "\"widths\": [6, 4, 3]",
        );
        assert_ne!(bad, json, "replacement did not apply");
        std::fs::write(dir.path().join(META_FILE), bad).unwrap();
        let e = load_err(dir.path());
        assert!(
            e.contains("model.safetensors") && e.contains("rbm1.W") && e.contains("[4, 6]"),
            "{e}"
        );

        let (dir, json) = saved();
        let bad = json.replace("\"c\"\n", "\"c\",\n \"d\"\n");
        std::fs::write(dir.path().join(META_FILE), bad).unwrap();
        let e = load_err(dir.path());
        assert!(e.contains("class_names") && e.contains("4 names"), "{e}");

        let (dir, json) = saved();
        std::fs::write(
            dir.path().join(META_FILE),
            json.replace("\"format_version\": 1", "\"format_version\": 9"),
        )
        .unwrap();
        assert!(load_err(dir.path()).contains("format_version"));
    }

    #[test]
    fn corrupt_or_foreign_weights_are_reported() {
        let (dir, _) = saved();
        let wp = dir.path().join(WEIGHTS_FILE);
        let bytes = std::fs::read(&wp).unwrap();
        std::fs::write(&wp, &bytes[..bytes.len() - 7]).unwrap();
        let e = load_err(dir.path());
        assert!(
            e.contains("model.safetensors") && e.contains("safetensors"),
            "{e}"
        );

        // weights of another model: fingerprint disagreement
        let (dir, _) = saved();
        let mut other = model();
        other.layers[0].w[0] += 1.0;
        std::fs::write(
            dir.path().join(WEIGHTS_FILE),
            weights_to_bytes(&other).unwrap(),
        )
        .unwrap();
        let e = load_err(dir.path());
        assert!(e.contains("weights_fingerprint"), "{e}");

        // a NaN weight
        let (dir, _) = saved();
        let mut nan = model();
        nan.layers[1].w[3] = f32::NAN;
        let mut owned = Vec::new();
        for (i, l) in nan.layers.iter().enumerate() {
            owned.push((
                format!("rbm{}.W", i + 1),
                vec![l.n_up, l.n_down],
                f32_bytes(&l.w),
            ));
            owned.push((format!("rbm{}.a", i + 1), vec![l.n_up], f32_bytes(&l.a)));
            owned.push((format!("rbm{}.b", i + 1), vec![l.n_down], f32_bytes(&l.b)));
        }
        let views: Vec<_> = owned
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        std::fs::write(
            dir.path().join(WEIGHTS_FILE),
            safetensors::tensor::serialize(views, None).unwrap(),
        )
        .unwrap();
        let e = load_err(dir.path());
        assert!(e.contains("rbm2.W[3]") && e.contains("not finite"), "{e}");

        // missing directory
        let e = load(Path::new("/nonexistent/model"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/model/model.json"), "{e}");
    }

    #[test]
    fn saving_refuses_wrong_class_count() {
        let dir = tempfile::tempdir().unwrap();
        let m = model();
        let meta = ModelMeta::new(&m, vec!["x".into()]);
        assert!(save(dir.path(), &m, &meta).is_err());
        assert!(!dir.path().join(WEIGHTS_FILE).exists());
    }
}
