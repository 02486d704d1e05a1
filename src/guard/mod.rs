//! The server's guard: what a served model needs beyond output poisoning (issue 16).
//!
//! * [`accounts`]: API keys (`Authorization: Bearer`), per-key quotas and token-bucket rate
//!   limits;
//! * [`monitor`]: extraction detection while the theft happens (PRADA, Juuti et al. EuroS&P
//!   2019) and a class-coverage signal;
//! * [`watermark`]: proof afterwards (DAWN, Szyller et al. ACM MM 2021): a keyed fraction of
//!   answers changed, verified by an exact binomial test;
//! * [`store`]: all of it kept in SQLite, transactionally, so it survives restarts and crashes;
//! * [`stats`]: the normal distribution, the binomial tail and the Shapiro–Wilk test.
//!
//! [`Guard`] ties them together for the server: `serve` calls [`Guard::authenticate`] before it
//! reads a request's body, [`Guard::admit`] (quota, rate, the monitor's verdict; charges the
//! queries in the database) before it computes the answers, [`Watermark::mark`] on each answer
//! and [`Guard::record`] (watermark log, monitor, alerts) before it sends them. The guard knows
//! nothing of HTTP: a refusal is a [`Denied`] with a status code and a reason that `serve` turns
//! into a JSON body. What each layer stops and what it does not: `docs/guide/guard.md`.

pub mod accounts;
pub mod monitor;
pub mod stats;
pub mod store;
pub mod watermark;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::defence::Key;
use crate::error::{Error, Result};
use crate::params::Valid;
use accounts::{BucketRefusal, ClientEntry, Clock, KeyFile, TokenBucket};
use monitor::{ClientMonitor, MonitorParams, MonitorSummary};
use store::{Alert, MonitorDelta, Store, Usage, WatermarkRecord};
use watermark::{Mark, Watermark, WatermarkParams};

/// What the server does to a client the monitor flags (`serve --on-alarm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnAlarm {
    /// Record the alert only.
    #[default]
    Log,
    /// Record it and cut the client's rate to a tenth (1 query per second for a key without a
    /// rate).
    Throttle,
    /// Record it and refuse the client's requests from then on (403, reason `cut`).
    Cut,
}

impl std::str::FromStr for OnAlarm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "log" => Ok(OnAlarm::Log),
            "throttle" => Ok(OnAlarm::Throttle),
            "cut" => Ok(OnAlarm::Cut),
            _ => Err(Error::invalid(format!(
                "on-alarm '{s}': expected log, throttle or cut"
            ))),
        }
    }
}

impl std::fmt::Display for OnAlarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnAlarm::Log => "log",
            OnAlarm::Throttle => "throttle",
            OnAlarm::Cut => "cut",
        })
    }
}

/// The rate of a throttled client, as a fraction of its key's rate.
pub const THROTTLE_FACTOR: f64 = 0.1;

/// Everything the guard is configured with.
pub struct GuardConfig {
    /// The clients (`--api-keys`); none: no accounting, no monitor, anonymous requests.
    pub keys: Option<KeyFile>,
    /// The watermark (`--watermark`).
    pub watermark: Option<Valid<WatermarkParams>>,
    /// The monitor (`--monitor`; needs keys).
    pub monitor: Option<Valid<MonitorParams>>,
    /// What a flagged client gets.
    pub on_alarm: OnAlarm,
}

/// An authenticated client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Its name in the key file.
    pub name: String,
    /// Whether it may call the admin endpoints.
    pub admin: bool,
}

/// A refused request: the HTTP status, a stable reason code and a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Denied {
    /// 401, 403, 429 or 500.
    pub status: u16,
    /// `missing_key`, `malformed_key`, `unknown_key`, `not_admin`, `cut`, `quota_exceeded`,
    /// `rate_limited`, `batch_over_burst`, `state_error`.
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
    /// Seconds to wait before trying again (429 `rate_limited`).
    pub retry_after: Option<u64>,
}

impl Denied {
    fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Denied {
            status,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A client's usage as `GET /v1/usage` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsageReport {
    /// The client.
    pub client: String,
    /// Queries charged.
    pub queries: u64,
    /// Requests charged.
    pub requests: u64,
    /// The key's quota.
    pub quota: Option<u64>,
    /// Queries left under the quota.
    pub remaining: Option<u64>,
    /// The rate now in force (queries per second; throttled clients get less).
    pub rate: Option<f64>,
    /// The bucket's capacity.
    pub burst: Option<f64>,
    /// `ok`, `throttled` or `cut`.
    pub status: String,
    /// The monitor's view, when it runs (admin endpoints only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorSummary>,
}

struct Inner {
    store: Store,
    usage: BTreeMap<String, Usage>,
    status: BTreeMap<String, (String, f64)>,
    buckets: BTreeMap<String, TokenBucket>,
    monitors: BTreeMap<String, ClientMonitor>,
}

/// The guard of one server (module docs).
pub struct Guard {
    by_hash: Option<BTreeMap<String, ClientEntry>>,
    by_name: BTreeMap<String, ClientEntry>,
    watermark: Option<Watermark>,
    monitor: Option<Valid<MonitorParams>>,
    on_alarm: OnAlarm,
    n_classes: usize,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl Guard {
    /// Open the state database at `state` for a model of `n_classes` classes whose weights have
    /// `fingerprint`, with the server's secret `key` (the watermark's). Refuses a database
    /// written for another model, and a monitor without keys.
    pub fn open(
        config: GuardConfig,
        state: &Path,
        key: &Key,
        n_classes: usize,
        fingerprint: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        if config.monitor.is_some() && config.keys.is_none() {
            return Err(Error::invalid(
                "the monitor watches clients: it needs --api-keys",
            ));
        }
        let store = Store::open(state)?;
        for (k, v) in [
            ("weights_fingerprint", fingerprint.to_string()),
            ("n_classes", n_classes.to_string()),
        ] {
            match store.meta(k)? {
                None => store.set_meta(k, &v)?,
                Some(old) if old == v => {}
                Some(old) => {
                    return Err(Error::state(
                        state,
                        format!("was written for a model with {k} {old}, this model has {v}"),
                    ))
                }
            }
        }
        let usage = store.usage()?;
        let status = store.statuses()?;
        let by_name = config
            .keys
            .as_ref()
            .map(|f| {
                f.clients
                    .iter()
                    .map(|c| (c.name.clone(), c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Guard {
            by_hash: config.keys.as_ref().map(KeyFile::by_hash),
            by_name,
            watermark: config.watermark.as_ref().map(|p| Watermark::new(key, p)),
            monitor: config.monitor,
            on_alarm: config.on_alarm,
            n_classes,
            clock,
            inner: Mutex::new(Inner {
                store,
                usage,
                status,
                buckets: BTreeMap::new(),
                monitors: BTreeMap::new(),
            }),
        })
    }

    /// Whether requests need a key.
    pub fn accounting(&self) -> bool {
        self.by_hash.is_some()
    }

    /// The watermark, when on.
    pub fn watermark(&self) -> Option<&Watermark> {
        self.watermark.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counts that were either committed or not:
        // the state stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client of an `Authorization` header value (`Bearer rgs_…`): 401 when it is missing,
    /// malformed or unknown.
    pub fn authenticate(&self, header: Option<&str>) -> std::result::Result<Client, Denied> {
        let Some(by_hash) = &self.by_hash else {
            return Err(Denied::new(500, "state_error", "accounting is off"));
        };
        let Some(h) = header else {
            return Err(Denied::new(
                401,
                "missing_key",
                "this server needs an API key: send Authorization: Bearer <key>",
            ));
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Denied::new(
                    401,
                    "malformed_key",
                    "the Authorization header must read Bearer <key>",
                )
            })?;
        match by_hash.get(&accounts::hash_key(token)) {
            Some(c) => Ok(Client {
                name: c.name.clone(),
                admin: c.admin,
            }),
            None => Err(Denied::new(
                401,
                "unknown_key",
                "the API key is not known to this server",
            )),
        }
    }

    fn status_of(inner: &Inner, name: &str) -> String {
        inner
            .status
            .get(name)
            .map(|s| s.0.clone())
            .unwrap_or_else(|| "ok".into())
    }

    fn effective_rate(entry: &ClientEntry, status: &str) -> Option<(f64, f64)> {
        let burst = entry.capacity();
        match (status, entry.rate) {
            ("throttled", Some(r)) => Some((r * THROTTLE_FACTOR, burst.unwrap_or(1.0))),
            ("throttled", None) => Some((1.0, 1.0)),
            (_, Some(r)) => Some((r, burst.unwrap_or(1.0))),
            _ => None,
        }
    }

    /// Admit a request of `n` queries from `client`: 403 when the monitor cut it, 429 over its
    /// quota or rate; else charge the queries in the database (before they are answered).
    pub fn admit(&self, client: &Client, n: u64) -> std::result::Result<(), Denied> {
        let entry = self.by_name.get(&client.name).ok_or_else(|| {
            Denied::new(
                401,
                "unknown_key",
                "the API key is not known to this server",
            )
        })?;
        let now = self.clock.now();
        let mut inner = self.lock();
        let status = Self::status_of(&inner, &client.name);
        if status == "cut" {
            return Err(Denied::new(
                403,
                "cut",
                format!(
                    "client '{}' was cut off after an extraction alarm; ask the operator",
                    client.name
                ),
            ));
        }
        let used = inner.usage.get(&client.name).map_or(0, |u| u.queries);
        if let Some(q) = entry.quota {
            if used.saturating_add(n) > q {
                return Err(Denied::new(
                    429,
                    "quota_exceeded",
                    format!(
                        "quota exceeded: {n} queries asked, {} of the quota of {q} left",
                        q.saturating_sub(used)
                    ),
                ));
            }
        }
        if let Some((rate, burst)) = Self::effective_rate(entry, &status) {
            let b = inner
                .buckets
                .entry(client.name.clone())
                .or_insert_with(|| TokenBucket::full(burst, now));
            match b.take(n as f64, rate, burst, now) {
                Ok(()) => {}
                Err(BucketRefusal::Wait(s)) => {
                    return Err(Denied {
                        retry_after: Some(s.ceil().max(1.0) as u64),
                        ..Denied::new(
                            429,
                            "rate_limited",
                            format!(
                                "rate limit of {rate} queries per second (burst {burst}) reached: \
                                 {n} queries need {s:.3} s more"
                            ),
                        )
                    })
                }
                Err(BucketRefusal::OverBurst) => {
                    return Err(Denied::new(
                        429,
                        "batch_over_burst",
                        format!(
                            "a request of {n} queries can never pass the burst of {burst}: \
                             send at most {} per request",
                            burst.floor()
                        ),
                    ))
                }
            }
        }
        inner
            .store
            .charge(&client.name, n, now)
            .map_err(|e| Denied::new(500, "state_error", e.to_string()))?;
        let u = inner.usage.entry(client.name.clone()).or_insert(Usage {
            first_seen: now,
            ..Usage::default()
        });
        u.queries += n;
        u.requests += 1;
        u.last_seen = now;
        Ok(())
    }

    fn monitor_for<'a>(
        &self,
        inner: &'a mut Inner,
        name: &str,
    ) -> Result<Option<&'a mut ClientMonitor>> {
        let Some(params) = &self.monitor else {
            return Ok(None);
        };
        if !inner.monitors.contains_key(name) {
            let stored = inner.store.monitor(name)?;
            let raised: Vec<String> = inner
                .store
                .alerts(Some(name))?
                .into_iter()
                .map(|a| a.signal)
                .collect();
            let m = ClientMonitor::restore(params.clone(), self.n_classes, stored, &raised)?;
            inner.monitors.insert(name.to_string(), m);
        }
        Ok(inner.monitors.get_mut(name))
    }

    /// After a request was answered: log its marked queries, feed the client's monitor with
    /// each input and its class before the watermark (`classes`), and store alerts and the
    /// client's new status — one transaction. `rows` holds the inputs, row-major.
    pub fn record(
        &self,
        client: Option<&Client>,
        x: &[f32],
        classes: &[usize],
        marks: &[Option<Mark>],
    ) -> Result<Vec<Alert>> {
        let rows = classes.len();
        if rows == 0 || !x.len().is_multiple_of(rows) || marks.len() != rows {
            return Err(Error::shape(format!(
                "guard record: {} values, {rows} classes, {} marks",
                x.len(),
                marks.len()
            )));
        }
        let n0 = x.len() / rows;
        let now = self.clock.now();
        let records: Vec<WatermarkRecord> = marks
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                m.map(|m| WatermarkRecord {
                    client: client.map(|c| c.name.clone()),
                    time: now,
                    input: x[i * n0..(i + 1) * n0].to_vec(),
                    original: m.original,
                    target: m.target,
                })
            })
            .collect();
        let mut inner = self.lock();
        let mut delta = MonitorDelta::default();
        let mut alerts = Vec::new();
        let mut new_status = None;
        if let Some(c) = client {
            let action = self.on_alarm;
            if let Some(m) = self.monitor_for(&mut inner, &c.name)? {
                for (i, &class) in classes.iter().enumerate() {
                    for s in m.observe(&x[i * n0..(i + 1) * n0], class, &mut delta) {
                        let (statistic, threshold) = s.values();
                        alerts.push(Alert {
                            client: c.name.clone(),
                            time: now,
                            signal: s.name().into(),
                            statistic,
                            threshold,
                            queries: m.queries(),
                            action: action.to_string(),
                        });
                    }
                }
            }
            if !alerts.is_empty() {
                let current = Self::status_of(&inner, &c.name);
                let s = match action {
                    OnAlarm::Log => None,
                    OnAlarm::Throttle if current == "cut" => None,
                    OnAlarm::Throttle => Some("throttled"),
                    OnAlarm::Cut => Some("cut"),
                };
                new_status = s.map(|s| (s, now));
            }
        }
        let monitor = (self.monitor.is_some() && client.is_some()).then_some(&delta);
        if records.is_empty() && monitor.is_none() {
            return Ok(alerts);
        }
        inner.store.record(
            client.map(|c| c.name.as_str()),
            &records,
            monitor,
            &alerts,
            new_status,
        )?;
        if let (Some(c), Some((s, t))) = (client, new_status) {
            inner.status.insert(c.name.clone(), (s.to_string(), t));
            inner.buckets.remove(&c.name);
        }
        Ok(alerts)
    }

    fn report(&self, inner: &Inner, entry: &ClientEntry, with_monitor: bool) -> UsageReport {
        let u = inner.usage.get(&entry.name).cloned().unwrap_or_default();
        let status = Self::status_of(inner, &entry.name);
        let rate = Self::effective_rate(entry, &status);
        UsageReport {
            client: entry.name.clone(),
            queries: u.queries,
            requests: u.requests,
            quota: entry.quota,
            remaining: entry.quota.map(|q| q.saturating_sub(u.queries)),
            rate: rate.map(|r| r.0),
            burst: rate.map(|r| r.1),
            status,
            monitor: if with_monitor {
                inner.monitors.get(&entry.name).map(ClientMonitor::summary)
            } else {
                None
            },
        }
    }

    /// `client`'s usage.
    pub fn usage(&self, client: &Client) -> Option<UsageReport> {
        let inner = self.lock();
        self.by_name
            .get(&client.name)
            .map(|e| self.report(&inner, e, false))
    }

    /// Every client's usage, with the monitor's view of the clients seen since the start.
    pub fn usage_all(&self) -> Vec<UsageReport> {
        let inner = self.lock();
        self.by_name
            .values()
            .map(|e| self.report(&inner, e, true))
            .collect()
    }

    /// The alerts, oldest first.
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        self.lock().store.alerts(None)
    }
}

#[cfg(test)]
mod tests;
