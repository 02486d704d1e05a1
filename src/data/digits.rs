//! The embedded scikit-learn digits (UCI optdigits): 1797 8×8 images, pixels 0..16.
//!
//! Source: `sklearn/datasets/data/digits.csv.gz` (BSD-3, see `data/digits.LICENSE-sklearn-BSD3`),
//! 64 comma-separated pixel values then the label, no header.
//!
//! Default binarisation: pixel > 7 (of 16) → 1 else 0 (`Binarize::Off` → pixel / 16).
//! Split: [`super::stratified_split`] with seed [`super::SPLIT_SEED`] — fixed,
//! 1258 train / 539 test, independent of `LoadOptions::seed`.

use std::path::Path;

use super::{
    cap, finish, image_split, maybe_gunzip, numeric_class_names, pooled_shape, stratified_split,
    DataError, Dataset, LoadOptions, Scale, SPLIT_SEED,
};

/// The gzipped CSV, embedded at compile time.
pub const DIGITS_CSV_GZ: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz"));

/// Name used for the embedded file in error messages.
pub const DIGITS_SOURCE: &str = "<embedded digits.csv.gz>";

/// Image side (8×8).
pub const SIDE: usize = 8;
/// Largest pixel value.
pub const MAX_PIXEL: u8 = 16;
/// Default binarisation threshold: pixel > 7 → 1.
pub const DEFAULT_THRESHOLD: f32 = 7.0;

/// Parsed digits: `n × 64` pixels (0..=16) and labels (0..=9).
#[derive(Clone, Debug)]
pub struct RawDigits {
    /// Row-major pixels, 64 per image.
    pub pixels: Vec<u8>,
    /// Labels 0..=9.
    pub labels: Vec<u32>,
}

/// Parses digits CSV text (65 columns: 64 pixels 0..=16, then a label 0..=9).
/// `path` only names the source in errors.
pub fn parse(text: &str, path: &Path) -> Result<RawDigits, DataError> {
    let n_cols = SIDE * SIDE + 1;
    let mut pixels = Vec::with_capacity(1797 * SIDE * SIDE);
    let mut labels = Vec::with_capacity(1797);
    for (li, line) in text.lines().enumerate() {
        let line_no = li + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != n_cols {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                msg: format!(
                    "line {line_no} has {} columns, expected {n_cols}",
                    fields.len()
                ),
            });
        }
        for (ci, field) in fields.iter().enumerate() {
            let f = field.trim();
            let v = parse_small_int(f).ok_or_else(|| DataError::Value {
                path: path.to_path_buf(),
                line: line_no,
                column: ci + 1,
                msg: format!("value '{f}' is not an integer"),
            })?;
            if ci < n_cols - 1 {
                if v > u32::from(MAX_PIXEL) {
                    return Err(DataError::Value {
                        path: path.to_path_buf(),
                        line: line_no,
                        column: ci + 1,
                        msg: format!("pixel {v} out of range (expected 0..={MAX_PIXEL})"),
                    });
                }
                pixels.push(v as u8);
            } else {
                if v > 9 {
                    return Err(DataError::Value {
                        path: path.to_path_buf(),
                        line: line_no,
                        column: ci + 1,
                        msg: format!(
                            "label {v} out of range at row {} (expected 0..=9)",
                            labels.len()
                        ),
                    });
                }
                labels.push(v);
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            msg: "empty data set".into(),
        });
    }
    Ok(RawDigits { pixels, labels })
}

/// Non-negative integer, also accepting a trailing ".0" (e.g. "3.0").
fn parse_small_int(s: &str) -> Option<u32> {
    let s = s.strip_suffix(".0").unwrap_or(s);
    s.parse::<u32>().ok()
}

/// Decodes and parses the embedded file.
pub fn raw() -> Result<RawDigits, DataError> {
    let path = Path::new(DIGITS_SOURCE);
    let bytes = maybe_gunzip(DIGITS_CSV_GZ.to_vec(), path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        msg: format!("not valid UTF-8 text: {e}"),
    })?;
    parse(text, path)
}

/// Loads the digits data set (see the module docs for binarisation and split).
pub fn load(opts: &LoadOptions) -> Result<Dataset, DataError> {
    opts.validate()?;
    let raw = raw()?;
    let shape = pooled_shape("digits", SIDE, SIDE, opts.pool)?;
    let scale = Scale::resolve(
        opts.binarize,
        Scale::Threshold(DEFAULT_THRESHOLD),
        f32::from(MAX_PIXEL),
    );
    let (train_idx, test_idx) = stratified_split(&raw.labels, SPLIT_SEED);
    let (n_train_full, n_test_full) = (train_idx.len(), test_idx.len());
    let train_idx = cap(train_idx, opts.max_train);
    let test_idx = cap(test_idx, opts.max_test);
    let train = image_split(
        &raw.pixels,
        &raw.labels,
        &train_idx,
        (SIDE, SIDE),
        opts.pool,
        scale,
    );
    let test = image_split(
        &raw.pixels,
        &raw.labels,
        &test_idx,
        (SIDE, SIDE),
        opts.pool,
        scale,
    );
    let pool_note = super::pool_note(opts.pool, shape);
    let description = format!(
        "scikit-learn digits (embedded, {} images of 8×8{pool_note}); {}; fixed stratified \
         70/30 split (seed {SPLIT_SEED}): {n_train_full} train / {n_test_full} test{}",
        raw.labels.len(),
        scale.describe(f32::from(MAX_PIXEL)),
        caps_note(opts, train.len(), test.len()),
    );
    Ok(finish(
        "digits".into(),
        numeric_class_names(10),
        Some(shape),
        train,
        test,
        description,
    ))
}

/// ", capped to N train / M test" when caps are set.
pub(crate) fn caps_note(opts: &LoadOptions, n_train: usize, n_test: usize) -> String {
    if opts.max_train.is_some() || opts.max_test.is_some() {
        format!(", capped to the first {n_train} train / {n_test} test")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Binarize, DataSpec};
    use super::*;

    #[test]
    fn embedded_file_parses() {
        let raw = raw().unwrap();
        assert_eq!(raw.labels.len(), 1797);
        assert_eq!(raw.pixels.len(), 1797 * 64);
        assert!(raw.pixels.iter().all(|&p| p <= 16));
        let mut counts = [0; 10];
        raw.labels.iter().for_each(|&y| counts[y as usize] += 1);
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    }

    #[test]
    fn split_sizes_and_stratification() {
        let d = load(&LoadOptions::default()).unwrap();
        assert_eq!(d.train.len(), 1258);
        assert_eq!(d.test.len(), 539);
        assert_eq!(d.n_features(), 64);
        assert_eq!(d.n_classes(), 10);
        assert_eq!(d.image_shape, Some((8, 8)));
        assert_eq!(d.name, "digits");
        let tr = d.train.class_counts(10);
        let te = d.test.class_counts(10);
        for c in 0..10 {
            let n = (tr[c] + te[c]) as f64;
            assert!(tr[c] > 0 && te[c] > 0, "class {c} missing from a split");
            assert!(
                (tr[c] as f64 - 0.7 * n).abs() <= 1.0,
                "class {c}: {} of {n}",
                tr[c]
            );
        }
        assert!(d
            .train
            .x
            .iter()
            .chain(&d.test.x)
            .all(|&v| v == 0.0 || v == 1.0));
        let expect_train = [125, 127, 124, 128, 127, 127, 127, 125, 122, 126];
        assert_eq!(tr, expect_train);
        // Pins the data set's identity: changes to parsing, binarisation or the split show here.
        assert_eq!(d.fingerprint, "532f7193d7a9a416");
        assert!(d.description.contains("stratified") && d.description.contains("> 7"));
    }

    #[test]
    fn split_ignores_seed_and_is_stable() {
        let a = load(&LoadOptions::default()).unwrap();
        let b = load(&LoadOptions {
            seed: 12345,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.train, b.train);
        assert_eq!(a.test, b.test);
        assert_eq!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn binarisation_matches_raw_pixels() {
        let raw = raw().unwrap();
        let d = load(&LoadOptions::default()).unwrap();
        let (train_idx, _) = stratified_split(&raw.labels, SPLIT_SEED);
        let i = train_idx[5];
        let expect: Vec<f32> = raw.pixels[i * 64..(i + 1) * 64]
            .iter()
            .map(|&p| if p > 7 { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(d.train.row(5), &expect[..]);
        assert_eq!(d.train.y[5], raw.labels[i]);

        let off = load(&LoadOptions {
            binarize: Binarize::Off,
            ..Default::default()
        })
        .unwrap();
        let expect: Vec<f32> = raw.pixels[i * 64..(i + 1) * 64]
            .iter()
            .map(|&p| f32::from(p) / 16.0)
            .collect();
        assert_eq!(off.train.row(5), &expect[..]);
        assert!(off.train.x.iter().any(|&v| v > 0.0 && v < 1.0));
        assert_ne!(off.fingerprint, d.fingerprint);

        let t = load(&LoadOptions {
            binarize: Binarize::Threshold(0.0),
            ..Default::default()
        })
        .unwrap();
        let ones_t: f32 = t.train.x.iter().sum();
        let ones_d: f32 = d.train.x.iter().sum();
        assert!(ones_t > ones_d);
    }

    #[test]
    fn pooling_and_caps() {
        let d = load(&LoadOptions {
            pool: 2,
            max_train: Some(100),
            max_test: Some(10_000),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(d.n_features(), 16);
        assert_eq!(d.image_shape, Some((4, 4)));
        assert_eq!(d.train.len(), 100);
        assert_eq!(d.test.len(), 539);
        let full = load(&LoadOptions {
            pool: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(d.train.x[..], full.train.x[..100 * 16]);
        let e = load(&LoadOptions {
            pool: 3,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("pool 3") && e.contains("digits"), "{e}");
    }

    #[test]
    fn via_spec() {
        let d = super::super::load(&DataSpec::Digits, &LoadOptions::default()).unwrap();
        assert_eq!(d.train.len(), 1258);
        let info = d.info();
        assert_eq!(info.n_train, 1258);
        assert_eq!(info.train_class_counts.iter().sum::<usize>(), 1258);
    }

    #[test]
    fn malformed_text() {
        let p = Path::new("digits-test.csv");
        let row = |label: &str| {
            let mut s = vec!["0"; 64].join(",");
            s.push(',');
            s.push_str(label);
            s
        };
        let e = parse("", p).unwrap_err().to_string();
        assert!(
            e.contains("digits-test.csv") && e.contains("empty data set"),
            "{e}"
        );
        let e = parse(&format!("{}\n{}\n", row("1"), row("10")), p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("digits-test.csv") && e.contains("label 10 out of range at row 1"),
            "{e}"
        );
        let e = parse("1,2,3\n", p).unwrap_err().to_string();
        assert!(e.contains("line 1 has 3 columns, expected 65"), "{e}");
        let e = parse(&row("x"), p).unwrap_err().to_string();
        assert!(e.contains("line 1 column 65") && e.contains("'x'"), "{e}");
        let mut bad = row("1");
        bad.replace_range(0..1, "17");
        let e = parse(&bad, p).unwrap_err().to_string();
        assert!(
            e.contains("line 1 column 1") && e.contains("pixel 17"),
            "{e}"
        );
        assert_eq!(
            parse(&format!("{}\n\n", row("3.0")), p).unwrap().labels,
            vec![3]
        );
    }
}
