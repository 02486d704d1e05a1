#!/usr/bin/env bash
# Fuzz rgshield's parsers with libFuzzer on the stable toolchain (docs/results/fuzzing.md).
#
#   fuzz/run.sh [SECONDS] [TARGET...]     default: 600 s each of model_load csv idx predict_request
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler. cargo-fuzz passes nightly-only
# flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. Targets run one
# at a time, each on one core, starting from the committed corpus fuzz/corpus/TARGET and growing
# fuzz/corpus-work/TARGET; at the end the work corpus is minimised (the fewest files that keep
# every covered edge) back into fuzz/corpus/TARGET. Crashes land in fuzz/artifacts/TARGET; logs in
# fuzz/logs. NO_BUILD=1 skips the build (binaries already built).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(model_load csv idx predict_request)
export RUSTC_BOOTSTRAP=1
[ -n "${NO_BUILD:-}" ] || cargo fuzz build -O
bin=target/x86_64-unknown-linux-gnu/release
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus-work/$t" "artifacts/$t"
    cp -n "corpus/$t/"* "corpus-work/$t/" 2>/dev/null || true
    if [ "$secs" -gt 0 ]; then
        timeout $((secs + 300)) "$bin/$t" "corpus-work/$t" -max_total_time="$secs" \
            -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
            >"logs/$t.log" 2>&1 || echo "$t: fuzzer exited with $? (see logs/$t.log, artifacts/$t)"
        grep -E "DONE|stat::number_of_executed_units|ERROR" "logs/$t.log" || true
    fi
    rm -rf "corpus/$t.min"
    mkdir "corpus/$t.min"
    "$bin/$t" -merge=1 -set_cover_merge=1 -use_counters=0 "corpus/$t.min" "corpus-work/$t" >"logs/$t.merge.log" 2>&1
    rm -rf "corpus/$t"
    mv "corpus/$t.min" "corpus/$t"
    echo "$t: corpus $(ls "corpus/$t" | wc -l) files, $(du -sh "corpus/$t" | cut -f1)"
done
