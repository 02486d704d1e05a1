//! The defender's secret key: what makes the randomised and keyed defences unpredictable to a
//! client (a public seed is not a secret). Every per-query random choice is drawn from
//! `HMAC-SHA256(key, "query" ‖ x)`, so a repeated query gets the same answer (nothing averages
//! away) while nobody without the key can predict or reproduce it; per-class choices (a partner
//! class, a fixed direction) from `HMAC-SHA256(key, label)`.
//!
//! A key file holds 64 hexadecimal digits (32 bytes) and nothing else but white space.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Bytes of a key.
pub const KEY_BYTES: usize = 32;

/// A secret key of [`KEY_BYTES`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_BYTES]);

impl std::fmt::Debug for Key {
    /// Never prints the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Key(bytes)
    }

    /// A fixed, public key for experiments and tests, derived from `label`; never a secret.
    pub fn public(label: &str) -> Self {
        let mut out = [0u8; KEY_BYTES];
        out.copy_from_slice(&hmac(b"rgshield public key", label.as_bytes()));
        Key(out)
    }

    /// A fresh key from the operating system's random source (`/dev/urandom`).
    pub fn generate() -> Result<Self> {
        let path = Path::new("/dev/urandom");
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut out = [0u8; KEY_BYTES];
        std::io::Read::read_exact(&mut f, &mut out).map_err(|e| Error::io(path, e))?;
        Ok(Key(out))
    }

    /// Read a key file (64 hexadecimal digits); the error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let hex = text.trim();
        if hex.len() != 2 * KEY_BYTES || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{}: a key file holds {} hexadecimal digits, found {} characters",
                path.display(),
                2 * KEY_BYTES,
                hex.len()
            )));
        }
        let mut out = [0u8; KEY_BYTES];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        }
        Ok(Key(out))
    }

    /// Write the key to a new file readable by its owner only (mode 0600 on Unix); refuses to
    /// overwrite an existing file. Atomic: the key is written and synced under a temporary name
    /// in the same directory, then linked to `path` (which fails if `path` exists), so a crash
    /// never leaves a partial key file at `path`.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| Error::invalid(format!("{}: not a file name", path.display())))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let written = (|| {
            let mut f = opts.open(&tmp)?;
            let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(f, "{hex}")?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        written.map_err(|e| Error::io(path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Whether the key file at `path` can be read by others than its owner (Unix mode bits
    /// 0o077); `false` elsewhere or when it cannot be inspected.
    pub fn readable_by_others(path: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                return m.permissions().mode() & 0o077 != 0;
            }
        }
        false
    }

    /// Load `path`, or, when it does not exist, generate a key and save it there (owner-only).
    /// Returns the key and whether it was generated.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool)> {
        if path.exists() {
            return Ok((Key::load(path)?, false));
        }
        let k = Key::generate()?;
        k.save_new(path)?;
        Ok((k, true))
    }

    /// `HMAC-SHA256(key, data)`.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        hmac(&self.0, data)
    }

    /// A 64-bit value keyed by a label (per-class choices of the keyed defences).
    pub fn derive(&self, label: &str) -> u64 {
        first_u64(&self.mac(label.as_bytes()))
    }

    /// The seed of one query's random choices: from `HMAC-SHA256(key, "query" ‖ x)` over the
    /// little-endian bytes of the input.
    pub fn query_seed(&self, x: &[f32]) -> u64 {
        self.input_mac(b"query", x)
    }

    /// The first 64 bits of `HMAC-SHA256(key, domain ‖ x)` over the little-endian bytes of the
    /// input: a keyed, per-input value, independent across domains (the watermark's choices use
    /// their own domains, so they are independent of the query seeds).
    pub fn input_mac(&self, domain: &[u8], x: &[f32]) -> u64 {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        m.update(domain);
        for v in x {
            m.update(&v.to_le_bytes());
        }
        first_u64(&m.finalize().into_bytes())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn first_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let got = hmac(b"Jefe", b"what do ya want for nothing?");
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
    }

    #[test]
    fn seeds_depend_on_key_and_input_only() {
        let (a, b) = (Key::public("a"), Key::public("b"));
        let x = [0.0f32, 1.0, 0.5];
        assert_eq!(a.query_seed(&x), a.query_seed(&x));
        assert_ne!(a.query_seed(&x), b.query_seed(&x));
        assert_ne!(a.query_seed(&x), a.query_seed(&[0.0, 1.0, 0.25]));
        assert_ne!(a.derive("partner"), a.derive("direction"));
        assert_eq!(format!("{a:?}"), "Key(…)");
    }

    #[test]
    fn key_files_round_trip_owner_only_and_refuse_bad_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        let (k, generated) = Key::load_or_generate(&p).unwrap();
        assert!(generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let (k2, generated) = Key::load_or_generate(&p).unwrap();
        assert!(!generated);
        assert_eq!(k, k2);
        assert!(
            k.save_new(&p).is_err(),
            "an existing key is never overwritten"
        );
        assert_eq!(
            Key::load(&p).unwrap(),
            k,
            "a refused save leaves the key intact"
        );
        assert!(!Key::readable_by_others(&p));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "abc").unwrap();
        let e = Key::load(&bad).unwrap_err().to_string();
        assert!(
            e.contains("bad") && e.contains("64 hexadecimal digits"),
            "{e}"
        );
    }
}
