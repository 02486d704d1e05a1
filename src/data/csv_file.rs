//! `csv:FILE` — comma-separated rows: an integer label (0-based) then the features.
//!
//! * An optional header line is detected when its first field is not a number.
//! * Blank lines are skipped; fields are trimmed; `\r\n` line ends are fine.
//! * Labels must be integers `0..=max` and every class `0..=max` must occur
//!   (class names are `"0"`..`"max"`), at most [`MAX_CLASSES`] classes.
//! * Features: `Binarize::Threshold(t)` → value > t → 1 else 0; `Binarize::Off` and
//!   `Binarize::Default` → values must already lie in `[0, 1]` (binary or real) and are
//!   kept; anything else is an error naming line and column.
//! * Split: [`super::stratified_split`] with seed [`super::SPLIT_SEED`] (fixed; ignores
//!   `LoadOptions::seed`). Classes with a single row end up in train only.
//! * Pooling is not available (no image shape).

use std::path::Path;

use super::digits::caps_note;
use super::{
    cap, finish, numeric_class_names, read_file, stratified_split, Binarize, DataError, Dataset,
    LoadOptions, Split, SPLIT_SEED,
};

/// Largest number of classes accepted (labels up to `MAX_CLASSES - 1`).
pub const MAX_CLASSES: u32 = 65_536;

/// Parsed CSV content before splitting.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvTable {
    /// Row-major features after scaling, `n_features` per row.
    pub x: Vec<f32>,
    /// Labels.
    pub y: Vec<u32>,
    /// Features per row (columns minus the label).
    pub n_features: usize,
    /// Whether a header line was found.
    pub has_header: bool,
    /// Whether all features are exactly 0 or 1.
    pub binary: bool,
}

/// Parses CSV text; `path` names the file in errors.
pub fn parse(text: &str, path: &Path, binarize: Binarize) -> Result<CsvTable, DataError> {
    let value_err = |line: usize, column: usize, msg: String| DataError::Value {
        path: path.to_path_buf(),
        line,
        column,
        msg,
    };
    let mut n_cols: Option<usize> = None;
    let mut has_header = false;
    let mut binary = true;
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut seen_first = false;
    let mut fields: Vec<&str> = Vec::new();
    for (li, line) in text.lines().enumerate() {
        let line_no = li + 1;
        if line.trim().is_empty() {
            continue;
        }
        fields.clear();
        fields.extend(line.split(',').map(str::trim));
        if !seen_first {
            seen_first = true;
            let first = fields[0].trim_start_matches('\u{feff}');
            if first.parse::<f64>().is_err() {
                has_header = true;
                if fields.len() < 2 {
                    return Err(DataError::Format {
                        path: path.to_path_buf(),
                        msg: format!(
                            "line {line_no} (header) has {} column, expected a label column and at least one feature",
                            fields.len()
                        ),
                    });
                }
                n_cols = Some(fields.len());
                continue;
            }
            fields[0] = first;
        }
        let expected = *n_cols.get_or_insert(fields.len());
        if fields.len() != expected {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                msg: format!(
                    "line {line_no} has {} columns, expected {expected}",
                    fields.len()
                ),
            });
        }
        if expected < 2 {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                msg: format!(
                    "line {line_no} has 1 column, expected a label column and at least one feature"
                ),
            });
        }
        let label = parse_label(fields[0]).map_err(|m| value_err(line_no, 1, m))?;
        y.push(label);
        for (ci, f) in fields.iter().enumerate().skip(1) {
            let v: f32 = f
                .parse()
                .map_err(|_| value_err(line_no, ci + 1, format!("value '{f}' is not a number")))?;
            if !v.is_finite() {
                return Err(value_err(
                    line_no,
                    ci + 1,
                    format!("value '{f}' is not a finite number"),
                ));
            }
            let out = match binarize {
                Binarize::Threshold(t) => {
                    if v > t {
                        1.0
                    } else {
                        0.0
                    }
                }
                Binarize::Off | Binarize::Default => {
                    if !(0.0..=1.0).contains(&v) {
                        let hint = if binarize == Binarize::Off {
                            "binarisation is off, so features must already be in [0,1]"
                        } else {
                            "pass a binarisation threshold (value > t becomes 1) or rescale the features to [0,1]"
                        };
                        return Err(value_err(
                            line_no,
                            ci + 1,
                            format!("value {f} is outside [0,1]; {hint}"),
                        ));
                    }
                    v
                }
            };
            binary &= out == 0.0 || out == 1.0;
            x.push(out);
        }
    }
    if y.is_empty() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            msg: if has_header {
                "empty data set (only a header line)".into()
            } else {
                "empty data set".into()
            },
        });
    }
    Ok(CsvTable {
        x,
        y,
        n_features: n_cols.unwrap_or(1) - 1,
        has_header,
        binary,
    })
}

fn parse_label(f: &str) -> Result<u32, String> {
    let s = f.strip_suffix(".0").unwrap_or(f);
    match s.parse::<u32>() {
        Ok(v) if v < MAX_CLASSES => Ok(v),
        Ok(v) => Err(format!(
            "label {v} too large (at most {MAX_CLASSES} classes)"
        )),
        Err(_) => Err(format!(
            "label '{f}' is not a non-negative integer (the first column is the 0-based class label)"
        )),
    }
}

/// Loads `csv:FILE` (see the module docs).
pub fn load(file: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    check_options(file, opts)?;
    from_bytes(&read_file(file)?, file, opts)
}

fn check_options(file: &Path, opts: &LoadOptions) -> Result<(), DataError> {
    opts.validate()?;
    if opts.pool != 1 {
        return Err(DataError::InvalidOption(format!(
            "pool {} needs image data, but csv:{} has no image shape",
            opts.pool,
            file.display()
        )));
    }
    Ok(())
}

/// The data set of a CSV file's bytes (what [`load`] does after reading `file`, which here only
/// names the file in errors and descriptions). Any bytes give a data set or an error, never a
/// panic.
pub fn from_bytes(bytes: &[u8], file: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    check_options(file, opts)?;
    let text = std::str::from_utf8(bytes).map_err(|e| DataError::Format {
        path: file.to_path_buf(),
        msg: format!("not valid UTF-8 text: {e}"),
    })?;
    let table = parse(text, file, opts.binarize)?;
    let n_classes = table.y.iter().max().map_or(0, |&m| m as usize + 1);
    let mut counts = vec![0usize; n_classes];
    table.y.iter().for_each(|&c| counts[c as usize] += 1);
    if let Some(missing) = counts.iter().position(|&c| c == 0) {
        return Err(DataError::Format {
            path: file.to_path_buf(),
            msg: format!(
                "class {missing} has no rows; labels must be 0-based and contiguous (found labels up to {})",
                n_classes - 1
            ),
        });
    }
    let (train_idx, test_idx) = stratified_split(&table.y, SPLIT_SEED);
    let (n_train_full, n_test_full) = (train_idx.len(), test_idx.len());
    let train = select(&table, &cap(train_idx, opts.max_train));
    let test = select(&table, &cap(test_idx, opts.max_test));
    let rule = match opts.binarize {
        Binarize::Threshold(t) => format!("binarised value > {t} → 1 else 0"),
        _ if table.binary => "binary values kept as they are".to_string(),
        _ => "real values in [0,1] kept as they are, not binarised".to_string(),
    };
    let description = format!(
        "CSV file {} ({} rows, {} features{}); {rule}; fixed stratified 70/30 split (seed {SPLIT_SEED}): \
         {n_train_full} train / {n_test_full} test{}",
        file.display(),
        table.y.len(),
        table.n_features,
        if table.has_header { ", header line" } else { "" },
        caps_note(opts, train.len(), test.len()),
    );
    Ok(finish(
        format!("csv:{}", file.display()),
        numeric_class_names(n_classes),
        None,
        train,
        test,
        description,
    ))
}

fn select(t: &CsvTable, idx: &[usize]) -> Split {
    let nf = t.n_features;
    let mut x = Vec::with_capacity(idx.len() * nf);
    for &i in idx {
        x.extend_from_slice(&t.x[i * nf..(i + 1) * nf]);
    }
    Split {
        x,
        y: idx.iter().map(|&i| t.y[i]).collect(),
        n_features: nf,
    }
}

#[cfg(test)]
mod tests {
    use super::super::DataSpec;
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn err(file: &Path, opts: &LoadOptions) -> String {
        load(file, opts).unwrap_err().to_string()
    }

    fn assert_has(e: &str, needles: &[&str]) {
        for n in needles {
            assert!(e.contains(n), "missing '{n}' in: {e}");
        }
    }

    /// 30 rows, 3 classes, 4 binary features.
    fn good_text(header: bool) -> String {
        let mut s = String::new();
        if header {
            s.push_str("label,f1,f2,f3,f4\r\n");
        }
        for i in 0..30 {
            let c = i % 3;
            s.push_str(&format!("{c}, {}, {}, 0, 1\r\n", i % 2, (i / 2) % 2));
        }
        s.push('\n');
        s
    }

    #[test]
    fn loads_with_and_without_header() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(&dir, "a.csv", &good_text(true));
        let b = write(&dir, "b.csv", &good_text(false));
        let da = load(&a, &LoadOptions::default()).unwrap();
        let db = load(&b, &LoadOptions::default()).unwrap();
        assert_eq!(da.train, db.train);
        assert_eq!(da.test, db.test);
        assert_eq!(da.n_features(), 4);
        assert_eq!(da.class_names, vec!["0", "1", "2"]);
        assert_eq!(da.train.len(), 21);
        assert_eq!(da.test.len(), 9);
        assert_eq!(da.train.class_counts(3), vec![7, 7, 7]);
        assert_eq!(da.image_shape, None);
        assert!(da.name.starts_with("csv:") && da.name.ends_with("a.csv"));
        assert!(da.description.contains("header line") && da.description.contains("binary"));
        assert_ne!(da.fingerprint, db.fingerprint); // names differ
                                                    // seed does not change the split
        let dc = load(
            &a,
            &LoadOptions {
                seed: 99,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(dc.fingerprint, da.fingerprint);
        let spec: DataSpec = format!("csv:{}", a.display()).parse().unwrap();
        assert_eq!(
            super::super::load(&spec, &LoadOptions::default())
                .unwrap()
                .train,
            da.train
        );
    }

    #[test]
    fn scaling_modes() {
        let dir = tempfile::tempdir().unwrap();
        let real = write(&dir, "real.csv", "0,0.25,1\n1,0.5,0\n0,0,0\n1,1,1\n");
        let d = load(&real, &LoadOptions::default()).unwrap();
        assert!(d.description.contains("real values"));
        assert!(d.train.x.contains(&0.25) || d.test.x.contains(&0.25));
        let off = load(
            &real,
            &LoadOptions {
                binarize: Binarize::Off,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(off.train, d.train);
        let big = write(&dir, "big.csv", "0,0,255\n1,128,3\n0,12,0\n1,200,100\n");
        let e = err(&big, &LoadOptions::default());
        assert_has(
            &e,
            &[
                "big.csv line 1 column 3",
                "255",
                "outside [0,1]",
                "threshold",
            ],
        );
        let e = err(
            &big,
            &LoadOptions {
                binarize: Binarize::Off,
                ..Default::default()
            },
        );
        assert_has(&e, &["big.csv line 1 column 3", "binarisation is off"]);
        let t = load(
            &big,
            &LoadOptions {
                binarize: Binarize::Threshold(127.0),
                ..Default::default()
            },
        )
        .unwrap();
        let all: Vec<f32> = t.train.x.iter().chain(&t.test.x).copied().collect();
        assert!(all.iter().all(|&v| v == 0.0 || v == 1.0));
        assert_eq!(all.iter().filter(|&&v| v == 1.0).count(), 3);
    }

    #[test]
    fn bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "data.csv",
            "0,1,0\n1,0,1\n0,1,1\n1,0,0\n0,1,0\n1,0,1\n0,NaN,1\n",
        );
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["data.csv line 7 column 2: value 'NaN' is not a finite number"],
        );
        let p = write(&dir, "inf.csv", "0,1,0\n1,0,inf\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["inf.csv line 2 column 3: value 'inf' is not a finite number"],
        );
        let p = write(&dir, "neginf.csv", "0,1,0\n1,0,-inf\n");
        assert_has(
            &err(
                &p,
                &LoadOptions {
                    binarize: Binarize::Threshold(0.5),
                    ..Default::default()
                },
            ),
            &["neginf.csv line 2 column 3", "not a finite number"],
        );
        let p = write(&dir, "garbage.csv", "0,1,0\n1,0,abc\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["garbage.csv line 2 column 3: value 'abc' is not a number"],
        );
        let p = write(&dir, "empty-field.csv", "0,1,0\n1,,1\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["empty-field.csv line 2 column 2: value '' is not a number"],
        );
    }

    #[test]
    fn bad_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "neg.csv", "0,1\n-1,0\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &[
                "neg.csv line 2 column 1",
                "label '-1' is not a non-negative integer",
            ],
        );
        let p = write(&dir, "frac.csv", "0,1\n1.5,0\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["frac.csv line 2 column 1", "'1.5'"],
        );
        let p = write(&dir, "huge.csv", "0,1\n4000000000,0\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["huge.csv line 2 column 1", "too large"],
        );
        let p = write(&dir, "gap.csv", "1,1\n2,0\n1,0\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["gap.csv", "class 0 has no rows"],
        );
        let p = write(&dir, "float-label.csv", "0.0,1\n1.0,0\n");
        assert_eq!(load(&p, &LoadOptions::default()).unwrap().n_classes(), 2);
    }

    #[test]
    fn ragged_empty_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "ragged.csv", "0,1,0\n1,0,1\n\n0,1\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["ragged.csv: line 4 has 2 columns, expected 3"],
        );
        let p = write(&dir, "ragged-header.csv", "y,a,b\n0,1,0,1\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["ragged-header.csv: line 2 has 4 columns, expected 3"],
        );
        let p = write(&dir, "empty.csv", "");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["empty.csv: empty data set"],
        );
        let p = write(&dir, "blank.csv", "\n  \n\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["blank.csv: empty data set"],
        );
        let p = write(&dir, "header-only.csv", "label,a,b\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["header-only.csv: empty data set"],
        );
        let p = write(&dir, "one-col.csv", "0\n1\n");
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["one-col.csv: line 1 has 1 column"],
        );
        let p = write(&dir, "bin.csv", "0,1\n");
        std::fs::write(&p, [0x30, 0x2c, 0xff, 0xfe, b'\n']).unwrap();
        assert_has(
            &err(&p, &LoadOptions::default()),
            &["bin.csv: not valid UTF-8"],
        );
        let missing = dir.path().join("nope.csv");
        assert_has(&err(&missing, &LoadOptions::default()), &["nope.csv"]);
        let p = write(&dir, "ok.csv", &good_text(false));
        assert_has(
            &err(
                &p,
                &LoadOptions {
                    pool: 2,
                    ..Default::default()
                },
            ),
            &["pool 2", "ok.csv", "no image shape"],
        );
    }

    #[test]
    fn caps_keep_first_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "c.csv", &good_text(false));
        let full = load(&p, &LoadOptions::default()).unwrap();
        let c = load(
            &p,
            &LoadOptions {
                max_train: Some(5),
                max_test: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.train.len(), 5);
        assert_eq!(c.test.len(), 2);
        assert_eq!(c.train.x[..], full.train.x[..5 * 4]);
    }
}
