#!/usr/bin/env bash
# Regenerates docs/report-example.html and docs/report-example.png: a find-capacity search of
# `send` (SLO p99 < 100 ms) on a fresh release node with scripts/perf.sh's settings (node and
# bare hyper server on CPU 0, generator on CPU 1), a sizing plan from it for 10 million users
# signing in twice a day at a peak factor of 10, and a screenshot in headless Chromium.
#
#   loadtest/scripts/report-example.sh [work-dir]      # ~3 minutes after the build
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cargo build --release --locked -p otpd -p otpd-loadtest
bin=target/release
pin_node=""; pin_load=""; base_cpus=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_node="taskset -c 0"; pin_load="taskset -c 1"; base_cpus=(--baseline-cpus 0)
fi
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
unlimited='{ limit = 1000000000 }'
OTPD_NODE__DATA_DIR=$data OTPD_HTTP__LISTEN=127.0.0.1:$port OTPD_ADMIN__LISTEN=127.0.0.1:0 OTPD_NODE__LOG_LEVEL=warn \
OTPD_OTP__RESEND_COOLDOWN=0s OTPD_OTP__MAX_SENDS_PER_WINDOW=1000000000 \
OTPD_LIMITS__IP_SEND="$unlimited" OTPD_LIMITS__IP_VERIFY="$unlimited" OTPD_LIMITS__PREFIX_SEND="$unlimited" \
OTPD_LIMITS__IDENTIFIER_LOGIN="$unlimited" OTPD_LIMITS__IDENTIFIER_REGISTER="$unlimited" \
OTPD_LIMITS__IDENTIFIER_RESEND="$unlimited" OTPD_LIMITS__IDENTIFIER_VERIFY="$unlimited" \
OTPD_LIMITS__SMS_BUDGET='{ daily = 100000000 }' OTPD_LIMITS__CONVERSION_GUARD='{ mode = "record" }' \
  $pin_node $bin/otpd 2>"$data/node.log" & node=$!
trap 'kill $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$data"' EXIT
target=http://127.0.0.1:$port
for _ in $(seq 100); do curl -sf "$target/health/live" >/dev/null && break; sleep 0.1; done
$pin_load $bin/otpd-loadtest find-capacity --target "$target" --outbox "$data/outbox.jsonl" --user-cooldown 0s --quiet \
  --scenario send --users 5000 --slo-p99 100ms --slo-errors 0.001 --min-rate 2000 --max-rate 40000 \
  --step 5s --generator-step 5s --max-steps 8 "${base_cpus[@]}" --out "$work/example"
$bin/otpd-loadtest plan --users 10000000 --logins-per-user 2 --peak-factor 10 --slo-p99 100ms --report "$work/example"
cp "$work/example/report.html" docs/report-example.html
node --experimental-websocket loadtest/tests/browser/check.mjs "$(command -v chromium)" docs/report-example.html \
  docs/report-example.png >/dev/null
# A palette of 64 colours keeps the screenshot small and loses nothing a reader needs.
if command -v pngquant >/dev/null; then pngquant --force --output docs/report-example.png 64 docs/report-example.png; fi
echo "docs/report-example.html ($(wc -c <docs/report-example.html) bytes) and docs/report-example.png written"
