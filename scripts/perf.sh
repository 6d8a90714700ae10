#!/usr/bin/env bash
# Measures otpd on this machine the way docs/PERFORMANCE.md reports it: release builds, the node
# pinned to CPU 0 and the load generator to CPU 1 (when there are two), every otpd figure next
# to the bare hyper baseline measured by the same harness in the same run.
#
#   scripts/perf.sh [out-dir]        # default: perf-report/
#
# Steps (each writes its own report folder under out-dir):
#   send     closed loop, 64 connections, 20 s: POST /v1/login for signed-up users
#   verify   closed loop, 64 connections: POST /v1/login/verify with pre-issued codes
#   mixed    open loop at half the measured send capacity: login=60,signup=30,refresh=10
#   capacity find-capacity for send (SLO p99 < 10 ms, errors < 0.1 %)
#   memory   1,000,000 sends to distinct numbers, then the node's RSS (scripts/perf-memory.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-perf-report}
mkdir -p "$out"
cargo build --release -p otpd -p otpd-loadtest
bin=target/release
cpus=$(nproc)
pin_node=""; pin_load=""
base_cpus=()
if [ "$cpus" -ge 2 ] && command -v taskset >/dev/null; then
  pin_node="taskset -c 0"; pin_load="taskset -c 1"; base_cpus=(--baseline-cpus 0)
fi

# Cooldown and limits out of reach: the harness is one client address reusing a modest pool of
# users on few number prefixes (docs/USING.md, "Rate limits"); everything else is the default.
unlimited='{ limit = 1000000000 }'
node=""; data=""
stop_node() {
  if [ -n "$node" ]; then kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; fi
  if [ -n "$data" ]; then rm -rf "$data"; fi
  node=""; data=""
}
trap stop_node EXIT
# A fresh node with an empty data directory; sets node, data and target.
start_node() {
  stop_node
  data=$(mktemp -d)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  OTPD_NODE__DATA_DIR=$data OTPD_HTTP__LISTEN=127.0.0.1:$port OTPD_ADMIN__LISTEN=127.0.0.1:0 OTPD_NODE__LOG_LEVEL=warn \
  OTPD_OTP__RESEND_COOLDOWN=0s OTPD_OTP__MAX_SENDS_PER_WINDOW=1000000000 \
  OTPD_LIMITS__IP_SEND="$unlimited" OTPD_LIMITS__IP_VERIFY="$unlimited" OTPD_LIMITS__PREFIX_SEND="$unlimited" \
  OTPD_LIMITS__IDENTIFIER_LOGIN="$unlimited" OTPD_LIMITS__IDENTIFIER_REGISTER="$unlimited" \
  OTPD_LIMITS__IDENTIFIER_RESEND="$unlimited" OTPD_LIMITS__IDENTIFIER_VERIFY="$unlimited" \
  OTPD_LIMITS__SMS_BUDGET='{ daily = 100000000 }' \
  OTPD_LIMITS__CONVERSION_GUARD='{ mode = "record" }' \
    $pin_node $bin/otpd 2>"$data/node.log" & node=$!
  target=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -sf "$target/health/live" >/dev/null && return; sleep 0.1; done
  cat "$data/node.log" >&2; echo "perf: the node did not start" >&2; exit 1
}
lt() { $pin_load $bin/otpd-loadtest "$@" --target "$target" --outbox "$data/outbox.jsonl" --user-cooldown 0s --quiet; }

start_node
lt run --scenario send --users 5000 --connections 64 --duration 20s --baseline "${base_cpus[@]}" --out "$out/send"
lt run --scenario verify --users 100000 --prepare 100000 --connections 64 --duration 20s --baseline "${base_cpus[@]}" --out "$out/verify"
send_rps=$(python3 -c "import json;print(int(json.load(open('$out/send/report.json'))['runs'][0]['requests_per_s']))")
lt run --mix login=60,signup=30,refresh=10 --users 5000 --rate $((send_rps / 2 / 3)) --duration 20s --out "$out/mixed"
lt find-capacity --scenario send --users 5000 --slo-p99 10ms --slo-errors 0.001 --min-rate 2000 --max-rate 200000 \
  --step 10s --max-steps 10 --baseline "${base_cpus[@]}" --out "$out/capacity"

# Memory on a fresh node, so that earlier runs' accounts, sessions and caches do not count.
stop_node
scripts/perf-memory.sh "$out/memory"
