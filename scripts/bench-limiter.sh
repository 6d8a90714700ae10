#!/usr/bin/env bash
# Send-path throughput with the Redis limiter against the embedded default, in one run.
#
# Starts (on loopback only, in a temporary directory) one redis-server — or, with --cluster, a
# 3-master Redis Cluster — and four release `otpd` nodes: E (in-process limits) and R (limits in
# Redis), each also with the SMS spend budget (both scopes, never reached) and the conversion guard
# (mode record) on: EB, RB. wrk then drives `POST /v1/login` with a different phone number per request (no account:
# the whole send path but the enqueue; distinct numbers avoid the cooldown) against E and R in
# turn, `rounds` times each. The IP and prefix rules stay on, with limits too high to trip from
# one load generator. Prints req/s per run, the R/E and budget on/off ratios, and Redis EVALSHA calls per request
# (INFO commandstats). Stops only the processes it started, by PID.
#
# Usage: scripts/bench-limiter.sh [--cluster] [seconds per run (20)] [rounds (2)] [connections (64)]
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=0
if [ "${1:-}" = "--cluster" ]; then cluster=1; shift; fi
secs=${1:-20}
rounds=${2:-2}
conns=${3:-64}
bin=target/release/otpd
for tool in wrk redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian packages wrk, redis-server, redis-tools)"; exit 2; }
done
[ -x "$bin" ] || { echo "build first: cargo build --release"; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 300); do if eval "$1" >/dev/null 2>&1; then return 0; fi; sleep 0.05; done; echo "timed out: $1"; exit 1; }

redis_ports=()
redis_pids=()
start_redis() {
  local port=$1; shift
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis-$port.log" "$@" &
  pids+=($!)
  redis_pids+=($!)
  redis_ports+=("$port")
  wait_for "redis-cli -p $port ping | grep -q PONG"
}
if [ $cluster -eq 1 ]; then
  nodes=()
  for _ in 1 2 3; do
    port=$(( $(free_port) % 20000 + 20000 ))
    start_redis "$port" --cluster-enabled yes --cluster-config-file "nodes-$port.conf"
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  for p in "${redis_ports[@]}"; do wait_for "redis-cli -p $p cluster info | grep -q cluster_state:ok"; done
  redis_env=(OTPD_REDIS__CLUSTER_NODES="[\"${nodes[0]}\",\"${nodes[1]}\",\"${nodes[2]}\"]")
else
  port=$(free_port)
  start_redis "$port"
  redis_env=(OTPD_REDIS__URL="redis://127.0.0.1:$port")
fi

common=(OTPD_NODE__LOG_LEVEL=warn
  OTPD_LIMITS__IP_SEND='{ limit = 1000000000 }'
  OTPD_LIMITS__PREFIX_SEND='{ limit = 1000000000 }'
  OTPD_SECRETS__HASH_KEY=5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a)
# The SMS spend budget off, and on in both scopes (the total and every country) out of reach.
# The conversion guard off, and on in mode record (it counts every send, and these codes are
# never verified, so it must not refuse).
no_budget=(OTPD_LIMITS__SMS_BUDGET='{ daily = 0 }' OTPD_LIMITS__CONVERSION_GUARD='{ mode = "off" }')
budget=(OTPD_LIMITS__SMS_BUDGET='{ daily = 100000000, country_daily = 100000000 }'
  OTPD_LIMITS__CONVERSION_GUARD='{ mode = "record" }')
# Four nodes: E (in-process limits), EB (the same with the budget), R (limits in Redis), RB.
names=(E EB R RB)
declare -A node_port node_pid
start_node() { # name extra-env...
  local name=$1; shift
  node_port[$name]=$(free_port)
  env "${common[@]}" "$@" OTPD_NODE__DATA_DIR="$work/$name" OTPD_HTTP__LISTEN="127.0.0.1:${node_port[$name]}" \
    OTPD_ADMIN__LISTEN=127.0.0.1:0 "$bin" 2>"$work/$name.log" &
  node_pid[$name]=$!
  pids+=($!)
}
start_node E "${no_budget[@]}"
start_node EB "${budget[@]}"
start_node R "${no_budget[@]}" "${redis_env[@]}"
# Its own key prefix: R and RB send to the same numbers and must not meet each other's cooldowns.
start_node RB "${budget[@]}" "${redis_env[@]}" OTPD_REDIS__KEY_PREFIX=otpd-rb
for name in "${names[@]}"; do
  wait_for "curl -sf http://127.0.0.1:${node_port[$name]}/health/ready | grep -q '\"status\":\"ready\"'"
done

cat >"$work/login.lua" <<'LUA'
-- A different valid +1 202 number per request: exchange 200-899, line 0000-9999; each thread
-- and each run (BENCH_OFFSET) takes its own range.
local counter = 0
base = 0 -- set per thread by setup()
local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")
local threads = 0
function setup(thread)
  thread:set("base", threads * 1000000)
  threads = threads + 1
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local n = offset + base + counter
  local exchange = 200 + math.floor(n / 10000) % 700
  local body = string.format('{"phone":"+1202%03d%04d"}', exchange, n % 10000)
  return wrk.format(nil, "/v1/login", nil, body)
end
LUA

evalsha_calls() {
  local total=0
  for p in "${redis_ports[@]}"; do
    n=$(redis-cli -p "$p" info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p')
    total=$((total + ${n:-0}))
  done
  echo "$total"
}

# CPU time (ms, user + system) a set of processes has used so far.
cpu_ms() {
  local total=0 ticks
  for pid in "$@"; do
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    total=$((total + ticks))
  done
  echo $((total * 1000 / $(getconf CLK_TCK)))
}

run() { # name port offset -> prints "requests rps non2xx p50 p99"
  local out
  out=$(BENCH_OFFSET=$3 wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$work/login.lua" "http://127.0.0.1:$2" 2>&1)
  echo "$out" >"$work/wrk-$1-$3.txt"
  local reqs rps non2xx p50 p99
  reqs=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
  non2xx=$(echo "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p')
  p50=$(echo "$out" | sed -n 's/^ *50% *\([0-9.a-z]*\).*/\1/p')
  p99=$(echo "$out" | sed -n 's/^ *99% *\([0-9.a-z]*\).*/\1/p')
  echo "$reqs $rps ${non2xx:-0} $p50 $p99"
}

echo "wrk -t2 -c$conns -d${secs}s POST /v1/login, distinct numbers; $( [ $cluster -eq 1 ] && echo '3-master Redis Cluster' || echo 'one redis-server')"
printf '%-6s %-5s %10s %10s %8s %8s %8s %12s %12s %s\n' round node requests req/s non-2xx p50 p99 'otpd µs/req' 'redis µs/req' 'evalsha/req'
declare -A sum
for name in "${names[@]}"; do sum[$name]=0; done
for round in $(seq 1 "$rounds"); do
  offset=$(( (round - 1) * 2000000 ))
  for name in "${names[@]}"; do
    before=$(evalsha_calls)
    c0=$(cpu_ms "${node_pid[$name]}"); d0=$(cpu_ms "${redis_pids[@]}")
    read -r reqs rps bad p50 p99 < <(run "$name" "${node_port[$name]}" "$offset")
    c1=$(cpu_ms "${node_pid[$name]}"); d1=$(cpu_ms "${redis_pids[@]}")
    after=$(evalsha_calls)
    otpd_us=$(python3 -c "print(f'{($c1 - $c0) * 1000 / $reqs:.1f}')")
    if [ "${name:0:1}" = R ]; then
      per=$(python3 -c "print(f'{($after - $before) / $reqs:.3f}')")
      redis_us=$(python3 -c "print(f'{($d1 - $d0) * 1000 / $reqs:.1f}')")
    else
      per=-; redis_us=-
    fi
    printf '%-6s %-5s %10s %10s %8s %8s %8s %12s %12s %s\n' "$round" "$name" "$reqs" "$rps" "$bad" "$p50" "$p99" "$otpd_us" "$redis_us" "$per"
    sum[$name]=$(python3 -c "print(${sum[$name]} + $rps)")
  done
done
for p in "${redis_ports[@]}"; do
  echo "redis :$p $(redis-cli -p "$p" info commandstats | grep -E '^cmdstat_evalsha' | tr -d '\r')"
done
python3 -c "
e, eb, r, rb = ${sum[E]}, ${sum[EB]}, ${sum[R]}, ${sum[RB]}
n = $rounds
print(f'mean req/s: E {e / n:.0f}, EB {eb / n:.0f}, R {r / n:.0f}, RB {rb / n:.0f}')
print(f'redis/embedded = {r / e:.2f}; with the SMS budget / without: embedded {eb / e:.2f}, redis {rb / r:.2f}')
"
curl -s "http://127.0.0.1:${node_port[RB]}/health/ready"; echo
