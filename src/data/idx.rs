//! IDX files (MNIST / Fashion-MNIST format), raw or gzipped.
//!
//! Images: big-endian magic `0x00000803` (u8, 3 dims: n, rows, cols), then `n·rows·cols`
//! bytes. Labels: magic `0x00000801` (u8, 1 dim: n), then `n` bytes, each 0..=9.
//! The byte length must match the header exactly. Gzip is detected by the magic bytes
//! `1f 8b`, whatever the file is called.
//!
//! Directory layout: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally with `.gz`
//! (also accepted: the `train-images.idx3-ubyte` spelling). Train/test are the files'
//! own split. Default binarisation: pixel > 127 (of 255) → 1 else 0.

use std::path::{Path, PathBuf};

use super::digits::caps_note;
use super::{
    finish, image_split, maybe_gunzip, numeric_class_names, pooled_shape, read_file, DataError,
    Dataset, LoadOptions, Scale,
};

/// IDX magic of u8 image files with 3 dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of u8 label files with 1 dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Default binarisation threshold for 0..255 pixels: pixel > 127 → 1.
pub const DEFAULT_THRESHOLD: f32 = 127.0;
/// Number of classes of MNIST and Fashion-MNIST.
pub const N_CLASSES: u32 = 10;

/// Fashion-MNIST class names, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which IDX data set a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxKind {
    /// Fashion-MNIST (Zalando).
    FashionMnist,
    /// MNIST handwritten digits.
    Mnist,
}

impl IdxKind {
    /// Data set name.
    pub fn name(self) -> &'static str {
        match self {
            IdxKind::FashionMnist => "fashion-mnist",
            IdxKind::Mnist => "mnist",
        }
    }

    /// Class names, by label.
    pub fn class_names(self) -> Vec<String> {
        match self {
            IdxKind::FashionMnist => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
            IdxKind::Mnist => numeric_class_names(N_CLASSES as usize),
        }
    }
}

/// Images of one IDX3 file.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `n·rows·cols` pixels, row-major.
    pub pixels: Vec<u8>,
}

fn format_err(path: &Path, msg: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        msg,
    }
}

/// Reads the big-endian header of an IDX file: checks the magic, returns the dimensions.
fn header(bytes: &[u8], path: &Path, magic: u32, what: &str) -> Result<Vec<usize>, DataError> {
    let n_dims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * n_dims;
    if bytes.len() < 4 {
        return Err(format_err(
            path,
            format!(
                "truncated: {} bytes, too short for an IDX header ({what} need {header_len})",
                bytes.len()
            ),
        ));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => "; this looks like an IDX3 image file",
            LABELS_MAGIC => "; this looks like an IDX1 label file",
            _ => "",
        };
        return Err(format_err(
            path,
            format!("bad magic number 0x{found:08x}, expected 0x{magic:08x} ({what}){hint}"),
        ));
    }
    if bytes.len() < header_len {
        return Err(format_err(
            path,
            format!(
                "truncated: {} bytes, too short for the {header_len}-byte header of {what}",
                bytes.len()
            ),
        ));
    }
    Ok((0..n_dims)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect())
}

/// Checks that the payload after the header has exactly `expected` bytes.
fn check_len(path: &Path, have: usize, expected: usize, what: &str) -> Result<(), DataError> {
    if have < expected {
        Err(format_err(
            path,
            format!(
                "truncated: header says {what} ({expected} bytes) but file has {have} bytes after the header"
            ),
        ))
    } else if have > expected {
        Err(format_err(
            path,
            format!(
                "trailing data: header says {what} ({expected} bytes) but file has {have} bytes after the header ({} extra)",
                have - expected
            ),
        ))
    } else {
        Ok(())
    }
}

/// Parses an IDX3 u8 image file (already gunzipped). `path` names it in errors.
pub fn parse_images(mut bytes: Vec<u8>, path: &Path) -> Result<IdxImages, DataError> {
    let dims = header(&bytes, path, IMAGES_MAGIC, "IDX3 images")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 {
        return Err(format_err(
            path,
            "empty data set (header says 0 images)".into(),
        ));
    }
    if rows == 0 || cols == 0 {
        return Err(format_err(path, format!("bad image size {rows}×{cols}")));
    }
    let what = format!("{n} images of {rows}×{cols}");
    let expected = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| format_err(path, format!("header says {what}, which is too large")))?;
    check_len(path, bytes.len() - 16, expected, &what)?;
    bytes.drain(..16);
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels: bytes,
    })
}

/// Parses an IDX1 u8 label file (already gunzipped); every label must be `< n_classes`.
pub fn parse_labels(bytes: &[u8], path: &Path, n_classes: u32) -> Result<Vec<u32>, DataError> {
    let dims = header(bytes, path, LABELS_MAGIC, "IDX1 labels")?;
    let n = dims[0];
    if n == 0 {
        return Err(format_err(
            path,
            "empty data set (header says 0 labels)".into(),
        ));
    }
    let payload = &bytes[8..];
    check_len(path, payload.len(), n, &format!("{n} labels"))?;
    payload
        .iter()
        .enumerate()
        .map(|(row, &b)| {
            let y = u32::from(b);
            if y < n_classes {
                Ok(y)
            } else {
                Err(format_err(
                    path,
                    format!(
                        "label {y} out of range at row {row} (expected 0..={})",
                        n_classes - 1
                    ),
                ))
            }
        })
        .collect()
}

/// Reads an image file (raw or gzipped).
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    images_from_bytes(read_file(path)?, path)
}

/// Reads a label file (raw or gzipped).
pub fn read_labels(path: &Path, n_classes: u32) -> Result<Vec<u32>, DataError> {
    labels_from_bytes(read_file(path)?, path, n_classes)
}

/// An image file's bytes (raw or gzipped), as [`read_images`] reads them; `path` names the file
/// in errors. Any bytes give images or an error, never a panic.
pub fn images_from_bytes(bytes: Vec<u8>, path: &Path) -> Result<IdxImages, DataError> {
    parse_images(maybe_gunzip(bytes, path)?, path)
}

/// A label file's bytes (raw or gzipped), as [`read_labels`] reads them; `path` names the file
/// in errors. Any bytes give labels or an error, never a panic.
pub fn labels_from_bytes(
    bytes: Vec<u8>,
    path: &Path,
    n_classes: u32,
) -> Result<Vec<u32>, DataError> {
    parse_labels(&maybe_gunzip(bytes, path)?, path, n_classes)
}

/// Reads a matching pair of image and label files.
pub fn read_pair(
    images: &Path,
    labels: &Path,
    n_classes: u32,
) -> Result<(IdxImages, Vec<u32>), DataError> {
    let im = read_images(images)?;
    let lb = read_labels(labels, n_classes)?;
    if im.n != lb.len() {
        return Err(format_err(
            images,
            format!(
                "{} images but {} has {} labels",
                im.n,
                labels.display(),
                lb.len()
            ),
        ));
    }
    Ok((im, lb))
}

fn install_hint(kind: IdxKind) -> String {
    match kind {
        IdxKind::FashionMnist => format!(
            "install it with `apt-get install dataset-fashion-mnist` (files go to {}), or without root: \
             `apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb DIR` \
             and pass --data fashion-mnist:DIR (or DIR/usr/share/datasets/fashion-mnist)",
            super::FASHION_MNIST_DIR
        ),
        IdxKind::Mnist => "put train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], \
             t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] in DIR and pass --data mnist:DIR"
            .to_string(),
    }
}

/// Finds `stem` (e.g. `train-images-idx3-ubyte`) in `dir`: `stem`, `stem.gz`, or the
/// `train-images.idx3-ubyte[.gz]` spelling.
fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        format!("{stem}.gz"),
        stem.to_string(),
        format!("{dotted}.gz"),
        dotted,
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

const STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Locates the four files, also trying `DIR/usr/share/datasets/fashion-mnist` (a
/// `dpkg-deb -x` extraction root) for Fashion-MNIST.
fn locate(kind: IdxKind, dir: &Path) -> Result<[PathBuf; 4], DataError> {
    let not_found = |msg: String| DataError::NotFound {
        dataset: kind.name().to_string(),
        msg: format!("{msg}; {}", install_hint(kind)),
    };
    if !dir.is_dir() {
        return Err(not_found(format!("directory {} not found", dir.display())));
    }
    let mut candidates = vec![dir.to_path_buf()];
    if kind == IdxKind::FashionMnist {
        candidates.push(dir.join("usr/share/datasets/fashion-mnist"));
    }
    for d in &candidates {
        let found: Vec<Option<PathBuf>> = STEMS.iter().map(|s| find_file(d, s)).collect();
        if found.iter().all(|f| f.is_some()) {
            let mut it = found.into_iter().flatten();
            if let (Some(a), Some(b), Some(c), Some(e)) =
                (it.next(), it.next(), it.next(), it.next())
            {
                return Ok([a, b, c, e]);
            }
        }
    }
    let missing: Vec<String> = STEMS
        .iter()
        .filter(|s| find_file(dir, s).is_none())
        .map(|s| format!("{s}[.gz]"))
        .collect();
    Err(not_found(format!(
        "{} is missing {}",
        dir.display(),
        missing.join(", ")
    )))
}

/// Loads Fashion-MNIST or MNIST from `dir` (see the module docs).
pub fn load_dir(kind: IdxKind, dir: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    opts.validate()?;
    let [tr_im, tr_lb, te_im, te_lb] = locate(kind, dir)?;
    let (train_im, train_lb) = read_pair(&tr_im, &tr_lb, N_CLASSES)?;
    let (test_im, test_lb) = read_pair(&te_im, &te_lb, N_CLASSES)?;
    if (test_im.rows, test_im.cols) != (train_im.rows, train_im.cols) {
        return Err(format_err(
            &te_im,
            format!(
                "image size {}×{} differs from the training images' {}×{} in {}",
                test_im.rows,
                test_im.cols,
                train_im.rows,
                train_im.cols,
                tr_im.display()
            ),
        ));
    }
    let (rows, cols) = (train_im.rows, train_im.cols);
    let shape = pooled_shape(kind.name(), rows, cols, opts.pool)?;
    let scale = Scale::resolve(opts.binarize, Scale::Threshold(DEFAULT_THRESHOLD), 255.0);
    let n_train = opts.max_train.map_or(train_im.n, |m| m.min(train_im.n));
    let n_test = opts.max_test.map_or(test_im.n, |m| m.min(test_im.n));
    let train_idx: Vec<usize> = (0..n_train).collect();
    let test_idx: Vec<usize> = (0..n_test).collect();
    let train = image_split(
        &train_im.pixels,
        &train_lb,
        &train_idx,
        (rows, cols),
        opts.pool,
        scale,
    );
    let test = image_split(
        &test_im.pixels,
        &test_lb,
        &test_idx,
        (rows, cols),
        opts.pool,
        scale,
    );
    let pool_note = super::pool_note(opts.pool, shape);
    let description = format!(
        "{} IDX files in {} ({rows}×{cols} images{pool_note}); {}; the files' own split: {} train / {} test{}",
        kind.name(),
        tr_im.parent().unwrap_or(dir).display(),
        scale.describe(255.0),
        train_im.n,
        test_im.n,
        caps_note(opts, train.len(), test.len()),
    );
    Ok(finish(
        kind.name().to_string(),
        kind.class_names(),
        Some(shape),
        train,
        test,
        description,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{Binarize, DataSpec};
    use super::*;
    use std::io::Write;

    fn images_bytes(n: u32, rows: u32, cols: u32, f: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
        for d in [n, rows, cols] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend((0..(n * rows * cols) as usize).map(f));
        b
    }

    fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        b.extend_from_slice(labels);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Writes a small 4×4 IDX data set: 20 train, 6 test images.
    fn write_set(dir: &Path, gzip: bool) {
        let w = |name: &str, bytes: Vec<u8>| {
            let (name, bytes) = if gzip {
                (format!("{name}.gz"), gz(&bytes))
            } else {
                (name.to_string(), bytes)
            };
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        w(
            "train-images-idx3-ubyte",
            images_bytes(20, 4, 4, |i| ((i * 37) % 256) as u8),
        );
        w(
            "train-labels-idx1-ubyte",
            labels_bytes(&(0..20).map(|i| (i % 10) as u8).collect::<Vec<_>>()),
        );
        w(
            "t10k-images-idx3-ubyte",
            images_bytes(6, 4, 4, |i| ((i * 11) % 256) as u8),
        );
        w("t10k-labels-idx1-ubyte", labels_bytes(&[9, 8, 7, 6, 5, 4]));
    }

    fn expect_err(r: Result<Dataset, DataError>, needles: &[&str]) -> String {
        let e = r.unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "missing '{n}' in: {e}");
        }
        e
    }

    #[test]
    fn loads_raw_and_gz_identically() {
        let raw_dir = tempfile::tempdir().unwrap();
        let gz_dir = tempfile::tempdir().unwrap();
        write_set(raw_dir.path(), false);
        write_set(gz_dir.path(), true);
        let o = LoadOptions::default();
        let a = load_dir(IdxKind::FashionMnist, raw_dir.path(), &o).unwrap();
        let b = load_dir(IdxKind::FashionMnist, gz_dir.path(), &o).unwrap();
        assert_eq!(a.train, b.train);
        assert_eq!(a.test, b.test);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.train.len(), 20);
        assert_eq!(a.test.len(), 6);
        assert_eq!(a.n_features(), 16);
        assert_eq!(a.image_shape, Some((4, 4)));
        assert_eq!(a.class_names[0], "T-shirt/top");
        assert_eq!(a.class_names[9], "Ankle boot");
        assert_eq!(a.test.y, vec![9, 8, 7, 6, 5, 4]);
        // pixel i of train is (i*37) % 256, binarised at > 127
        let expect: Vec<f32> = (0..16)
            .map(|i| if (i * 37) % 256 > 127 { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(a.train.row(0), &expect[..]);

        let m = load_dir(IdxKind::Mnist, raw_dir.path(), &o).unwrap();
        assert_eq!(m.name, "mnist");
        assert_eq!(m.class_names[3], "3");
        assert_eq!(m.train, a.train);
        assert_ne!(m.fingerprint, a.fingerprint); // name differs

        let spec: DataSpec = format!("mnist:{}", gz_dir.path().display())
            .parse()
            .unwrap();
        assert_eq!(super::super::load(&spec, &o).unwrap().train, a.train);
    }

    #[test]
    fn gzip_detected_by_magic_not_name() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), false);
        // replace a raw file with gzipped content under the raw name
        let p = dir.path().join("t10k-labels-idx1-ubyte");
        let raw = std::fs::read(&p).unwrap();
        std::fs::write(&p, gz(&raw)).unwrap();
        let d = load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(d.test.y, vec![9, 8, 7, 6, 5, 4]);
    }

    #[test]
    fn off_threshold_pool_caps() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), true);
        let off = load_dir(
            IdxKind::FashionMnist,
            dir.path(),
            &LoadOptions {
                binarize: Binarize::Off,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(off.train.row(0)[1], 37.0 / 255.0);
        let t = load_dir(
            IdxKind::FashionMnist,
            dir.path(),
            &LoadOptions {
                binarize: Binarize::Threshold(36.0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(&t.train.row(0)[..3], &[0.0, 1.0, 1.0]);
        let p = load_dir(
            IdxKind::FashionMnist,
            dir.path(),
            &LoadOptions {
                pool: 2,
                binarize: Binarize::Off,
                max_train: Some(3),
                max_test: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.n_features(), 4);
        assert_eq!(p.image_shape, Some((2, 2)));
        assert_eq!(p.train.len(), 3);
        assert_eq!(p.test.len(), 2);
        // first block of image 0: pixels 0,1,4,5 -> values 0,37,148,185
        let mean = (0.0 + 37.0 + 148.0 + 185.0) / 4.0 / 255.0;
        assert!((p.train.row(0)[0] - mean).abs() < 1e-6);
        assert!(p.description.contains("capped"));
        expect_err(
            load_dir(
                IdxKind::FashionMnist,
                dir.path(),
                &LoadOptions {
                    pool: 3,
                    ..Default::default()
                },
            ),
            &["pool 3", "4×4"],
        );
    }

    #[test]
    fn bad_magic() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), false);
        let p = dir.path().join("train-images-idx3-ubyte");
        let mut b = std::fs::read(&p).unwrap();
        b[3] = 0x02;
        std::fs::write(&p, b).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &[
                "train-images-idx3-ubyte: bad magic number 0x00000802, expected 0x00000803 (IDX3 images)",
            ],
        );
        // labels swapped for images
        std::fs::write(&p, labels_bytes(&[1, 2])).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &[
                "train-images-idx3-ubyte",
                "0x00000801",
                "looks like an IDX1 label file",
            ],
        );
        let lp = dir.path().join("t10k-labels-idx1-ubyte");
        std::fs::write(&p, images_bytes(20, 4, 4, |_| 0)).unwrap();
        std::fs::write(&lp, images_bytes(6, 1, 1, |_| 0)).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["t10k-labels-idx1-ubyte: bad magic number 0x00000803, expected 0x00000801 (IDX1 labels)"],
        );
    }

    #[test]
    fn truncated_and_trailing() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), false);
        let p = dir.path().join("train-images-idx3-ubyte");
        let full = images_bytes(20, 4, 4, |_| 0);
        std::fs::write(&p, &full[..16 + 100]).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &[
                "train-images-idx3-ubyte: truncated: header says 20 images of 4×4 (320 bytes) but file has 100 bytes after the header",
            ],
        );
        let mut long = full.clone();
        long.extend_from_slice(&[0; 5]);
        std::fs::write(&p, &long).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &[
                "train-images-idx3-ubyte: trailing data",
                "325 bytes after the header (5 extra)",
            ],
        );
        std::fs::write(&p, &full[..10]).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &[
                "train-images-idx3-ubyte: truncated: 10 bytes",
                "16-byte header",
            ],
        );
        std::fs::write(&p, &full[..2]).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["train-images-idx3-ubyte: truncated: 2 bytes"],
        );
        std::fs::write(&p, &full).unwrap();
        // truncated labels, gzipped
        let lp = dir.path().join("train-labels-idx1-ubyte");
        std::fs::remove_file(&lp).unwrap();
        let lb = labels_bytes(&[0; 20]);
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte.gz"),
            gz(&lb[..lb.len() - 3]),
        )
        .unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["train-labels-idx1-ubyte.gz: truncated: header says 20 labels (20 bytes) but file has 17 bytes"],
        );
        // truncated gzip stream
        let g = gz(&lb);
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte.gz"),
            &g[..g.len() - 12],
        )
        .unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["train-labels-idx1-ubyte.gz: corrupt gzip data"],
        );
    }

    #[test]
    fn label_range_count_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), false);
        let lp = dir.path().join("t10k-labels-idx1-ubyte");
        std::fs::write(&lp, labels_bytes(&[1, 2, 3, 4, 5, 11])).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["t10k-labels-idx1-ubyte: label 11 out of range at row 5 (expected 0..=9)"],
        );
        std::fs::write(&lp, labels_bytes(&[1, 2, 3])).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &[
                "t10k-images-idx3-ubyte: 6 images but",
                "t10k-labels-idx1-ubyte has 3 labels",
            ],
        );
        std::fs::write(&lp, labels_bytes(&[])).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["t10k-labels-idx1-ubyte: empty data set"],
        );
        let ip = dir.path().join("t10k-images-idx3-ubyte");
        std::fs::write(&ip, images_bytes(0, 4, 4, |_| 0)).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["t10k-images-idx3-ubyte: empty data set"],
        );
        std::fs::write(&ip, images_bytes(6, 0, 4, |_| 0)).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["t10k-images-idx3-ubyte: bad image size 0×4"],
        );
        std::fs::write(&ip, images_bytes(6, 2, 8, |_| 0)).unwrap();
        std::fs::write(&lp, labels_bytes(&[0; 6])).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["t10k-images-idx3-ubyte: image size 2×8 differs", "4×4"],
        );
        // header claiming an absurd size must not allocate or panic
        let mut huge = Vec::new();
        huge.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
        for d in [u32::MAX, u32::MAX, u32::MAX] {
            huge.extend_from_slice(&d.to_be_bytes());
        }
        std::fs::write(&ip, huge).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &["t10k-images-idx3-ubyte"],
        );
    }

    #[test]
    fn missing_dir_and_files() {
        let e = expect_err(
            load_dir(
                IdxKind::FashionMnist,
                Path::new("/nonexistent/fm"),
                &LoadOptions::default(),
            ),
            &[
                "fashion-mnist",
                "/nonexistent/fm not found",
                "apt-get install dataset-fashion-mnist",
                "dpkg-deb -x",
            ],
        );
        assert!(e.contains("apt-get download dataset-fashion-mnist"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), true);
        std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
        expect_err(
            load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()),
            &[
                "mnist",
                "is missing t10k-images-idx3-ubyte[.gz]",
                "mnist:DIR",
            ],
        );
    }

    #[test]
    fn dpkg_extraction_root_and_dotted_names() {
        let root = tempfile::tempdir().unwrap();
        let inner = root.path().join("usr/share/datasets/fashion-mnist");
        std::fs::create_dir_all(&inner).unwrap();
        write_set(&inner, true);
        let d = load_dir(IdxKind::FashionMnist, root.path(), &LoadOptions::default()).unwrap();
        assert_eq!(d.train.len(), 20);

        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), false);
        std::fs::rename(
            dir.path().join("train-images-idx3-ubyte"),
            dir.path().join("train-images.idx3-ubyte"),
        )
        .unwrap();
        let d = load_dir(IdxKind::Mnist, dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(d.train.len(), 20);
    }

    /// Runs only where the Debian package is installed.
    #[test]
    fn real_fashion_mnist_if_installed() {
        let dir = Path::new(super::super::FASHION_MNIST_DIR);
        if !dir.is_dir() {
            eprintln!("skipped: {} not installed", dir.display());
            return;
        }
        let d = load_dir(IdxKind::FashionMnist, dir, &LoadOptions::default()).unwrap();
        assert_eq!(
            (d.train.len(), d.test.len(), d.n_features()),
            (60000, 10000, 784)
        );
        assert_eq!(d.train.class_counts(10), vec![6000; 10]);
        assert_eq!(d.test.class_counts(10), vec![1000; 10]);
    }
}
