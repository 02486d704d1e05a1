//! The short stable pass over the fuzz corpora: every file of `fuzz/corpus/TARGET/` (and of
//! `fuzz/regressions/TARGET/`, the inputs that once crashed) goes through the very entry point
//! the fuzz target `TARGET` runs (`fuzz/entry.rs`), which must not panic and checks what holds of
//! every accepted input. No fuzzing tool is needed; `docs/results/fuzzing.md` says how the corpora
//! were grown.

use std::path::Path;

#[path = "../fuzz/entry.rs"]
mod entry;

#[test]
fn every_corpus_file_of_every_fuzz_target_runs_through_its_entry_point_without_panicking() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for (target, run) in entry::TARGETS {
        let mut files = 0;
        for kind in ["corpus", "regressions"] {
            let dir = fuzz.join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                assert_eq!(kind, "regressions", "{}: missing", dir.display());
                continue;
            };
            for e in entries {
                let path = e.expect("corpus entry").path();
                let bytes = std::fs::read(&path).expect("read corpus file");
                files += 1;
                if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                    failures.push(path.display().to_string());
                }
            }
        }
        assert!(files > 0, "fuzz target {target} has an empty corpus");
    }
    assert!(failures.is_empty(), "panicked on {failures:#?}");
}
