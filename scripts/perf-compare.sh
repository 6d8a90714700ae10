#!/usr/bin/env bash
# Side-by-side send/verify of two builds (directories holding release `otpd` and
# `otpd-loadtest` binaries), alternating, as scripts/perf.sh measures them (node on CPU 0,
# generator on CPU 1, the bare hyper baseline in each run). Use it to check that a change
# costs nothing: build the old commit in a worktree, copy both binaries aside, then
#   scripts/perf-compare.sh before=/tmp/old after=target/release [rounds]
# Reports go under $OTPD_PERF_OUT (default: a temporary directory); the summary is printed.
set -euo pipefail
rounds=${3:-2}
unlimited='{ limit = 1000000000 }'
node=""; data=""
stop_node() { if [ -n "$node" ]; then kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; fi; [ -n "$data" ] && rm -rf "$data"; node=""; data=""; }
trap stop_node EXIT
start_node() {
  stop_node; data=$(mktemp -d); local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  OTPD_NODE__DATA_DIR=$data OTPD_HTTP__LISTEN=127.0.0.1:$port OTPD_ADMIN__LISTEN=127.0.0.1:0 OTPD_NODE__LOG_LEVEL=warn \
  OTPD_OTP__RESEND_COOLDOWN=0s OTPD_OTP__MAX_SENDS_PER_WINDOW=1000000000 \
  OTPD_LIMITS__IP_SEND="$unlimited" OTPD_LIMITS__IP_VERIFY="$unlimited" OTPD_LIMITS__PREFIX_SEND="$unlimited" \
  OTPD_LIMITS__IDENTIFIER_LOGIN="$unlimited" OTPD_LIMITS__IDENTIFIER_REGISTER="$unlimited" \
  OTPD_LIMITS__IDENTIFIER_RESEND="$unlimited" OTPD_LIMITS__IDENTIFIER_VERIFY="$unlimited" \
  OTPD_LIMITS__SMS_BUDGET='{ daily = 100000000 }' \
  OTPD_LIMITS__CONVERSION_GUARD='{ mode = "record" }' \
    taskset -c 0 "$1/otpd" 2>"$data/node.log" & node=$!
  target=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -sf "$target/health/live" >/dev/null && return; sleep 0.1; done
  cat "$data/node.log" >&2; exit 1
}
out=${OTPD_PERF_OUT:-$(mktemp -d)}; mkdir -p "$out"
for r in $(seq "$rounds"); do
  for spec in "$1" "$2"; do
    label=${spec%%=*}; bin=${spec#*=}
    start_node "$bin"
    lt() { taskset -c 1 "$bin/otpd-loadtest" "$@" --target "$target" --outbox "$data/outbox.jsonl" --user-cooldown 0s --quiet; }
    lt run --scenario send --users 5000 --connections 64 --duration 20s --baseline --baseline-cpus 0 --out "$out/$label-$r-send" >/dev/null
    lt run --scenario verify --users 100000 --prepare 100000 --connections 64 --duration 20s --baseline --baseline-cpus 0 --out "$out/$label-$r-verify" >/dev/null
    for s in send verify; do
      python3 - "$out/$label-$r-$s/report.json" "$label" "$r" "$s" <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); o=d['runs'][0]; base=d['baseline']['requests_per_s']
print(f"{sys.argv[2]:>8} round {sys.argv[3]} {sys.argv[4]:>6}: {o['requests_per_s']:9.0f} req/s  hyper {base:9.0f}  ratio {o['requests_per_s']/base:.3f}  p99 {o['overall']['p99_ms']:.1f} ms")
PY
    done
    stop_node
  done
done | tee "$out/summary.txt"
