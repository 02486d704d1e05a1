#!/usr/bin/env bash
# The clone side of the depth study (issue 14 item 3): for N = 1…8, the SPEC §12 protocol on
# digits (the re-split of protocols/digits.json) with hybrid victims of hidden width 64 and depth N,
# 3 victims × 5 attacker seeds, the distill thief at budget 600, and the defences none, top1,
# rg-vertex B and random-vertex at ε 0.6 (realised L1 0.6). Every depth's protocol is written
# next to its rows; `clone-eval --from-json` summarises them together, and
# scripts/depth_clone_table.py tabulates rg-vertex-B − random-vertex and the protection ratio
# against N. The victims' training is pinned to ROOT/pinned_training.json (the hybrid's and eq. 14's
# defaults at commit c604613, when the runs were made), so a rerun trains what the kept run did.
# Usage: scripts/depth_clone_study.sh [OUT_ROOT] [DEPTHS]
set -euo pipefail
root="${1:-docs/results/2026-11-30-depth-study/clone}"
depths="${2:-1 2 3 4 5 6 7 8}"
# BIN: a binary built from this checkout (default: build the release one).
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=./target/release/rgshield
fi
bin="$BIN"
mkdir -p "$root"
training="$root/pinned_training.json"
dirs=()
for n in $depths; do
    widths="64"
    for _ in $(seq 2 "$n"); do widths="$widths, 64"; done
    widths="$widths, 10"
    dir="$root/d$n"
    mkdir -p "$root/protocols"
    proto="$root/protocols/d$n.json"
    cat >"$proto" <<JSON
{
  "name": "digits-d$n",
  "data": "digits",
  "victim_widths": [$widths],
  "victim_seeds": [1, 2, 3],
  "training": $(cat "$training"),
  "serve_samples": 64,
  "budgets": [600],
  "primary_budget": 600,
  "attacker_seeds": [1, 2, 3, 4, 5],
  "holdout_fraction": 0.2,
  "mlp": { "hidden": 100, "batch": 32, "weight_decay": 0.0001, "epochs": [20, 60, 200], "lr": [0.001, 0.003] },
  "detect_rows": 200,
  "transfer_inputs": 0,
  "transfer_epsilon": 1.0,
  "blocks": [
    {
      "name": "main",
      "defences": ["none", "top1", "rg-vertex:objective=B,eps=0.6", "random-vertex:eps=0.6"],
      "attackers": ["distill", "distill-top1", "distill-select"]
    }
  ]
}
JSON
    $bin clone-eval --protocol "$proto" --out "$dir" | tail -n 3
done
# Summarise every depth run under ROOT together (one Holm family), in depth order.
for dir in $(ls -d "$root"/d*/ | sort -V); do
    dirs+=(--from-json "$dir")
done
$bin clone-eval "${dirs[@]}" --out "$root"
python3 scripts/depth_clone_table.py "$root" > "$root/depth_table.md"
cat "$root/depth_table.md"
