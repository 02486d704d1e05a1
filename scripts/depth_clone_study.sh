#!/usr/bin/env bash
# Depth study of the defence (issue 4: "run it at depths N = 2, 4, 6"): train hybrid victims of
# hidden width 64 at N = 2, 3, 4, 6 on digits (seed 1), then clone-eval each with the same reduced
# grid and the same clone-training budget. Usage: scripts/depth_clone_study.sh [OUT_ROOT]
set -euo pipefail
root="${1:-runs/depth}"
bin=./target/release/rgshield
cargo build --release --quiet
for n in 2 3 4 6; do
    widths="64$(printf ',64%.0s' $(seq 2 $n)),10"
    dir="$root/d$n"
    if [ ! -f "$dir/model.json" ]; then
        $bin train --data digits --widths "$widths" --seed 1 --out "$dir"
    fi
    $bin clone-eval --model "$dir" --data digits --defences none,rg,random --epsilons 0.1,0.4 \
        --attackers eq14,distill --budget 1000 --seeds 5 \
        --clone-pretrain-epochs 20 --clone-sweeps 20 --out "$dir/clone" | tail -n 14
done
