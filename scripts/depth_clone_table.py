#!/usr/bin/env python3
"""Tabulate the clone side of the depth study against N from a `clone-eval --from-json` summary.

Reads ROOT/summary.json (written by scripts/depth_clone_study.sh) and prints one Markdown table:
per depth, the victims' served accuracy, the clone accuracies at budget 600 under none, top1,
rg-vertex B and random-vertex at eps 0.6 (realised L1 0.6), the paired difference rg-vertex-B -
random-vertex at L1 0.6 for the distill and distill-select thieves with its Holm-level interval
and Holm-adjusted p (the summary's secondary family: every comparison of every depth together),
and the protection ratios of distill. Usage: scripts/depth_clone_table.py ROOT
"""
import json
import re
import sys

root = sys.argv[1]
s = json.load(open(f"{root}/summary.json"))
L1 = 0.6


def depth_of(protocol):
    return int(re.search(r"-d(\d+)$", protocol).group(1))


def fmt(x, d=3):
    return "–" if x is None else f"{x:.{d}f}"


rows = []
for run in s["runs"]:
    n = depth_of(run["protocol"])
    acc = [v["served_accuracy"] for v in run["victims"]]
    stats = {}
    for budget, points in run["budgets"]:
        if budget != 600:
            continue
        for p in points:
            stats[p["defence"].split(":")[0]] = p
    ratio = {}
    for attacker, budget, family, values in run["ratios"]:
        if attacker == "distill" and budget == 600:
            ratio[family] = values[2]  # L1 grid 0.1, 0.3, 0.6, 1.0
    comps = {}
    for c in s["secondary"]:
        if c["protocol"] == run["protocol"] and abs(c["l1"] - L1) < 1e-9 \
                and c["first"] == "rg-vertex:objective=B" and c["second"] == "random-vertex":
            comps[c["attacker"]] = c
    rows.append((n, acc, stats, ratio, comps))

print(f"Clone side of the depth study (digits, budget 600, 3 victims x 5 attacker seeds, L1 {L1}).")
print("Clone accuracy: mean over victims x seeds [95% interval over victims]. Difference: "
      "rg-vertex B - random-vertex, mean [Holm-level interval], Holm-adjusted p over the "
      f"{len(s['secondary'])} secondary comparisons of all depths.\n")
print("| N | victims served | none | top1 | rg-vertex B | random-vertex | B - random (distill) | Holm p | "
      "B - random (distill-select) | Holm p | ratio B / random (distill) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n, acc, stats, ratio, comps in sorted(rows, key=lambda r: r[0]):
    def clone(fam, att="distill"):
        p = stats.get(fam)
        if not p:
            return "–"
        c = p["clones"].get(att)
        return f"{c['mean']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"

    def comp(att):
        c = comps.get(att)
        if not c:
            return "–", "–"
        e = c["estimate"]["mean"]
        lo, hi = c["interval"]
        return f"{e:+.3f} [{lo:+.3f}, {hi:+.3f}]", f"{c['holm']['adjusted_p']:.3f}"

    d, dp = comp("distill")
    ds, dsp = comp("distill-select")
    accs = ", ".join(f"{a:.3f}" for a in acc)
    print(f"| {n} | {accs} | {clone('none')} | {clone('none', 'distill-top1')} | {clone('rg-vertex')} | "
          f"{clone('random-vertex')} | {d} | {dp} | {ds} | {dsp} | "
          f"{fmt(ratio.get('rg-vertex:objective=B'), 2)} / {fmt(ratio.get('random-vertex'), 2)} |")
