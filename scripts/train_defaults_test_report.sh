#!/usr/bin/env bash
# Issue 14 items 1–2: the final report on the TEST split, with the defaults in force
# (`TrainParams::for_method`, chosen on the validation split by scripts/select_train_defaults.sh):
# hybrid at N = 1…8 and eq14 at N = 1…6, seeds 1, 2, 3, digits, served output S = 64.
# Usage: scripts/train_defaults_test_report.sh OUT_DIR [BIN] [PREVIOUS_HYBRID_FLAGS] [PREVIOUS_EQ14_FLAGS]
# (OUT_DIR is required: the kept reports of each round live in their own folder.)
# Writes OUT_DIR/test_report_{hybrid,eq14}.{json,md} and OUT_DIR/test_report.md (both tables), and,
# for comparison only, the same with the previous defaults (test_report_previous_*), restored by
# the flags given (by default the defaults before issue 14's first round; "-" skips a method whose
# defaults did not change).
set -euo pipefail
out="${1:?usage: scripts/train_defaults_test_report.sh OUT_DIR [BIN] [PREVIOUS_HYBRID_FLAGS] [PREVIOUS_EQ14_FLAGS]}"
bin="${2:-./target/dev-opt/rgshield}"
previous_hybrid="${3:---finetune-stochastic true --patience 8}"
previous_eq14="${4:---pretrain-epochs 60 --cd-k 1}"
mkdir -p "$out"
report="$out/test_report.md"
echo "# Test report (issue 14): served TEST accuracy on digits with the defaults of the binary that ran it" >"$report"
echo >>"$report"
echo "Written by \`scripts/train_defaults_test_report.sh\`; no flag besides the ones shown: every training setting is the method's default." >>"$report"
for spec in hybrid:1,2,3,4,5,6,7,8 eq14:1,2,3,4,5,6; do
    method="${spec%%:*}" depths="${spec#*:}"
    cmd="rgshield bench depth --data digits --methods $method --depths $depths --seeds 1,2,3"
    "$bin" bench depth --data digits --methods "$method" --depths "$depths" --seeds 1,2,3 \
        --json "$out/test_report_$method.json" >"$out/test_report_$method.md.tmp"
    { echo "\`$cmd\`"; echo; cat "$out/test_report_$method.md.tmp"; } >"$out/test_report_$method.md"
    rm "$out/test_report_$method.md.tmp"
    { echo; echo "## $method"; echo; echo "\`$cmd --json test_report_$method.json\`"; echo;
      sed -n '/^median over seeds/,$p' "$out/test_report_$method.md"; } >>"$report"
done
# For comparison only (no choice reads it): the previous defaults, restored by flags.
echo >>"$report"
echo "## For comparison: the previous defaults on the same test split (chosen no setting)" >>"$report"
for spec in "hybrid:1,2,3,4,5,6,7,8:$previous_hybrid" "eq14:1,2,3,4,5,6:$previous_eq14"; do
    IFS=: read -r method depths flags <<<"$spec"
    [ "$flags" = "-" ] && continue
    cmd="rgshield bench depth --data digits --methods $method --depths $depths --seeds 1,2,3 $flags"
    # shellcheck disable=SC2086
    "$bin" bench depth --data digits --methods "$method" --depths "$depths" --seeds 1,2,3 $flags \
        --json "$out/test_report_previous_$method.json" >"$out/test_report_previous_$method.md.tmp"
    { echo "\`$cmd\`"; echo; cat "$out/test_report_previous_$method.md.tmp"; } \
        >"$out/test_report_previous_$method.md"
    rm "$out/test_report_previous_$method.md.tmp"
    { echo; echo "### $method, previous defaults"; echo; echo "\`$cmd\`"; echo;
      sed -n '/^median over seeds/,$p' "$out/test_report_previous_$method.md"; } >>"$report"
done
jq -s '{hybrid: .[0], eq14: .[1]}' "$out/test_report_hybrid.json" "$out/test_report_eq14.json" \
    >"$out/test_report.json"
cat "$report"
