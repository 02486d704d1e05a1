//! Memory budgets: how much memory a run may take ([`available_memory`], [`parse_bytes`]) and the
//! check every command makes of its estimate before allocating ([`check_memory`]). The estimates
//! themselves live beside what they estimate (`model::estimated_bytes`,
//! `train::estimated_bytes`, `sample::estimated_bytes`, `rg::stability::flow_sample_bytes`,
//! `FlowMoments::estimated_bytes`).

use crate::error::{Error, Result};

/// Memory the system can give a new process without swapping, in bytes: `MemAvailable` of
/// `/proc/meminfo` (Linux); elsewhere, or when it cannot be read, the physical memory
/// (`sysconf`, Unix); `None` when neither is known.
pub fn available_memory() -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
        if let Some(kib) = meminfo_available_kib(&text) {
            return Some(kib.saturating_mul(1024));
        }
    }
    physical_memory()
}

/// `MemAvailable` in KiB from the text of `/proc/meminfo`.
fn meminfo_available_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return Some((pages as u64).saturating_mul(size as u64));
        }
    }
    None
}

/// Parse a byte count: a number with an optional binary suffix `K`, `M`, `G`, `T` (powers of
/// 1024; `KiB`, `GB` and lower case accepted), e.g. `8G`, `512M`, `1.5G`, `1000000`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let bad = || {
        Error::invalid(format!(
            "'{s}' is not a byte count (a number with an optional K, M, G or T suffix, e.g. 8G)"
        ))
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = num * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A byte count for people: `25.6 GB` style with binary units (`KiB`, `MiB`, `GiB`, `TiB`).
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Refuse work whose estimated memory `need` exceeds `budget` (bytes). `what` names the setting
/// that drives the estimate, e.g. `"--widths 64,100000000,10"`; `budget_source` says where the
/// budget comes from, e.g. `"the available memory; --memory-budget changes it"`.
pub fn check_memory(what: &str, need: u64, budget: u64, budget_source: &str) -> Result<()> {
    if need > budget {
        return Err(Error::invalid(format!(
            "{what} needs an estimated {} of memory, over the memory budget of {} ({budget_source})",
            format_bytes(need),
            format_bytes(budget)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("8G").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_bytes(" 1000 ").unwrap(), 1000);
        assert_eq!(parse_bytes("2kb").unwrap(), 2048);
        for bad in ["", "G", "8X", "-1G", "0", "1e9", "NaNG"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_check_names_setting_estimate_and_budget() {
        assert!(check_memory("x", 10, 10, "test").is_ok());
        let e = check_memory("--widths 1,2", 3 << 30, 1 << 30, "the available memory")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--widths 1,2") && e.contains("3.0 GiB") && e.contains("1.0 GiB"),
            "{e}"
        );
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(25_600_000_000), "23.8 GiB");
    }

    #[test]
    fn meminfo_is_read() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(meminfo_available_kib(text), Some(22_000_000));
        assert_eq!(meminfo_available_kib("MemTotal: 5 kB\n"), None);
        assert!(available_memory().is_some_and(|b| b > 0));
    }
}
