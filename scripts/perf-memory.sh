#!/usr/bin/env bash
# The memory step of scripts/perf.sh on its own: a fresh node (release build, pinned to CPU 0),
# 1,000,000 POST /v1/login to distinct numbers without accounts from the load generator (CPU 1),
# then the node's RSS from /proc and `otpd_challenges_live` from /metrics.
#
#   scripts/perf-memory.sh [out-dir] [tracked|off]     # default: perf-report/memory, tracked
#
# The node is the one scripts/lib/node.sh starts for perf.sh. `tracked`: its rules, every limit
# out of the harness' reach (the rules are still evaluated and their windows kept). `off`: the per-identifier,
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
# shellcheck source=scripts/lib/node.sh
source scripts/lib/node.sh

case "$rules" in
  tracked) extra=() ;;
  off)
    extra=()
    for rule in IP_SEND IP_VERIFY PREFIX_SEND IDENTIFIER_LOGIN IDENTIFIER_REGISTER IDENTIFIER_RESEND IDENTIFIER_VERIFY; do
      extra+=("OTPD_LIMITS__$rule={ limit = 0 }")
    done ;;
  *) echo "perf-memory: rules must be tracked or off, got $rules" >&2; exit 2 ;;
esac
ops=$(free_port)
start_node OTPD_ADMIN__LISTEN="127.0.0.1:$ops" "${extra[@]}"
curl -sf "$target/health/ready" >/dev/null || { cat "$data/node.log" >&2; echo "perf-memory: the node is not ready" >&2; exit 1; }

rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$node/status")
lt run --scenario send-unknown --connections 64 --duration 600s --max-scenarios 1000000 --out "$out"
sleep 5
rss_after=$(awk '/VmRSS/ {print $2}' "/proc/$node/status")
rss_peak=$(awk '/VmHWM/ {print $2}' "/proc/$node/status")
# `/metrics` is served on the ops listener only.
live=$(curl -sf "http://127.0.0.1:$ops/metrics" | awk '/^otpd_challenges_live[ {]/ {s += $NF} END {print s}')
echo "{\"rules\": \"$rules\", \"rss_kib_idle\": $rss_before, \"rss_kib_after_1m_sends\": $rss_after, \"rss_kib_peak\": $rss_peak, \"live_challenges\": ${live:-null}}" |
  tee "$out/rss.json"
