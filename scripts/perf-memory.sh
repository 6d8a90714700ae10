#!/usr/bin/env bash
# The memory step of scripts/perf.sh on its own: a fresh node (release build, pinned to CPU 0),
# 1,000,000 POST /v1/login to distinct numbers without accounts from the load generator (CPU 1),
# then the node's RSS from /proc and `otpd_challenges_live` from /metrics.
#
#   scripts/perf-memory.sh [out-dir] [tracked|off]     # default: perf-report/memory, tracked
#
# `tracked`: the node's default rules, with every limit set out of the harness' reach (as in
# perf.sh: the rules are still evaluated and their windows kept). `off`: the per-identifier,
# per-IP and per-prefix rules off (`limit = 0`), to tell the limiter's memory from the rest
# (the overall send cap, `otp.max_sends_per_window`, cannot be turned off and stays tracked).
# Extra OTPD_* variables in the environment reach the node (e.g. OTPD_STORE__CACHE_BYTES).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-perf-report/memory}
rules=${2:-tracked}
mkdir -p "$out"
cargo build --release -p otpd -p otpd-loadtest
bin=${CARGO_TARGET_DIR:-target}/release
pin_node=""; pin_load=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then pin_node="taskset -c 0"; pin_load="taskset -c 1"; fi

case "$rules" in
  tracked) rule='{ limit = 1000000000 }' ;;
  off) rule='{ limit = 0 }' ;;
  *) echo "perf-memory: rules must be tracked or off, got $rules" >&2; exit 2 ;;
esac
node=""; data=""
stop_node() {
  if [ -n "$node" ]; then kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; fi
  if [ -n "$data" ]; then rm -rf "$data"; fi
}
trap stop_node EXIT
data=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); ops=$(free_port)
OTPD_NODE__DATA_DIR=$data OTPD_HTTP__LISTEN=127.0.0.1:$port OTPD_ADMIN__LISTEN=127.0.0.1:$ops OTPD_NODE__LOG_LEVEL=warn \
OTPD_OTP__RESEND_COOLDOWN=0s OTPD_OTP__MAX_SENDS_PER_WINDOW=1000000000 \
OTPD_LIMITS__IP_SEND="$rule" OTPD_LIMITS__IP_VERIFY="$rule" OTPD_LIMITS__PREFIX_SEND="$rule" \
OTPD_LIMITS__IDENTIFIER_LOGIN="$rule" OTPD_LIMITS__IDENTIFIER_REGISTER="$rule" \
OTPD_LIMITS__IDENTIFIER_RESEND="$rule" OTPD_LIMITS__IDENTIFIER_VERIFY="$rule" \
OTPD_LIMITS__SMS_BUDGET='{ daily = 100000000 }' \
OTPD_LIMITS__CONVERSION_GUARD='{ mode = "record" }' \
  $pin_node "$bin/otpd" 2>"$data/node.log" & node=$!
target=http://127.0.0.1:$port
for _ in $(seq 100); do curl -sf "$target/health/live" >/dev/null && break; sleep 0.1; done
curl -sf "$target/health/ready" >/dev/null || { cat "$data/node.log" >&2; echo "perf-memory: the node did not start" >&2; exit 1; }

rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$node/status")
$pin_load "$bin/otpd-loadtest" run --scenario send-unknown --connections 64 --duration 600s --max-scenarios 1000000 \
  --target "$target" --outbox "$data/outbox.jsonl" --user-cooldown 0s --quiet --out "$out"
sleep 5
rss_after=$(awk '/VmRSS/ {print $2}' "/proc/$node/status")
rss_peak=$(awk '/VmHWM/ {print $2}' "/proc/$node/status")
# `/metrics` is served on the ops listener only.
live=$(curl -sf "http://127.0.0.1:$ops/metrics" | awk '/^otpd_challenges_live[ {]/ {s += $NF} END {print s}')
echo "{\"rules\": \"$rules\", \"rss_kib_idle\": $rss_before, \"rss_kib_after_1m_sends\": $rss_after, \"rss_kib_peak\": $rss_peak, \"live_challenges\": ${live:-null}}" |
  tee "$out/rss.json"
