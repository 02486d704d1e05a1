//! The README quotes only numbers kept in `docs/results/` (issue 15, item 1), and the cheap ones
//! are reproduced here: the `$ rgshield train …` and `$ rgshield eval …` transcripts of the README
//! are run again and must print what the README and the kept files show.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The transcripts of a Markdown text: each `$ rgshield ARGS` line inside a code block with the
/// output lines below it (up to a blank line or the end of the block).
fn transcripts(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut in_code = false;
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            out.extend(current.take());
            continue;
        }
        if !in_code {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ rgshield ") {
            out.extend(current.take());
            current = Some((cmd.to_string(), Vec::new()));
        } else if line.trim().is_empty() {
            out.extend(current.take());
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line.to_string());
        }
    }
    out.extend(current);
    out
}

/// A line with its timing masked: "… in 1.3 s" → "… in _ s" (times depend on the machine).
fn mask_seconds(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let timed = i > 0
            && words[i - 1] == "in"
            && words.get(i + 1) == Some(&"s")
            && w.parse::<f64>().is_ok();
        out.push(if timed { "_" } else { w });
    }
    out.join(" ")
}

fn masked(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| mask_seconds(l)).collect()
}

#[test]
fn the_transcript_parser_and_mask_work() {
    let t =
        transcripts("x\n```text\n$ rgshield a b\none in 1.5 s\ntwo\n\n$ rgshield c\nthree\n```\n");
    assert_eq!(
        t,
        vec![
            ("a b".into(), vec!["one in 1.5 s".into(), "two".into()]),
            ("c".into(), vec!["three".into()]),
        ]
    );
    assert_eq!(mask_seconds("trained x in 12.0 s"), "trained x in _ s");
    assert_eq!(
        mask_seconds("accuracy 0.9351 in digits"),
        "accuracy 0.9351 in digits"
    );
}

#[test]
fn readme_is_short() {
    let n = read("README.md").lines().count();
    assert!(n <= 200, "README.md has {n} lines (at most 200)");
}

/// Every row of the README's results table names a value and the kept file it comes from; the
/// file must contain the value.
#[test]
fn every_results_row_is_in_its_kept_file() {
    let readme = read("README.md");
    let section = readme
        .split("\n## Results")
        .nth(1)
        .expect("README has a Results section");
    let rows: Vec<&str> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| what"))
        .collect();
    assert!(rows.len() >= 3, "results table not found");
    for row in rows {
        let cells: Vec<&str> = row.split(" | ").collect();
        let value = cells[1].trim();
        let link = cells[cells.len() - 1];
        let path = link
            .split("](")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_else(|| panic!("no link in {row}"));
        assert!(
            path.starts_with("docs/results/"),
            "{row}: not kept in docs/results"
        );
        let kept = read(path);
        assert!(
            kept.contains(value),
            "{path} does not contain {value} ({row})"
        );
    }
}

/// The `train` and `eval` transcripts of the README: the same as the kept files, and reproduced
/// by running them now (in a scratch directory, so `runs/d3` is created there).
#[test]
fn readme_train_and_eval_transcripts_reproduce() {
    let readme = transcripts(&read("README.md"));
    let kept: Vec<(String, Vec<String>)> = ["train_d3.txt", "eval_d3.txt"]
        .iter()
        .flat_map(|f| {
            transcripts(&format!(
                "```\n{}```\n",
                read(&format!("docs/results/2026-11-30/{f}"))
            ))
        })
        .collect();
    let cheap: Vec<&(String, Vec<String>)> = readme
        .iter()
        .filter(|(cmd, _)| cmd.starts_with("train ") || cmd.starts_with("eval "))
        .collect();
    assert_eq!(
        cheap.len(),
        2,
        "README's train and eval transcripts: {readme:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    for (cmd, expected) in cheap {
        let k = kept
            .iter()
            .find(|(c, _)| c == cmd)
            .unwrap_or_else(|| panic!("`rgshield {cmd}` is not kept in docs/results/2026-11-30"));
        assert_eq!(
            masked(&k.1),
            masked(expected),
            "README and kept file differ for {cmd}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_rgshield"))
            .args(cmd.split_whitespace())
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "rgshield {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<String> = stdout.lines().map(str::to_string).collect();
        assert_eq!(
            masked(&got),
            masked(expected),
            "rgshield {cmd} now prints otherwise"
        );
    }
}
