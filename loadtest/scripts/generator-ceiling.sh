#!/usr/bin/env bash
# The load generator's own open-loop ceiling: otpd-loadtest offering `ping` to the bare hyper
# baseline server at a ladder of fixed rates, the server pinned to CPU 0 and the generator to
# CPU 1 (as scripts/perf.sh pins the node and the generator). The same commands for every
# binary given, so an old and a new build can be compared; list them alternately (a b a b) to
# spread the machine's noise.
#
#   loadtest/scripts/generator-ceiling.sh out-dir bin-a [bin-b ...]
#
# For each binary: each rate's achieved req/s, p50/p99/p99.9 and the generator's CPU (from
# /proc, so that old builds without their own CPU figure are measured the same way), the
# highest rate whose p99 stayed under 10 ms with 99 % of the offered requests answered, the
# first rate the generator could not keep up with (fewer than 99 % answered, or a p50 above
# 10 ms: it is saturated, not merely disturbed by one stall), and a closed-loop run of 64
# connections. A ladder stops at its first saturated rate. Run it under
# `flock /tmp/otpd-build.lock` on a shared machine.
set -euo pipefail
out=$1; shift
mkdir -p "$out"
pin_srv=""; pin_gen=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then pin_srv="taskset -c 0"; pin_gen="taskset -c 1"; fi
rates=(16000 24000 32000 40000 48000 56000 64000 80000 96000 112000 128000)
server=""
stop() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=""; fi; }
trap stop EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
i=0
for bin in "$@"; do
  i=$((i + 1))
  dir="$out/$i-$(basename "$bin")"
  mkdir -p "$dir"
  $pin_srv "$bin" baseline-server --listen 127.0.0.1:0 >"$dir/addr" & server=$!
  for _ in $(seq 50); do [ -s "$dir/addr" ] && break; sleep 0.1; done
  target="http://$(head -1 "$dir/addr")"
  best=0; saturated=none
  for rate in "${rates[@]}"; do
    $pin_gen "$bin" run --target "$target" --scenario ping --rate "$rate" --duration 6s --quiet \
      --out "$dir/$rate" >/dev/null 2>"$dir/$rate.log" & gen=$!
    sleep 1; g0=$(ticks $gen); sleep 4; g1=$(ticks $gen)
    wait $gen
    line=$(python3 - "$dir/$rate/report.json" "$rate" $((g1 - g0)) "$(getconf CLK_TCK)" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
rate, ticks, hz = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
o = run["overall"]
answered = run["requests"] >= 0.99 * rate * 6 and run["errors"] == 0
ok = o["p99_ms"] < 10 and answered
verdict = "ok" if ok else ("FAIL" if answered and o["p50_ms"] < 10 else "SATURATED")
print(f"{verdict} {rate:.0f}/s: {run['requests_per_s']:.0f} req/s, p50 {o['p50_ms']:.2f} p99 {o['p99_ms']:.2f} "
      f"p99.9 {o['p999_ms']:.2f} ms, generator CPU {ticks / hz / 4:.2f} cores")
PY
)
    echo "  $line" | tee -a "$dir/ladder.txt"
    case $line in ok*) best=$rate ;; SATURATED*) saturated=$rate; break ;; esac
  done
  $pin_gen "$bin" run --target "$target" --scenario ping --connections 64 --duration 10s --quiet \
    --out "$dir/closed" >/dev/null 2>"$dir/closed.log"
  closed=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['runs'][0]['requests_per_s']))" "$dir/closed/report.json")
  stop
  echo "$bin: highest rate with p99 < 10 ms $best/s; saturated at $saturated/s; closed loop, 64 connections: $closed req/s" |
    tee -a "$out/summary.txt"
done
