#!/usr/bin/env bash
# The Python client (examples/client.py) against a real server: train a small digits model,
# start `rgshield serve` on a free port, send 20 embedded digits, check every answer (one
# probability per class, summing to 1, class = the most probable) and that at least 70% of the
# classes equal the labels, then stop the server with SIGTERM and require a clean exit (0).
# Usage: scripts/client_check.sh [RGSHIELD_BINARY]   (default: target/release/rgshield)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release/rgshield}"
command -v python3 >/dev/null 2>&1 || { echo "client_check: python3 not found" >&2; exit 1; }
[ -x "$bin" ] || { echo "client_check: no rgshield binary at $bin" >&2; exit 1; }

tmp="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# A small model in a few seconds (the settings of tests/cli.rs).
"$bin" train --data digits --widths 64,32,10 --method hybrid --seed 3 --finetune-epochs 60 \
    --sweeps 2 --samples 32 --out "$tmp/model" >"$tmp/train.log" 2>&1 \
    || { cat "$tmp/train.log" >&2; exit 1; }

"$bin" serve --model "$tmp/model" --addr 127.0.0.1:0 --output probabilities >"$tmp/serve.log" 2>&1 &
pid=$!
url=""
for _ in $(seq 100); do
    url="$(grep -o 'http://[0-9.]*:[0-9]*' "$tmp/serve.log" | head -n 1 || true)"
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/serve.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "client_check: the server printed no address" >&2; cat "$tmp/serve.log" >&2; exit 1; }

python3 examples/client.py --url "$url" --rows 20 --check --min-accuracy 0.7 | tee "$tmp/client.out"
[ "$(grep -c '^input [0-9]* (label [0-9]*): class [0-9]*; probabilities ' "$tmp/client.out")" = 20 ] \
    || { echo "client_check: expected 20 answer lines" >&2; exit 1; }

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=""
grep -q '^stopped$' "$tmp/serve.log" && [ "$rc" = 0 ] \
    || { echo "client_check: serve did not stop cleanly on SIGTERM (rc $rc)" >&2; cat "$tmp/serve.log" >&2; exit 1; }
echo "client_check: passed (server stopped on SIGTERM, rc 0)"
