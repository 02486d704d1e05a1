//! Minimal `.npy` (NumPy format 1.0, little-endian, C order) writer and reader for the benchmark's
//! exchange with the numpy / scikit-learn references in `benches/reference/`. Only the two dtypes
//! the exchange uses: `|u1` (binary states) and `<f8` (correlators).

use std::path::Path;

use crate::error::{Error, Result};
use crate::util::atomic_write;

const MAGIC: &[u8] = b"\x93NUMPY";

fn encode(descr: &str, rows: usize, cols: usize, data: &[u8]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad so that magic + version + length + header is a multiple of 64, ending in '\n'.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Write a `rows × cols` row-major matrix of 0/1 values as `|u1`.
pub fn write_u8(path: &Path, values: &[f32], rows: usize, cols: usize) -> Result<()> {
    if values.len() != rows * cols {
        return Err(Error::shape(format!(
            "{}: {} values for a {rows}×{cols} matrix",
            path.display(),
            values.len()
        )));
    }
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, &v)| v != 0.0 && v != 1.0)
    {
        return Err(Error::invalid(format!(
            "{}: value {v} at row {}, column {} is not 0 or 1 (the exchange is binary)",
            path.display(),
            i / cols.max(1),
            i % cols.max(1)
        )));
    }
    let data: Vec<u8> = values.iter().map(|&v| u8::from(v == 1.0)).collect();
    atomic_write(path, &encode("|u1", rows, cols, &data))
}

/// Write a `rows × cols` matrix given by `at(i, j)` as `<f8`.
pub fn write_f64(
    path: &Path,
    rows: usize,
    cols: usize,
    at: impl Fn(usize, usize) -> f64,
) -> Result<()> {
    let mut data = Vec::with_capacity(rows * cols * 8);
    for i in 0..rows {
        for j in 0..cols {
            data.extend_from_slice(&at(i, j).to_le_bytes());
        }
    }
    atomic_write(path, &encode("<f8", rows, cols, &data))
}

/// Read a 2-D `<f8` C-order array: `(rows, cols, values row-major)`.
pub fn read_f64(path: &Path) -> Result<(usize, usize, Vec<f64>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad =
        |m: &str| Error::invalid(format!("{}: not a 2-D <f8 .npy file ({m})", path.display()));
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("version")),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("header"))?;
    if !header.contains("'<f8'") || header.contains("'fortran_order': True") {
        return Err(bad("dtype or order"));
    }
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("shape"))?
        .trim()
        .trim_start_matches('(');
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<usize>().map_err(|_| bad("shape")))
        .collect::<Result<_>>()?;
    let [rows, cols] = dims[..] else {
        return Err(bad("not 2-D"));
    };
    let data = &bytes[start + hlen..];
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(8))
        .ok_or_else(|| bad("shape too large"))?;
    if data.len() != expected {
        return Err(bad("length"));
    }
    let values = data
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok((rows, cols, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_round_trip_and_aligned_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_f64(&p, 2, 3, |i, j| (i * 3 + j) as f64 - 0.5).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(
            (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
            0
        );
        let (r, c, v) = read_f64(&p).unwrap();
        assert_eq!((r, c), (2, 3));
        assert_eq!(v, vec![-0.5, 0.5, 1.5, 2.5, 3.5, 4.5]);
    }

    #[test]
    fn u8_layout_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.npy");
        write_u8(&p, &[0.0, 1.0, 1.0, 0.0], 2, 2).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[bytes.len() - 4..], &[0, 1, 1, 0]);
        assert!(write_u8(&p, &[0.0; 3], 2, 2).is_err());
        let e = write_u8(&p, &[0.0, 1.0, 0.5, 1.0], 2, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0.5") && e.contains("row 1, column 0"), "{e}");
        let e = read_f64(&p).unwrap_err().to_string();
        assert!(e.contains("b.npy") && e.contains("dtype"), "{e}");
        std::fs::write(&p, b"garbage").unwrap();
        assert!(read_f64(&p).unwrap_err().to_string().contains("magic"));
    }
}
