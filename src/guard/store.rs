//! The guard's state in SQLite (`serve --state DB`): per-client query counts and status, the
//! monitor's per-client state, its alerts, and the watermarked queries.
//!
//! Durability: the database runs in write-ahead-log mode with `synchronous=FULL`, and every
//! change of one request is one transaction, so a crash (a kill, a power cut) loses at most the
//! requests whose transaction had not committed — the ones in flight — and never leaves a
//! half-written state. A request is charged *before* it is answered, so a crash never gives
//! away answers that were not counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::{Error, Result};

/// Version of the schema below, kept in `meta`.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    client TEXT PRIMARY KEY, queries INTEGER NOT NULL, requests INTEGER NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS status (client TEXT PRIMARY KEY, status TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, client TEXT NOT NULL, time REAL NOT NULL, signal TEXT NOT NULL,
    statistic REAL NOT NULL, threshold REAL NOT NULL, queries INTEGER NOT NULL, action TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS watermark (
    digest BLOB PRIMARY KEY, client TEXT, time REAL NOT NULL, input BLOB NOT NULL,
    original INTEGER NOT NULL, target INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS monitor_points (
    client TEXT NOT NULL, class INTEGER NOT NULL, input BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS monitor_points_client ON monitor_points (client);
CREATE TABLE IF NOT EXISTS monitor_dists (
    client TEXT NOT NULL, seq INTEGER NOT NULL, d REAL NOT NULL, PRIMARY KEY (client, seq));
CREATE TABLE IF NOT EXISTS monitor_classes (
    client TEXT NOT NULL, class INTEGER NOT NULL, served INTEGER NOT NULL,
    acc_n INTEGER NOT NULL, acc_sum REAL NOT NULL, acc_sumsq REAL NOT NULL, threshold REAL NOT NULL,
    PRIMARY KEY (client, class));
";

/// A client's counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Queries (inputs) charged.
    pub queries: u64,
    /// Requests charged.
    pub requests: u64,
    /// First and last charge (Unix seconds).
    pub first_seen: f64,
    /// Last charge (Unix seconds).
    pub last_seen: f64,
}

/// One alarm of the monitor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// The client.
    pub client: String,
    /// When (Unix seconds).
    pub time: f64,
    /// Which signal: `prada` or `entropy`.
    pub signal: String,
    /// The statistic (Shapiro–Wilk `W`, or the normalised class entropy).
    pub statistic: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// The client's queries seen by the monitor then.
    pub queries: u64,
    /// What the server did: `log`, `throttle` or `cut`.
    pub action: String,
}

/// One watermarked query: its input, the class the model gave it, and the class served instead.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatermarkRecord {
    /// The client that asked (none without `--api-keys`).
    pub client: Option<String>,
    /// When it was first served (Unix seconds).
    pub time: f64,
    /// The input.
    pub input: Vec<f32>,
    /// The model's class before the watermark.
    pub original: usize,
    /// The class served.
    pub target: usize,
}

/// A class's state in a client's monitor (see [`super::monitor`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClassRow {
    /// Queries served with this class.
    pub served: u64,
    /// Distances of the points added to the class's growing set: count.
    pub acc_n: u64,
    /// Their sum.
    pub acc_sum: f64,
    /// Their sum of squares.
    pub acc_sumsq: f64,
    /// The class's threshold.
    pub threshold: f64,
}

/// What one request changes in a client's monitor, written in the request's transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitorDelta {
    /// Points added to growing sets: (class, input).
    pub points: Vec<(usize, Vec<f32>)>,
    /// New minimum distances: (sequence number, distance).
    pub dists: Vec<(u64, f64)>,
    /// Class rows changed: (class, row).
    pub classes: Vec<(usize, ClassRow)>,
}

/// A client's stored monitor state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredMonitor {
    /// Growing sets' points: (class, input), in insertion order.
    pub points: Vec<(usize, Vec<f32>)>,
    /// Minimum distances in sequence order.
    pub dists: Vec<f64>,
    /// Class rows.
    pub classes: BTreeMap<usize, ClassRow>,
}

/// The open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn blob(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn unblob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Store {
    /// Open (or create) the database at `path`: WAL mode, `synchronous=FULL`, the schema.
    /// Refuses a database of another schema version.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |e: rusqlite::Error| Error::state(path, e);
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::state(
                path,
                format!("journal mode {mode}, expected wal"),
            ));
        }
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        match store.meta("schema_version")? {
            None => store.set_meta("schema_version", &SCHEMA_VERSION.to_string())?,
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(Error::state(
                    path,
                    format!("schema version {v}; this rgshield reads version {SCHEMA_VERSION}"),
                ))
            }
        }
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::state(&self.path, e)
    }

    /// A value of the `meta` table.
    pub fn meta(&self, k: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Set a value of the `meta` table.
    pub fn set_meta(&self, k: &str, v: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = ?2",
                [k, v],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every client's counts.
    pub fn usage(&self) -> Result<BTreeMap<String, Usage>> {
        let mut st = self
            .conn
            .prepare("SELECT client, queries, requests, first_seen, last_seen FROM usage")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Usage {
                        queries: r.get::<_, i64>(1)? as u64,
                        requests: r.get::<_, i64>(2)? as u64,
                        first_seen: r.get(3)?,
                        last_seen: r.get(4)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Charge `client` one request of `queries` queries at `now`, in one transaction.
    pub fn charge(&mut self, client: &str, queries: u64, now: f64) -> Result<()> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::state(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO usage (client, queries, requests, first_seen, last_seen)
             VALUES (?1, ?2, 1, ?3, ?3)
             ON CONFLICT(client) DO UPDATE SET queries = queries + ?2,
                 requests = requests + 1, last_seen = ?3",
            params![client, queries as i64, now],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Every client's status other than `ok`: (status, since).
    pub fn statuses(&self) -> Result<BTreeMap<String, (String, f64)>> {
        let mut st = self
            .conn
            .prepare("SELECT client, status, since FROM status")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// The alerts, oldest first; only `client`'s when given.
    pub fn alerts(&self, client: Option<&str>) -> Result<Vec<Alert>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT client, time, signal, statistic, threshold, queries, action FROM alerts
                 WHERE ?1 IS NULL OR client = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([client], |r| {
                Ok(Alert {
                    client: r.get(0)?,
                    time: r.get(1)?,
                    signal: r.get(2)?,
                    statistic: r.get(3)?,
                    threshold: r.get(4)?,
                    queries: r.get::<_, i64>(5)? as u64,
                    action: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// The watermarked queries, in the order first served.
    pub fn watermarks(&self) -> Result<Vec<WatermarkRecord>> {
        let mut st = self
            .conn
            .prepare("SELECT client, time, input, original, target FROM watermark ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(WatermarkRecord {
                    client: r.get(0)?,
                    time: r.get(1)?,
                    input: unblob(&r.get::<_, Vec<u8>>(2)?),
                    original: r.get::<_, i64>(3)? as usize,
                    target: r.get::<_, i64>(4)? as usize,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// A client's monitor state.
    pub fn monitor(&self, client: &str) -> Result<StoredMonitor> {
        let e = |e| self.err(e);
        let mut out = StoredMonitor::default();
        let mut st = self
            .conn
            .prepare("SELECT class, input FROM monitor_points WHERE client = ?1 ORDER BY rowid")
            .map_err(e)?;
        out.points = st
            .query_map([client], |r| {
                Ok((
                    r.get::<_, i64>(0)? as usize,
                    unblob(&r.get::<_, Vec<u8>>(1)?),
                ))
            })
            .map_err(e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(e)?;
        let mut st = self
            .conn
            .prepare("SELECT d FROM monitor_dists WHERE client = ?1 ORDER BY seq")
            .map_err(e)?;
        out.dists = st
            .query_map([client], |r| r.get(0))
            .map_err(e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(e)?;
        let mut st = self
            .conn
            .prepare(
                "SELECT class, served, acc_n, acc_sum, acc_sumsq, threshold FROM monitor_classes
                 WHERE client = ?1",
            )
            .map_err(e)?;
        out.classes = st
            .query_map([client], |r| {
                Ok((
                    r.get::<_, i64>(0)? as usize,
                    ClassRow {
                        served: r.get::<_, i64>(1)? as u64,
                        acc_n: r.get::<_, i64>(2)? as u64,
                        acc_sum: r.get(3)?,
                        acc_sumsq: r.get(4)?,
                        threshold: r.get(5)?,
                    },
                ))
            })
            .map_err(e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(e)?;
        Ok(out)
    }

    /// Write what one answered request changed, in one transaction: the watermarked queries
    /// (a query served before is not logged twice), the client's monitor delta, its alerts and
    /// its new status.
    pub fn record(
        &mut self,
        client: Option<&str>,
        marks: &[WatermarkRecord],
        monitor: Option<&MonitorDelta>,
        alerts: &[Alert],
        status: Option<(&str, f64)>,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::state(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        for m in marks {
            let digest = crate::util::fnv1a64_f32(crate::util::fnv1a64(b"wm"), &m.input);
            let b = blob(&m.input);
            tx.execute(
                "INSERT OR IGNORE INTO watermark (digest, client, time, input, original, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    [digest.to_le_bytes().as_slice(), b.as_slice()].concat(),
                    m.client,
                    m.time,
                    b,
                    m.original as i64,
                    m.target as i64
                ],
            )
            .map_err(err)?;
        }
        if let (Some(c), Some(d)) = (client, monitor) {
            for (class, x) in &d.points {
                tx.execute(
                    "INSERT INTO monitor_points (client, class, input) VALUES (?1, ?2, ?3)",
                    params![c, *class as i64, blob(x)],
                )
                .map_err(err)?;
            }
            for (seq, dist) in &d.dists {
                tx.execute(
                    "INSERT OR REPLACE INTO monitor_dists (client, seq, d) VALUES (?1, ?2, ?3)",
                    params![c, *seq as i64, dist],
                )
                .map_err(err)?;
            }
            for (class, r) in &d.classes {
                tx.execute(
                    "INSERT OR REPLACE INTO monitor_classes
                     (client, class, served, acc_n, acc_sum, acc_sumsq, threshold)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        c,
                        *class as i64,
                        r.served as i64,
                        r.acc_n as i64,
                        r.acc_sum,
                        r.acc_sumsq,
                        r.threshold
                    ],
                )
                .map_err(err)?;
            }
        }
        for a in alerts {
            tx.execute(
                "INSERT INTO alerts (client, time, signal, statistic, threshold, queries, action)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    a.client,
                    a.time,
                    a.signal,
                    a.statistic,
                    a.threshold,
                    a.queries as i64,
                    a.action
                ],
            )
            .map_err(err)?;
        }
        if let (Some(c), Some((s, since))) = (client, status) {
            tx.execute(
                "INSERT OR REPLACE INTO status (client, status, since) VALUES (?1, ?2, ?3)",
                params![c, s, since],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// `PRAGMA integrity_check`: `ok` for a sound database.
    pub fn integrity_check(&self) -> Result<String> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        {
            let mut s = Store::open(&p).unwrap();
            s.charge("alice", 3, 10.0).unwrap();
            s.charge("alice", 2, 11.0).unwrap();
            s.charge("bob", 1, 12.0).unwrap();
            let mark = WatermarkRecord {
                client: Some("alice".into()),
                time: 11.0,
                input: vec![0.0, 0.5, 1.0],
                original: 3,
                target: 7,
            };
            let delta = MonitorDelta {
                points: vec![(3, vec![0.0, 0.5, 1.0])],
                dists: vec![(0, 0.25)],
                classes: vec![(
                    3,
                    ClassRow {
                        served: 1,
                        threshold: 0.1,
                        ..ClassRow::default()
                    },
                )],
            };
            let alert = Alert {
                client: "alice".into(),
                time: 11.0,
                signal: "prada".into(),
                statistic: 0.8,
                threshold: 0.9,
                queries: 5,
                action: "cut".into(),
            };
            s.record(
                Some("alice"),
                &[mark.clone(), mark],
                Some(&delta),
                &[alert],
                Some(("cut", 11.0)),
            )
            .unwrap();
        }
        let s = Store::open(&p).unwrap();
        let u = s.usage().unwrap();
        assert_eq!((u["alice"].queries, u["alice"].requests), (5, 2));
        assert_eq!((u["alice"].first_seen, u["alice"].last_seen), (10.0, 11.0));
        assert_eq!(u["bob"].queries, 1);
        let w = s.watermarks().unwrap();
        assert_eq!(w.len(), 1, "a repeated watermarked query is logged once");
        assert_eq!(
            (w[0].input.clone(), w[0].original, w[0].target),
            (vec![0.0, 0.5, 1.0], 3, 7)
        );
        let m = s.monitor("alice").unwrap();
        assert_eq!(m.points, vec![(3, vec![0.0, 0.5, 1.0])]);
        assert_eq!(m.dists, vec![0.25]);
        assert_eq!(m.classes[&3].threshold, 0.1);
        assert!(s.monitor("bob").unwrap().points.is_empty());
        assert_eq!(s.alerts(None).unwrap().len(), 1);
        assert!(s.alerts(Some("bob")).unwrap().is_empty());
        assert_eq!(s.statuses().unwrap()["alice"].0, "cut");
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn a_database_of_another_schema_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        Store::open(&p)
            .unwrap()
            .set_meta("schema_version", "99")
            .unwrap();
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(
            e.contains("state.db") && e.contains("schema version 99"),
            "{e}"
        );
    }
}
