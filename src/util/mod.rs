//! Small shared helpers: hashing for seeds and fingerprints, atomic file writes, directories
//! written as a whole ([`transaction`]).

pub mod memory;
pub mod transaction;

pub use transaction::DirTransaction;

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Fisher–Yates shuffle of `v` in place: for i from the end, swap with a uniform j ≤ i
/// (`random_range(0..=i)`). Every shuffle of training orders, query orders and clone splits uses
/// this one (the data loaders' fixed splits keep their own, in [`crate::data`]).
pub fn shuffle<T, R: rand::Rng + ?Sized>(v: &mut [T], rng: &mut R) {
    for i in (1..v.len()).rev() {
        let j = rand::RngExt::random_range(rng, 0..=i);
        v.swap(i, j);
    }
}

/// FNV-1a 64-bit hash, used for data and model fingerprints (not cryptographic).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Continue an FNV-1a hash with the little-endian bytes of `xs`.
pub fn fnv1a64_f32(mut h: u64, xs: &[f32]) -> u64 {
    for x in xs {
        for b in x.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// SplitMix64 finaliser: mixes two words into a well-spread seed for an independent stream.
pub fn mix_seed(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, flushed and synced,
/// then renamed over the target. Nothing half-written is ever left at `path`, and the temporary
/// files of earlier writes of `path` that crashed are removed.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    transaction::remove_stale_temporaries(path);
    Ok(())
}

/// Serialise to pretty JSON and write atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid(format!("{}: cannot serialise JSON: {e}", path.display())))?;
    s.push('\n');
    atomic_write(path, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left behind");
    }

    #[test]
    fn atomic_write_into_missing_folder_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("f.json");
        let e = atomic_write(&p, b"x").unwrap_err().to_string();
        assert!(e.contains("missing/f.json"), "{e}");
    }

    #[test]
    fn seeds_differ_by_stream() {
        assert_ne!(mix_seed(1, 0), mix_seed(1, 1));
        assert_ne!(mix_seed(0, 1), mix_seed(1, 0));
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    }
}
