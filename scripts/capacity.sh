#!/usr/bin/env bash
# The "capacity per core" table of docs/PERFORMANCE.md: for each scenario, on the embedded
# default and with limits in Redis, the capacity table (the highest open-loop arrival rate
# meeting p99 ≤ 5, 10, 25 and 50 ms with errors < 0.1 %) and the closed-loop peak, each next
# to the bare hyper baseline measured by the same harness in the same run on the same CPU.
#
#   scripts/capacity.sh [out-dir]        # default: capacity-report/; about 20 minutes (estimated)
#
# Release builds; the node pinned to CPU 0 and the load generator to CPU 1 (when there are two),
# limits and cooldowns out of reach, as scripts/perf.sh does (scripts/lib/node.sh). A fresh node
# per scenario and limiter. Scenarios (otpd-loadtest --scenario):
#   send          POST /v1/login for signed-up users
#   verify        POST /v1/login/verify with codes issued before the measurement
#   send-verify   the login flow: login → code from the outbox → login/verify
#   device-login  device-login/challenge → P-256 signature → device-login/verify
# Limiters: embedded (in-process, the default) and redis (one redis-server this script starts on
# loopback at a free port, pinned with the generator to CPU 1 so the node's core does only the
# node's work, flushed before each node, stopped by its PID). Per scenario and limiter:
#   <out>/<limiter>/<scenario>/peak/       run, closed loop, 64 connections, --baseline
#   <out>/<limiter>/<scenario>/capacity/   find-capacity: its generator check is the bare hyper
#                                          column; one search fills every row
# then <out>/summary.md gathers every table. Environment, for a shorter check:
#   SCENARIOS="send verify send-verify device-login"  LIMITERS="embedded redis"
#   PEAK=8s  STEP=4s  MAX_STEPS=8  RESOLUTION=0.1
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-capacity-report}
scenarios=${SCENARIOS:-send verify send-verify device-login}
limiters=${LIMITERS:-embedded redis}
peak=${PEAK:-8s}
step=${STEP:-4s}
max_steps=${MAX_STEPS:-8}
resolution=${RESOLUTION:-0.1}
mkdir -p "$out"
case " $limiters " in *" redis "*)
  for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "needs $tool (Debian packages redis-server, redis-tools)" >&2; exit 2; }
  done ;;
esac
cargo build --release -p otpd -p otpd-loadtest
bin=${CARGO_TARGET_DIR:-target}/release
# shellcheck source=scripts/lib/node.sh
source scripts/lib/node.sh

redis_pid=""; redis_dir=""
cleanup() {
  stop_node
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  if [ -n "$redis_dir" ]; then rm -rf "$redis_dir"; fi
}
trap cleanup EXIT

redis_port=""
start_redis() {
  redis_dir=$(mktemp -d)
  redis_port=$(free_port)
  # shellcheck disable=SC2086
  $pin_load redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" \
    --logfile "$redis_dir/redis.log" &
  redis_pid=$!
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && return; sleep 0.05; done
  echo "redis-server did not start" >&2; exit 1
}

# Users signed up before each measurement, and codes issued for verify.
users_for() {
  case $1 in
    verify) echo 40000 ;; # and as many codes: the closed loop ends when they are used up
    device-login) echo 2000 ;;
    *) echo 5000 ;;
  esac
}

peak_rate() { # report.json → scenarios/s of the closed-loop run
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; print(int((r['scenarios_ok'] + r['scenarios_failed']) / max(r['duration_s'], 1e-9)))" "$1"
}

for limiter in $limiters; do
  extra=()
  if [ "$limiter" = redis ]; then
    [ -n "$redis_pid" ] || start_redis
    extra=(OTPD_REDIS__URL="redis://127.0.0.1:$redis_port")
  fi
  for scenario in $scenarios; do
    dir=$out/$limiter/$scenario
    mkdir -p "$dir"
    if [ "$limiter" = redis ]; then redis-cli -p "$redis_port" flushall >/dev/null; fi
    start_node "${extra[@]}"
    users=$(users_for "$scenario")
    echo "== $limiter / $scenario: closed-loop peak" >&2
    # verify: the run ends when its prepared codes are used up (its rate is over that time).
    lt run --scenario "$scenario" --users "$users" --prepare "$users" --connections 64 --duration "$peak" \
      --baseline "${base_cpus[@]}" --out "$dir/peak" >/dev/null
    rate=$(peak_rate "$dir/peak/report.json")
    [ "$rate" -gt 0 ] || { echo "$limiter / $scenario: the closed loop completed nothing" >&2; exit 1; }
    # The search starts at half the closed-loop peak and may go from 1/64 of it to 1.5 times it.
    min=$(( rate / 64 > 20 ? rate / 64 : 20 ))
    prepare=()
    if [ "$scenario" = verify ]; then
      # Codes for about half the steps at the peak, at most 100 000 (each is a user signed up
      # and a code issued first, ~5 000 requests/s of setup); the search stops, and says so, if
      # they run out during a step (that step is not counted).
      codes=$(( rate * (${step%s} + 1) * max_steps / 2 ))
      codes=$(( codes > 100000 ? 100000 : codes ))
      prepare=(--prepare "$codes"); users=$codes
    fi
    echo "== $limiter / $scenario: find-capacity from $((rate / 2))/s" >&2
    lt find-capacity --scenario "$scenario" --users "$users" "${prepare[@]}" \
      --start-rate $((rate / 2)) --min-rate "$min" --max-rate $((rate * 3 / 2)) \
      --step "$step" --warmup 1s --generator-step "$step" --max-steps "$max_steps" --resolution "$resolution" \
      --slo-p99 10ms --slo-errors 0.001 "${base_cpus[@]}" --out "$dir/capacity" >/dev/null
    stop_node
  done
done

python3 - "$out" "$limiters" "$scenarios" <<'PY' | tee "$out/summary.md"
import json, sys, datetime
out, limiters, scenarios = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def fmt(v):
    return "—" if v is None else f"{v:,.0f}".replace(",", " ")
def cell(b):
    if b is None:
        return "—"
    if b.get("rate") is None:
        return f"< {fmt(b.get('above'))}" if b.get("above") is not None else "—"
    return ("≥ " if b.get("above") is None else "") + fmt(b["rate"])
print(f"# Capacity per core ({datetime.date.today()}, scripts/capacity.sh)\n")
print("Arrivals/s (scenarios) meeting each p99 bound of the node's answers with errors < 0.1 %; bare hyper in "
      "req/s from the same run's generator check; closed-loop peak at 64 connections, scenarios/s and the node's "
      "answers/s, beside bare hyper's req/s. A code's delivery is not an answer of the node.\n")
print("| limits | scenario | p99 ≤ 5 ms | ≤ 10 ms | ≤ 25 ms | ≤ 50 ms | bare hyper req/s at 5 / 10 / 25 / 50 ms "
      "| closed-loop peak scenarios/s (req/s) | bare hyper closed loop req/s | peak / hyper |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for lim in limiters:
    for sc in scenarios:
        try:
            cap = json.load(open(f"{out}/{lim}/{sc}/capacity/report.json"))
            peak = json.load(open(f"{out}/{lim}/{sc}/peak/report.json"))
        except OSError:
            continue
        rows = cap["capacity_table"]["rows"]
        node = [cell(r["otpd"]) for r in rows]
        hyper = " / ".join(cell({**r["baseline"], "rate": r["baseline"].get("rps")}) for r in rows)
        run = peak["runs"][0]
        scen = (run["scenarios_ok"] + run["scenarios_failed"]) / max(run["duration_s"], 1e-9)
        # The node's answers (a code's delivery is not one), as the capacity table counts them.
        rps = (run.get("answers") or run["overall"])["requests_per_s"]
        base = (peak.get("baseline") or {}).get("requests_per_s")
        ratio = f"{rps / base:.3f}" if base else "—"
        print(f"| {lim} | {sc} | {' | '.join(node)} | {hyper} | {fmt(scen)} ({fmt(rps)}) | {fmt(base)} | {ratio} |")
PY
