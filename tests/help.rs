//! Every subcommand and flag has help, and no help text names a feature as missing (issue 15,
//! item 6). The subcommands are enumerated from the binary's own `--help`, recursively, so a new
//! command is checked without editing this file.

mod common;
use common::rgshield;

/// Phrases that say a feature is absent or postponed; none belongs in the help of a release.
const STALE: [&str; 12] = [
    "arrive",
    "not yet",
    "not implemented",
    "unimplemented",
    "coming soon",
    "todo",
    "tbd",
    "later version",
    "will be added",
    "is missing",
    "are missing",
    "placeholder",
];

/// One entry of a help section: its spec (`--flag <V>`, a command name) and its help text.
#[derive(Debug, PartialEq)]
struct Entry {
    spec: String,
    help: String,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The entries of the section `name` ("Commands", "Options", "Arguments") of a clap help text,
/// in either layout: help on the spec's line after two spaces, or on the lines below it,
/// indented further.
fn section(text: &str, name: &str) -> Vec<Entry> {
    let header = format!("{name}:");
    // The section runs to the next header (a line at column 0); blank lines inside are skipped.
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim_end() != header)
        .skip(1)
        .take_while(|l| l.trim().is_empty() || indent(l) > 0)
        .filter(|l| !l.trim().is_empty())
        .peekable();
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        let body = line.trim_start();
        let (spec, same_line) = match body.find("  ") {
            Some(i) => (body[..i].to_string(), body[i..].trim().to_string()),
            None => (body.to_string(), String::new()),
        };
        let mut help = same_line;
        // Help on the following lines: indented deeper than any entry's spec.
        while let Some(next) = lines.peek() {
            if indent(next) > indent(line).max(6) + 1 {
                help = format!("{help} {}", next.trim()).trim().to_string();
                lines.next();
            } else {
                break;
            }
        }
        out.push(Entry { spec, help });
    }
    out
}

/// The problems of one help text: entries without help, stale phrases, an empty description.
fn problems(cmd: &str, text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let about = text.split("Usage:").next().unwrap_or("").trim();
    if about.is_empty() {
        bad.push(format!("`{cmd}`: no description above Usage"));
    }
    for s in ["Commands", "Options", "Arguments"] {
        for e in section(text, s) {
            if e.help.is_empty() {
                bad.push(format!("`{cmd}`: {} has no help", e.spec));
            }
        }
    }
    for p in STALE {
        if let Some(at) = text.lines().find(|l| l.to_lowercase().contains(p)) {
            bad.push(format!("`{cmd}`: says \"{p}\": {}", at.trim()));
        }
    }
    bad
}

/// Every subcommand path (`["bench", "rg"]`, …) below `path`, from the `Commands:` sections.
fn commands(path: &[String], found: &mut Vec<(Vec<String>, String)>) {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let (ok, text, err) = rgshield(&args);
    assert!(ok, "rgshield {}: {err}", args.join(" "));
    for e in section(&text, "Commands") {
        let name = e.spec.split_whitespace().next().unwrap_or("").to_string();
        if name == "help" {
            continue;
        }
        let mut sub = path.to_vec();
        sub.push(name);
        commands(&sub, found);
    }
    found.push((path.to_vec(), text));
}

#[test]
fn every_command_and_flag_has_current_help() {
    let mut found = Vec::new();
    commands(&[], &mut found);
    let names: Vec<String> = found.iter().map(|(p, _)| p.join(" ")).collect();
    // The enumeration itself works: the known commands are among those found.
    for c in [
        "train",
        "serve",
        "demo",
        "bench perf",
        "bench depth-study",
        "defences",
    ] {
        assert!(names.iter().any(|n| n == c), "{c} not found in {names:?}");
    }
    let mut bad = Vec::new();
    for (path, text) in &found {
        let cmd = format!("rgshield {}", path.join(" "));
        let options = section(text, "Options");
        assert!(
            options.iter().any(|e| e.spec.contains("--help")),
            "{cmd}: no Options section parsed from\n{text}"
        );
        bad.extend(problems(cmd.trim(), text));
    }
    assert!(bad.is_empty(), "help problems:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_finds_a_flag_without_help_and_a_stale_text() {
    // Both layouts clap uses: help beside the spec, and help on the next lines.
    let text = "Do a thing\n\nUsage: x [OPTIONS]\n\nCommands:\n  go    Go somewhere\n  stay\n\n\
                Options:\n      --alpha <A>\n          The alpha\n      --beta <B>\n\
                \x20     --gamma      Arrives later with the gamma module\n  -h, --help   Print help\n";
    assert_eq!(
        section(text, "Options"),
        vec![
            Entry {
                spec: "--alpha <A>".into(),
                help: "The alpha".into()
            },
            Entry {
                spec: "--beta <B>".into(),
                help: String::new()
            },
            Entry {
                spec: "--gamma".into(),
                help: "Arrives later with the gamma module".into()
            },
            Entry {
                spec: "-h, --help".into(),
                help: "Print help".into()
            },
        ]
    );
    let p = problems("x", text);
    assert!(
        p.iter().any(|m| m.contains("--beta <B> has no help")),
        "{p:?}"
    );
    assert!(p.iter().any(|m| m.contains("stay has no help")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("\"arrive\"")), "{p:?}");
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        problems("x", "Usage: x\n\nOptions:\n  -h, --help  Print help\n")
            .iter()
            .any(|m| m.contains("no description"))
    );
}
