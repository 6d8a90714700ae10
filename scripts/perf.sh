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
#   mixed    login=60,signup=30,refresh=10: its closed-loop peak, then open loop at half of it
#   capacity find-capacity for send (SLO p99 < 10 ms, errors < 0.1 %)
#   memory   1,000,000 sends to distinct numbers, then the node's RSS (scripts/perf-memory.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-perf-report}
mkdir -p "$out"
cargo build --release -p otpd -p otpd-loadtest
bin=target/release
# The node (pinned, limits out of reach), start_node, stop_node, lt, base_cpus.
# shellcheck source=scripts/lib/node.sh
source scripts/lib/node.sh

start_node
lt run --scenario send --users 5000 --connections 64 --duration 20s --baseline "${base_cpus[@]}" --out "$out/send"
lt run --scenario verify --users 100000 --prepare 100000 --connections 64 --duration 20s --baseline "${base_cpus[@]}" --out "$out/verify"
# "Half of peak" is the mix's own: its scenarios verify codes and write sessions, so its peak
# is well below send's (an open loop at half of send's peak would overload it).
lt run --mix login=60,signup=30,refresh=10 --users 5000 --connections 64 --duration 15s --out "$out/mixed-peak"
mixed_peak=$(python3 -c "import json;r=json.load(open('$out/mixed-peak/report.json'))['runs'][0];print(int(r['scenarios_ok']/r['duration_s']))")
lt run --mix login=60,signup=30,refresh=10 --users 5000 --rate $((mixed_peak / 2)) --duration 20s --out "$out/mixed"
lt find-capacity --scenario send --users 5000 --slo-p99 10ms --slo-errors 0.001 --min-rate 2000 --max-rate 200000 \
  --step 10s --max-steps 10 --baseline "${base_cpus[@]}" --out "$out/capacity"

# Memory on a fresh node, so that earlier runs' accounts, sessions and caches do not count.
stop_node
scripts/perf-memory.sh "$out/memory"
