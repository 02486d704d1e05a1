//! The guard as a whole, on a simulated clock.

use super::accounts::{hash_key, ManualClock};
use super::*;
use crate::params::Params;

/// (name, quota, rate, burst).
type Limits<'a> = (&'a str, Option<u64>, Option<f64>, Option<f64>);

fn keys(entries: &[Limits<'_>]) -> KeyFile {
    KeyFile {
        clients: entries
            .iter()
            .map(|&(name, quota, rate, burst)| ClientEntry {
                name: name.into(),
                sha256: hash_key(&format!("rgs_{name}")),
                quota,
                rate,
                burst,
                admin: name == "admin",
            })
            .collect(),
    }
}

fn open(
    dir: &Path,
    f: KeyFile,
    clock: Arc<ManualClock>,
    monitor: bool,
    on_alarm: OnAlarm,
) -> Guard {
    Guard::open(
        GuardConfig {
            keys: Some(f),
            watermark: Some(WatermarkParams { rate: 0.5 }.check().unwrap()),
            monitor: monitor.then(|| {
                MonitorParams {
                    window: 10,
                    stride: 1,
                    ..MonitorParams::default()
                }
                .check()
                .unwrap()
            }),
            on_alarm,
        },
        &dir.join("state.db"),
        &Key::public("guard tests"),
        3,
        "00000000000000aa",
        clock,
    )
    .unwrap()
}

fn client(g: &Guard, name: &str) -> Client {
    g.authenticate(Some(&format!("Bearer rgs_{name}"))).unwrap()
}

#[test]
fn keys_are_checked_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(
        dir.path(),
        keys(&[("alice", None, None, None), ("admin", None, None, None)]),
        Arc::new(ManualClock::at(0.0)),
        false,
        OnAlarm::Log,
    );
    assert_eq!(
        client(&g, "alice"),
        Client {
            name: "alice".into(),
            admin: false
        }
    );
    assert!(client(&g, "admin").admin);
    assert_eq!(g.authenticate(None).unwrap_err().reason, "missing_key");
    assert_eq!(
        g.authenticate(Some("Basic abc")).unwrap_err().reason,
        "malformed_key"
    );
    assert_eq!(
        g.authenticate(Some("Bearer ")).unwrap_err().reason,
        "malformed_key"
    );
    let e = g.authenticate(Some("Bearer rgs_mallory")).unwrap_err();
    assert_eq!((e.status, e.reason), (401, "unknown_key"));
}

#[test]
fn quota_and_rate_on_a_simulated_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(100.0));
    // Quota 25 queries; 2 queries per second, burst 10.
    let g = open(
        dir.path(),
        keys(&[("alice", Some(25), Some(2.0), Some(10.0))]),
        clock.clone(),
        false,
        OnAlarm::Log,
    );
    let a = client(&g, "alice");
    assert_eq!(g.admit(&a, 10), Ok(()));
    let e = g.admit(&a, 1).unwrap_err();
    assert_eq!(
        (e.status, e.reason, e.retry_after),
        (429, "rate_limited", Some(1))
    );
    assert!(e.message.contains("0.500 s"), "{}", e.message);
    assert_eq!(g.admit(&a, 11).unwrap_err().reason, "batch_over_burst");
    clock.advance(2.5); // 5 tokens
    assert_eq!(g.admit(&a, 6).unwrap_err().reason, "rate_limited");
    assert_eq!(g.admit(&a, 5), Ok(()));
    clock.advance(60.0);
    // 15 used: 10 more pass, then the quota (not the rate) refuses.
    assert_eq!(g.admit(&a, 10), Ok(()));
    clock.advance(60.0);
    let e = g.admit(&a, 1).unwrap_err();
    assert_eq!((e.status, e.reason), (429, "quota_exceeded"));
    assert!(
        e.message.contains("0 of the quota of 25 left"),
        "{}",
        e.message
    );
    let u = g.usage(&a).unwrap();
    assert_eq!((u.queries, u.requests, u.remaining), (25, 3, Some(0)));
}

#[test]
fn counts_survive_a_restart_and_buckets_start_full() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(0.0));
    let f = keys(&[("alice", Some(100), Some(1.0), Some(5.0))]);
    {
        let g = open(dir.path(), f.clone(), clock.clone(), false, OnAlarm::Log);
        let a = client(&g, "alice");
        g.admit(&a, 5).unwrap();
        assert!(g.admit(&a, 1).is_err());
    }
    let g = open(dir.path(), f, clock.clone(), false, OnAlarm::Log);
    let a = client(&g, "alice");
    assert_eq!(g.usage(&a).unwrap().queries, 5);
    assert_eq!(g.admit(&a, 5), Ok(()));
    assert_eq!(g.usage(&a).unwrap().remaining, Some(90));
    // Another model's state is refused.
    let e = Guard::open(
        GuardConfig {
            keys: None,
            watermark: None,
            monitor: None,
            on_alarm: OnAlarm::Log,
        },
        &dir.path().join("state.db"),
        &Key::public("guard tests"),
        10,
        "00000000000000aa",
        clock,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("n_classes 3") && e.contains("state.db"), "{e}");
}

#[test]
fn an_alarm_cuts_the_client_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(0.0));
    let f = keys(&[("thief", None, None, None), ("admin", None, None, None)]);
    {
        let g = open(dir.path(), f.clone(), clock.clone(), true, OnAlarm::Cut);
        let t = client(&g, "thief");
        // The same input again and again: all distances 0, W = 0 < δ as soon as the window of
        // 10 distances is full, at the 11th query.
        let x = vec![0.5f32; 4];
        let mut alerts = Vec::new();
        for _ in 0..11 {
            g.admit(&t, 1).unwrap();
            alerts.extend(g.record(Some(&t), &x, &[1], &[None]).unwrap());
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].signal.as_str(), alerts[0].action.as_str()),
            ("prada", "cut")
        );
        let e = g.admit(&t, 1).unwrap_err();
        assert_eq!((e.status, e.reason), (403, "cut"));
        assert_eq!(g.alerts().unwrap().len(), 1);
        let all = g.usage_all();
        let th = all.iter().find(|u| u.client == "thief").unwrap();
        assert_eq!(th.status, "cut");
        assert_eq!(th.monitor.as_ref().unwrap().queries, 11);
    }
    let g = open(dir.path(), f, clock, true, OnAlarm::Cut);
    assert_eq!(g.admit(&client(&g, "thief"), 1).unwrap_err().reason, "cut");
    assert_eq!(g.alerts().unwrap().len(), 1);
}

#[test]
fn throttling_divides_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(0.0));
    let g = open(
        dir.path(),
        keys(&[("thief", None, Some(10.0), Some(10.0))]),
        clock.clone(),
        true,
        OnAlarm::Throttle,
    );
    let t = client(&g, "thief");
    for _ in 0..11 {
        clock.advance(1.0);
        g.admit(&t, 1).unwrap();
        g.record(Some(&t), &[0.5; 4], &[0], &[None]).unwrap();
    }
    let u = g.usage(&t).unwrap();
    assert_eq!((u.status.as_str(), u.rate), ("throttled", Some(1.0)));
    // The bucket restarts full at the burst, then refills at 1/s.
    g.admit(&t, 10).unwrap();
    assert_eq!(g.admit(&t, 1).unwrap_err().retry_after, Some(1));
}

#[test]
fn watermarks_are_logged_once_with_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(7.0));
    let g = open(
        dir.path(),
        keys(&[("alice", None, None, None)]),
        clock,
        false,
        OnAlarm::Log,
    );
    let a = client(&g, "alice");
    let x = [0.0f32, 0.25, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0];
    let marks = [
        Some(Mark {
            original: 0,
            target: 2,
        }),
        None,
    ];
    g.record(Some(&a), &x, &[0, 1], &marks).unwrap();
    g.record(Some(&a), &x, &[0, 1], &marks).unwrap();
    let w = Store::open(&dir.path().join("state.db"))
        .unwrap()
        .watermarks()
        .unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(
        (w[0].client.as_deref(), w[0].time, w[0].target),
        (Some("alice"), 7.0, 2)
    );
    assert_eq!(w[0].input, x[..4].to_vec());
}
