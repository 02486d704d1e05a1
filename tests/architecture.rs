//! The dependency graph of `src/` runs one way (README "Architecture"; `lib.rs`'s module map):
//!
//! `data → {error, util, params, progress, report, linalg} → model → sample → {train, rg}
//!  → {perturb, defence, guard} → experiments → {serve, bench} → cli`
//!
//! and `exact`, the enumeration oracle, is used by tests only. This test reads every source file
//! (without comments, its `#[cfg(test)]` part and the `tests.rs`/`tests_*.rs` files, which may use
//! anything),
//! collects the
//! crate's top-level modules it names (`crate::X`, or `rgshield::X` in the binary) and checks that
//! each points to its own layer or one below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layer of each top-level module; a module may use its own layer and lower ones.
fn layer(module: &str) -> Option<usize> {
    Some(match module {
        "data" => 0,
        "error" | "util" | "params" | "progress" | "report" | "linalg" => 1,
        "model" => 2,
        "sample" => 3,
        "train" | "rg" => 4,
        "perturb" | "defence" | "guard" => 5,
        "experiments" => 6,
        "serve" | "bench" => 7,
        "cli" => 8,
        _ => return None,
    })
}

/// Items re-exported at the crate root, by the module that defines them.
fn root_item(name: &str) -> Option<&'static str> {
    Some(match name {
        "Error" | "Result" => "error",
        "DeepRbm" | "Rbm" => "model",
        "Params" | "Valid" => "params",
        "Progress" | "NoProgress" => "progress",
        _ => return None,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`lib` for lib.rs; the binary's files are `cli`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    match first.as_ref() {
        "main.rs" => "cli".into(),
        f => f.trim_end_matches(".rs").to_string(),
    }
}

/// The top-level modules named after `prefix` (e.g. `crate::`) in `code`, with `{a, b}` groups.
fn named(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn dependencies_run_one_way_and_only_tests_use_the_oracle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for f in &files {
        // Test modules (`tests.rs`, `tests_*.rs`, included under #[cfg(test)]) may use anything.
        if f.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "tests.rs" || n.starts_with("tests_"))
        {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let from = module_of(&src, f);
        let prefix = if from == "cli" {
            "rgshield::"
        } else {
            "crate::"
        };
        for name in named(&code, prefix) {
            let to = match root_item(&name) {
                Some(m) => m.to_string(),
                None => name.clone(),
            };
            if to == from {
                continue;
            }
            *seen.entry(format!("{from} → {to}")).or_default() += 1;
            if to == "exact" {
                violations.push(format!(
                    "{}: production code uses the test oracle `exact`",
                    f.display()
                ));
                continue;
            }
            let (lf, lt) = match (from.as_str(), layer(&from), layer(&to)) {
                ("lib", _, _) => continue,
                ("exact", _, Some(lt)) => (4, lt),
                (_, Some(lf), Some(lt)) => (lf, lt),
                _ => {
                    violations.push(format!(
                        "{}: `{prefix}{name}`: module {to} (or {from}) has no layer in this test",
                        f.display()
                    ));
                    continue;
                }
            };
            if lt > lf {
                violations.push(format!(
                    "{}: {from} (layer {lf}) uses {to} (layer {lt}), a dependency backwards",
                    f.display()
                ));
            }
        }
    }
    assert!(
        !seen.is_empty(),
        "no dependency found: the scan read nothing"
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_scanner_reads_paths_and_groups() {
    let code = "use crate::rg::basis;\nuse crate::{DeepRbm, sample::argmax};\nlet x = crate::util::mix_seed(1, 2);";
    assert_eq!(
        named(code, "crate::"),
        vec!["rg", "DeepRbm", "sample", "util"]
    );
    assert_eq!(layer("experiments"), Some(6));
    assert_eq!(root_item("Valid"), Some("params"));
}
