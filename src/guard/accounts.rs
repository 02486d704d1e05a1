//! API keys, quotas and rate limits.
//!
//! # Keys
//!
//! A key is `rgs_` followed by 64 hexadecimal digits (32 bytes from `/dev/urandom`). The key file
//! (`serve --api-keys FILE`, written by `rgshield keys new`) stores, per client, its name, the
//! SHA-256 of its key (hex) and its limits; never the key itself. A plain SHA-256 suffices: the
//! keys are 256-bit random strings, so there is nothing to guess that a slow password hash would
//! protect. A request names its key as `Authorization: Bearer rgs_…`.
//!
//! # Quota and rate
//!
//! Both count *queries* (inputs), not requests, since what a thief needs is inputs answered.
//! * The quota `N` bounds a client's queries over its lifetime; a request that would pass it is
//!   refused whole (429, reason `quota_exceeded`).
//! * The rate is a token bucket (e.g. Tanenbaum, *Computer Networks*, §5.4): a bucket of
//!   capacity `B` (the burst) holds `b` tokens, refilled at `R` tokens per second,
//!   `b(t) = min(B, b(t₀) + R (t − t₀))`; a request of `n` queries passes when `b ≥ n` and takes
//!   `n` tokens, else it is refused (429, reason `rate_limited`) with the wait
//!   `⌈(n − b)/R⌉` seconds in `Retry-After`; a request of more than `B` queries can never pass
//!   (429, reason `batch_over_burst`). The buckets live in memory and start full after a restart;
//!   the query counts (and so the quota) are stored ([`super::store`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::defence::Key;
use crate::error::{Error, Result};

/// Seconds since the Unix epoch, as the guard sees them. Injected so the quota and rate
/// arithmetic can be tested on a simulated clock.
pub trait Clock: Send + Sync {
    /// Now, in seconds since the Unix epoch.
    fn now(&self) -> f64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// A clock that moves only when told (tests, simulations); microsecond resolution.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `t` seconds.
    pub fn at(t: f64) -> Self {
        ManualClock(AtomicU64::new((t * 1e6).round() as u64))
    }
    /// Move the clock forward by `dt` seconds.
    pub fn advance(&self, dt: f64) {
        self.0
            .fetch_add((dt * 1e6).round() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        self.0.load(Ordering::SeqCst) as f64 / 1e6
    }
}

/// Prefix of every key.
pub const KEY_PREFIX: &str = "rgs_";

/// SHA-256 of a key's text, hex.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh key (`rgs_` and 64 hex digits) from the operating system's random source.
pub fn generate_key() -> Result<String> {
    let k = Key::generate()?;
    let bytes = k.mac(b"rgshield api key");
    Ok(format!(
        "{KEY_PREFIX}{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// One client of the key file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The client's name (unique in the file): what usage, alerts and the logs show.
    pub name: String,
    /// SHA-256 of the key, 64 hex digits.
    pub sha256: String,
    /// Most queries over the key's lifetime (none: unlimited).
    #[serde(default)]
    pub quota: Option<u64>,
    /// Queries per second refilled into the bucket (none: unlimited).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Capacity of the bucket (default: `max(1, ⌈rate⌉)`).
    #[serde(default)]
    pub burst: Option<f64>,
    /// Whether the key may call the admin endpoints.
    #[serde(default)]
    pub admin: bool,
}

impl ClientEntry {
    /// The bucket's capacity: [`ClientEntry::burst`], else `max(1, ⌈rate⌉)`.
    pub fn capacity(&self) -> Option<f64> {
        self.rate
            .map(|r| self.burst.unwrap_or_else(|| r.ceil().max(1.0)))
    }

    fn check(&self, file: &Path) -> Result<()> {
        let bad = |what: String| {
            Err(Error::invalid(format!(
                "{}: client '{}': {what}",
                file.display(),
                self.name
            )))
        };
        if self.name.is_empty() || self.name.chars().any(|c| c.is_control()) {
            return bad("a name must be non-empty printable text".into());
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(format!(
                "sha256 = '{}' is not 64 hexadecimal digits",
                self.sha256
            ));
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return bad(format!(
                    "rate = {r} (must be finite and > 0 queries per second)"
                ));
            }
        }
        if let Some(b) = self.burst {
            if !(b.is_finite() && b >= 1.0) {
                return bad(format!("burst = {b} (must be finite and ≥ 1)"));
            }
            if self.rate.is_none() {
                return bad("burst is set without a rate".into());
            }
        }
        Ok(())
    }
}

/// The key file: `{"clients": [ClientEntry, …]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// The clients, in the order they were added.
    pub clients: Vec<ClientEntry>,
}

impl KeyFile {
    /// Read and check a key file; the error names the file and the client.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let f: KeyFile = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: not a key file: {e}", path.display())))?;
        f.check(path)?;
        Ok(f)
    }

    /// Load `path`, or an empty file when it does not exist.
    pub fn load_or_empty(path: &Path) -> Result<Self> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(KeyFile::default())
        }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for c in &self.clients {
            c.check(path)?;
            if !names.insert(c.name.as_str()) {
                return Err(Error::invalid(format!(
                    "{}: client name '{}' appears twice",
                    path.display(),
                    c.name
                )));
            }
            if !hashes.insert(c.sha256.to_ascii_lowercase()) {
                return Err(Error::invalid(format!(
                    "{}: client '{}' has the key hash of an earlier client",
                    path.display(),
                    c.name
                )));
            }
        }
        Ok(())
    }

    /// Add a client with a fresh key; returns the key (the only time it exists in clear).
    /// Refuses a name already in the file.
    pub fn add(&mut self, mut entry: ClientEntry, path: &Path) -> Result<String> {
        if self.clients.iter().any(|c| c.name == entry.name) {
            return Err(Error::invalid(format!(
                "{}: a client named '{}' exists already",
                path.display(),
                entry.name
            )));
        }
        let key = generate_key()?;
        entry.sha256 = hash_key(&key);
        entry.check(path)?;
        self.clients.push(entry);
        Ok(key)
    }

    /// Write the file atomically (temporary file, sync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::util::write_json(path, self)
    }

    /// The clients by key hash.
    pub fn by_hash(&self) -> BTreeMap<String, ClientEntry> {
        self.clients
            .iter()
            .map(|c| (c.sha256.to_ascii_lowercase(), c.clone()))
            .collect()
    }
}

/// A token bucket (module docs): `tokens` at time `last`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    /// Tokens at `last`.
    pub tokens: f64,
    /// When `tokens` was last brought up to date (clock seconds).
    pub last: f64,
}

/// Why a bucket refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BucketRefusal {
    /// Not enough tokens now; seconds until there are.
    Wait(f64),
    /// More queries than the bucket ever holds.
    OverBurst,
}

impl TokenBucket {
    /// A full bucket of capacity `burst` at `now`.
    pub fn full(burst: f64, now: f64) -> Self {
        TokenBucket {
            tokens: burst,
            last: now,
        }
    }

    /// Refill to `now` at `rate` up to `burst`, then take `n` tokens if there are enough.
    /// A clock that goes backwards refills nothing.
    pub fn take(&mut self, n: f64, rate: f64, burst: f64, now: f64) -> Result<(), BucketRefusal> {
        let dt = (now - self.last).max(0.0);
        self.tokens = (self.tokens + rate * dt).min(burst);
        self.last = self.last.max(now);
        if n > burst {
            return Err(BucketRefusal::OverBurst);
        }
        if self.tokens + 1e-9 >= n {
            self.tokens = (self.tokens - n).max(0.0);
            Ok(())
        } else {
            Err(BucketRefusal::Wait((n - self.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_arithmetic_on_a_simulated_clock() {
        // Rate 2/s, burst 5: five at once, then one every half second.
        let clock = ManualClock::at(1000.0);
        let mut b = TokenBucket::full(5.0, clock.now());
        assert_eq!(b.take(5.0, 2.0, 5.0, clock.now()), Ok(()));
        assert_eq!(
            b.take(1.0, 2.0, 5.0, clock.now()),
            Err(BucketRefusal::Wait(0.5))
        );
        clock.advance(0.25);
        assert_eq!(
            b.take(1.0, 2.0, 5.0, clock.now()),
            Err(BucketRefusal::Wait(0.25))
        );
        clock.advance(0.25);
        assert_eq!(b.take(1.0, 2.0, 5.0, clock.now()), Ok(()));
        // A long pause refills to the burst, never beyond it.
        clock.advance(3600.0);
        assert_eq!(b.take(5.0, 2.0, 5.0, clock.now()), Ok(()));
        assert_eq!(
            b.take(1.0, 2.0, 5.0, clock.now()),
            Err(BucketRefusal::Wait(0.5))
        );
        assert_eq!(
            b.take(6.0, 2.0, 5.0, clock.now()),
            Err(BucketRefusal::OverBurst)
        );
        // Refused requests take nothing: after 1 s there are exactly 2 tokens.
        clock.advance(1.0);
        assert_eq!(
            b.take(3.0, 2.0, 5.0, clock.now()),
            Err(BucketRefusal::Wait(0.5))
        );
        assert_eq!(b.take(2.0, 2.0, 5.0, clock.now()), Ok(()));
        // A clock that steps back neither refills nor panics.
        let mut c = TokenBucket::full(1.0, 10.0);
        assert_eq!(c.take(1.0, 1.0, 1.0, 10.0), Ok(()));
        assert_eq!(c.take(1.0, 1.0, 1.0, 5.0), Err(BucketRefusal::Wait(1.0)));
    }

    #[test]
    fn key_files_store_hashes_only_and_refuse_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let mut f = KeyFile::load_or_empty(&path).unwrap();
        let entry = |name: &str| ClientEntry {
            name: name.into(),
            sha256: String::new(),
            quota: Some(10),
            rate: Some(2.5),
            burst: None,
            admin: false,
        };
        let k = f.add(entry("alice"), &path).unwrap();
        assert!(k.starts_with(KEY_PREFIX) && k.len() == 68, "{k}");
        f.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&k[4..]), "the key itself is never stored");
        assert!(text.contains(&hash_key(&k)));
        let back = KeyFile::load(&path).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.clients[0].capacity(), Some(3.0));
        let e = f.add(entry("alice"), &path).unwrap_err().to_string();
        assert!(e.contains("'alice' exists already"), "{e}");
        let k2 = f.add(entry("bob"), &path).unwrap();
        assert_ne!(k, k2);
        // A hand-edited file with a bad field is refused by name.
        std::fs::write(
            &path,
            r#"{"clients":[{"name":"eve","sha256":"abc","rate":1}]}"#,
        )
        .unwrap();
        let e = KeyFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("keys.json") && e.contains("'eve'") && e.contains("sha256"),
            "{e}"
        );
        std::fs::write(
            &path,
            r#"{"clients":[{"name":"eve","sha256":"00","rate":-1}]}"#,
        )
        .unwrap();
        assert!(KeyFile::load(&path).is_err());
    }
}
