#!/usr/bin/env bash
# Issue 14 items 1–2: choose the training defaults of `rgshield train` on the VALIDATION split
# (`--validation`: a stratified 20% hold-out of the training split; the test split is never read).
#
# The grid is fixed here, before any run: each candidate is a set of flags applied on top of the
# method's defaults at the time of the run (`TrainParams::for_method`). Every candidate is trained
# at depths N = 1…8 (hybrid) or 1…6 (eq14), hidden width 64, seeds 1, 2, 3, on digits.
#
# Rule: per method, the candidate with the largest minimum over N of the median over seeds of the
# served validation accuracy; ties (to 1e-9) go to the larger mean over N of those medians, then to
# the earlier candidate in the list (the first is the defaults in force when the grid was declared).
#
# Usage: scripts/select_train_defaults.sh [OUT_DIR] [BIN]
# Writes OUT_DIR/grid/<method>_<candidate>.json (bench depth --json) and .md (its table), then
# OUT_DIR/validation_grid.json and validation_grid.md (the summary and the pick).
set -euo pipefail
out="${1:-docs/results/2026-11-30-train-defaults}"
bin="${2:-./target/dev-opt/rgshield}"
mkdir -p "$out/grid"

# name|flags (applied on top of the defaults of --methods)
hybrid_grid=(
    "h0-defaults|"
    "h1-meanfield|--finetune-stochastic false"
    "h2-meanfield-noflip|--finetune-stochastic false --finetune-input-noise 0"
    "h3-init1|--init-scale 1.0"
    "h4-init1-meanfield|--init-scale 1.0 --finetune-stochastic false"
    "h5-meanfield-patience16|--finetune-stochastic false --patience 16"
    "h6-init1-patience16|--init-scale 1.0 --patience 16"
    "h7-meanfield-lr0.001|--finetune-stochastic false --finetune-lr 0.001"
)
eq14_grid=(
    "e0-defaults|"
    "e1-frozen-lower|--lower-lr-factor 0"
    "e2-cd5|--cd-k 5"
    "e3-persistent|--persistent"
    "e4-pretrain120|--pretrain-epochs 120"
    "e5-pretrain120-frozen-lower|--pretrain-epochs 120 --lower-lr-factor 0"
    "e6-pretrain120-cd5|--pretrain-epochs 120 --cd-k 5"
    "e7-slow-long|--lr 0.05 --sweeps 200 --patience 30"
    "e8-anneal10|--anneal-sweeps 10"
    "e9-anneal30-patience30|--anneal-sweeps 30 --patience 30"
)

run_grid() {
    local method="$1" depths="$2"
    shift 2
    for entry in "$@"; do
        local name="${entry%%|*}" flags="${entry#*|}"
        local stem="$out/grid/${method}_${name}"
        if [ -f "$stem.json" ]; then
            echo "skip $stem (exists)"
            continue
        fi
        echo "== $method $name: $flags"
        # shellcheck disable=SC2086
        "$bin" bench depth --data digits --validation --methods "$method" --depths "$depths" \
            --seeds 1,2,3 $flags --json "$stem.json.tmp" >"$stem.md.tmp"
        { echo "\`rgshield bench depth --data digits --validation --methods $method --depths $depths --seeds 1,2,3 $flags\`"; echo; cat "$stem.md.tmp"; } >"$stem.md"
        rm "$stem.md.tmp"
        mv "$stem.json.tmp" "$stem.json"
    done
}

run_grid hybrid 1,2,3,4,5,6,7,8 "${hybrid_grid[@]}"
run_grid eq14 1,2,3,4,5,6 "${eq14_grid[@]}"

grid_lines() { for e in "$@"; do echo "$e"; done; }
{
    grid_lines "${hybrid_grid[@]}" | sed 's/^/hybrid|/'
    grid_lines "${eq14_grid[@]}" | sed 's/^/eq14|/'
} >"$out/grid/candidates.txt"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
cands = [l.rstrip("\n").split("|", 2) for l in open(f"{out}/grid/candidates.txt")]
summary = {"split": "digits:validation (20% stratified hold-out of the training split)",
           "seeds": [1, 2, 3],
           "rule": "max over candidates of min over N of the median over seeds of the served "
                   "validation accuracy; ties: larger mean over N, then earlier candidate",
           "methods": {}}
md = ["# Validation grid (issue 14): served accuracy on digits:validation, median over seeds 1,2,3",
      "", "Written by `scripts/select_train_defaults.sh`. Rule: " + summary["rule"] + ".", ""]
for method in ["hybrid", "eq14"]:
    rows = []
    for m, name, flags in cands:
        if m != method:
            continue
        d = json.load(open(f"{out}/grid/{method}_{name}.json"))
        med = {x["depth"]: x["median"] for x in d["medians"]}
        depths = sorted(med)
        secs = sum(r["seconds"] for r in d["rows"])
        rows.append({"candidate": name, "flags": flags, "medians": [med[n] for n in depths],
                     "depths": depths, "min": min(med.values()),
                     "mean": sum(med.values()) / len(med), "train_seconds": secs})
    best = rows[0]
    for r in rows[1:]:
        if r["min"] > best["min"] + 1e-9 or (abs(r["min"] - best["min"]) <= 1e-9 and r["mean"] > best["mean"] + 1e-9):
            best = r
    summary["methods"][method] = {"candidates": rows, "picked": best["candidate"],
                                  "picked_flags": best["flags"]}
    depths = rows[0]["depths"]
    md += [f"## {method}", "",
           "| candidate | flags | " + " | ".join(f"N={n}" for n in depths) + " | min | mean | train s |",
           "|---|---|" + "---|" * (len(depths) + 3)]
    for r in rows:
        mark = " **(picked)**" if r is best else ""
        md.append(f"| {r['candidate']}{mark} | `{r['flags'] or '(defaults)'}` | "
                  + " | ".join(f"{v:.4f}" for v in r["medians"])
                  + f" | {r['min']:.4f} | {r['mean']:.4f} | {r['train_seconds']:.0f} |")
    md += ["", f"Picked for {method}: `{best['candidate']}` (`{best['flags'] or 'the defaults'}`).", ""]
json.dump(summary, open(f"{out}/validation_grid.json", "w"), indent=1)
open(f"{out}/validation_grid.md", "w").write("\n".join(md))
print("\n".join(md))
PY
