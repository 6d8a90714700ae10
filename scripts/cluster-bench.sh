#!/usr/bin/env bash
# Measures otpd across nodes on this machine (docs/PERFORMANCE.md, "Across nodes"): what
# forwarding a challenge command to its owner costs one request, and send throughput of three
# clustered nodes against one, each next to the bare hyper baseline of the same run.
#
#   scripts/cluster-bench.sh [out-dir]        # default: cluster-report/ (~2 minutes after the build)
#
# Every node is the release binary with a cluster config through OTPD_* variables, as
# tests/it/cluster.rs starts them: store.kind = "scylla" on an in-memory CQL server
# (examples/cql_memory_server.rs, kassandra: NOT ScyllaDB, one lock for every request), limits
# and cooldowns in one real redis-server, SMS through the Twilio provider to the harness'
# Twilio-shaped endpoint (every node sends there, so the harness gets each code whichever node
# sent it). Limits, cooldown and send cap are out of the harness' reach, as in scripts/perf.sh.
#
#   a) three nodes joined in one cluster:
#      cluster_latency   sequential POST /v1/login and wrong-code POST /v1/login/verify through
#                        node 1, local vs forwarded identifiers interleaved (3000 per class)
#      send              otpd-loadtest, closed loop, 64 connections, 20 s, round-robin over the
#                        three nodes, after the bare hyper --baseline
#   b) one node (same store kind, same Redis, cluster enabled without seeds, so the code path is
#      the same), on a fresh CQL server and a flushed Redis: the same send run.
#
# Nothing is pinned: three nodes, the CQL server, Redis and the load generator share the two
# cores as the scheduler likes (pinning five busy processes to two CPUs by hand would measure
# the pinning). The baseline server is unpinned too. CPU per process is sampled from /proc
# every second and reported for each send run's measured 20 s.
#
# Every process this script starts is stopped by its PID on exit; logs land in out-dir/logs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-cluster-report}
requests=${CLUSTER_BENCH_REQUESTS:-3000}
duration=${CLUSTER_BENCH_DURATION:-20}
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)

command -v redis-server >/dev/null || { echo "cluster-bench: redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
cargo build --release -p otpd -p otpd-loadtest
cargo build --release -p otpd --example cql_memory_server --example cluster_latency
bin=${CARGO_TARGET_DIR:-target}/release
# As in production: no backtrace captured with every error (with RUST_BACKTRACE=1 in the
# caller's shell, ~7 % of the CQL server's CPU went to unwinding for the error values it makes).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

# Shared secrets of the bench cluster (not secret: loopback only, gone with the run).
hash_key=5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a
admin=cluster-bench-admin-token-0123456789
cookie=cluster-bench-cookie-0123456789-abcdefghijklmnop
unlimited='{ limit = 1000000000 }'
work=$(mktemp -d)

# Listening ports come from below the kernel's ephemeral range (ip_local_port_range starts at
# 32768 by default), never twice: a port merely found free could meanwhile become the local end
# of some node's outgoing connection, and the harness' SMS endpoint binds late.
next_port=$((20000 + RANDOM % 10000))
# alloc_port VAR: sets VAR to a loopback port that binds now and was not handed out before.
alloc_port() {
  until python3 -c "import socket; socket.socket().bind(('127.0.0.1', $next_port))" 2>/dev/null; do
    next_port=$((next_port + 1))
  done
  printf -v "$1" %d "$next_port"
  next_port=$((next_port + 1))
}
alloc_port sms_port

# PIDs of what this script started, by role.
redis_pid=""; cql_pid=""; sampler_pid=""; lt_pid=""
node_pids=(); node_urls=(); node_names=()

stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_nodes() {
  local pid
  for pid in "${node_pids[@]}"; do stop_pid "$pid"; done
  node_pids=(); node_urls=(); node_names=()
}
cleanup() {
  stop_pid "$lt_pid"
  stop_pid "$sampler_pid"
  stop_nodes
  stop_pid "$cql_pid"
  stop_pid "$redis_pid"
  cp "$work"/*.log "$out/logs/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_redis() {
  local port
  alloc_port port
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --protected-mode yes --daemonize no \
    --loglevel warning --dir "$work" --logfile "$work/redis.log" & redis_pid=$!
  redis_url=redis://127.0.0.1:$port
  for _ in $(seq 100); do [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && return; sleep 0.1; done
  echo "cluster-bench: redis-server did not start" >&2; exit 1
}

# A fresh in-memory CQL server; sets cql_addr (the address the example says it listens on).
start_cql() {
  stop_pid "$cql_pid"
  local file=$work/cql-$1.addr port
  alloc_port port
  : >"$file"
  "$bin/examples/cql_memory_server" "127.0.0.1:$port" >"$file" 2>"$work/cql-$1.log" & cql_pid=$!
  for _ in $(seq 100); do
    cql_addr=$(head -n1 "$file")
    [ -n "$cql_addr" ] && return
    sleep 0.1
  done
  echo "cluster-bench: the CQL server did not start" >&2; exit 1
}

# start_node NAME SEEDS(json list) LOGTAG: starts one node and waits until it is ready.
start_node() {
  local name=$1 seeds=$2 tag=$3 http cport data
  alloc_port http; alloc_port cport
  data=$work/$tag-$name; mkdir -p "$data"
  env -u OTPD_CONFIG \
    OTPD_HTTP__LISTEN=127.0.0.1:$http OTPD_ADMIN__LISTEN=127.0.0.1:0 OTPD_ADMIN__OPS_ON_PUBLIC_LISTENER=true \
    OTPD_NODE__DATA_DIR="$data" \
    OTPD_NODE__LOG_FORMAT=text OTPD_NODE__LOG_LEVEL=warn,otpd_actors::cluster=info \
    OTPD_STORE__KIND=scylla OTPD_SCYLLA__CONTACT_POINTS="[\"$cql_addr\"]" OTPD_SCYLLA__KEYSPACE=otpd_bench \
    OTPD_SCYLLA__REPLICATION_FACTOR=1 OTPD_SCYLLA__AWAIT_SCHEMA_AGREEMENT=false \
    OTPD_REDIS__URL="$redis_url" \
    OTPD_SECRETS__HASH_KEY=$hash_key OTPD_SECRETS__ADMIN_TOKEN=$admin \
    OTPD_TOKENS__ALGORITHM=HS256 OTPD_TOKENS__HS256_SECRET=cluster-bench-hs256-secret-0123456789abcdef \
    OTPD_DELIVERY__PROVIDER=twilio OTPD_TWILIO__ACCOUNT_SID=AC0123456789abcdef0123456789abcdef \
    OTPD_TWILIO__AUTH_TOKEN=cluster-bench-twilio-token OTPD_TWILIO__FROM=+15005550006 \
    OTPD_TWILIO__BASE_URL=http://127.0.0.1:$sms_port \
    OTPD_OTP__RESEND_COOLDOWN=0s OTPD_OTP__MAX_SENDS_PER_WINDOW=1000000000 \
    OTPD_LIMITS__IP_SEND="$unlimited" OTPD_LIMITS__IP_VERIFY="$unlimited" OTPD_LIMITS__PREFIX_SEND="$unlimited" \
    OTPD_LIMITS__IDENTIFIER_LOGIN="$unlimited" OTPD_LIMITS__IDENTIFIER_REGISTER="$unlimited" \
    OTPD_LIMITS__IDENTIFIER_RESEND="$unlimited" OTPD_LIMITS__IDENTIFIER_VERIFY="$unlimited" \
    OTPD_LIMITS__SMS_BUDGET='{ daily = 100000000 }' \
    OTPD_LIMITS__CONVERSION_GUARD='{ mode = "record" }' \
    OTPD_CLUSTER__ENABLED=true OTPD_CLUSTER__NODE_NAME="$name" OTPD_CLUSTER__LISTEN=127.0.0.1:$cport \
    OTPD_CLUSTER__SEEDS="$seeds" OTPD_CLUSTER__COOKIE=$cookie \
    "$bin/otpd" </dev/null >/dev/null 2>"$work/$tag-$name.log" &
  node_pids+=($!); node_urls+=("http://127.0.0.1:$http"); node_names+=("$name")
  cluster_ports+=("$cport")
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/health/ready")" = 200 ] && return
    sleep 0.1
  done
  cat "$work/$tag-$name.log" >&2; echo "cluster-bench: $name did not become ready" >&2; exit 1
}

# Waits until every running node sees exactly N members.
wait_members() {
  local n=$1 url ok
  for _ in $(seq 300); do
    ok=1
    for url in "${node_urls[@]}"; do
      [ "$(curl -s "$url/health/ready" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["cluster"]["members"]))' 2>/dev/null)" = "$n" ] || ok=0
    done
    [ "$ok" = 1 ] && return
    sleep 0.1
  done
  echo "cluster-bench: membership did not converge on $n members" >&2; exit 1
}

# CPU sampler: once a second, each named process' CPU ticks by thread name, and the machine's.
cat >"$work/cpu_sampler.py" <<'PY'
import json, os, sys, time
out, procs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
def threads(pid):
    by = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            s = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        comm, rest = s[s.index("(") + 1:s.rindex(")")], s[s.rindex(")") + 2:].split()
        by[comm] = by.get(comm, 0) + int(rest[11]) + int(rest[12])
    return by
with open(out, "a") as f:
    while True:
        cpu = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        sample = {"t": time.time(), "machine": {"busy": sum(cpu) - cpu[3] - cpu[4], "all": sum(cpu)}, "procs": {}}
        for name, pid in procs:
            try:
                sample["procs"][name] = threads(pid)
            except OSError:
                pass
        f.write(json.dumps(sample) + "\n"); f.flush()
        time.sleep(1)
PY
# cpu_report SAMPLES T_FROM T_TO: CPU per process (100 % = one core) and by thread, as markdown.
cat >"$work/cpu_report.py" <<'PY'
import json, os, sys
samples = [json.loads(l) for l in open(sys.argv[1])]
t0, t1 = float(sys.argv[2]), float(sys.argv[3])
inside = [s for s in samples if t0 <= s["t"] <= t1]
a, b = inside[0], inside[-1]
secs, hz = b["t"] - a["t"], os.sysconf("SC_CLK_TCK")
pct = lambda ticks: 100.0 * ticks / hz / secs
rows, total = [], 0.0
for name in b["procs"]:
    if name not in a["procs"]:
        continue
    th = {k: v - a["procs"][name].get(k, 0) for k, v in b["procs"][name].items()}
    p = pct(sum(th.values())); total += p
    top = sorted(th.items(), key=lambda kv: -kv[1])[:4]
    rows.append(f"| {name} | {p:.0f} % | " + ", ".join(f"{k} {pct(v):.0f} %" for k, v in top if v > 0) + " |")
m = 100.0 * (b["machine"]["busy"] - a["machine"]["busy"]) / (b["machine"]["all"] - a["machine"]["all"]) * os.cpu_count()
print(f"CPU over {secs:.0f} s of the measured run (100 % = one core; machine: {os.cpu_count()} cores, {m:.0f} % busy in all):\n")
print("| process | CPU | busiest threads |\n| --- | ---: | --- |")
print("\n".join(rows))
print(f"| everything else on the machine | {max(m - total, 0):.0f} % | |\n")
PY

# start_sampler FILE [name=pid ...]: samples the nodes, the CQL server, Redis and the given PIDs.
start_sampler() {
  local file=$1 args=() i; shift
  for i in "${!node_pids[@]}"; do args+=("${node_names[$i]}=${node_pids[$i]}"); done
  python3 "$work/cpu_sampler.py" "$file" "${args[@]}" "kassandra=$cql_pid" "redis=$redis_pid" "$@" & sampler_pid=$!
}

# send_run TAG: the send scenario against every running node, next to the bare hyper
# baseline; then CPU of the measured window (the run's last $duration seconds).
send_run() {
  local tag=$1 targets=() url end
  for url in "${node_urls[@]}"; do targets+=(--target "$url"); done
  "$bin/otpd-loadtest" run --scenario send --users 5000 --connections 64 --duration "${duration}s" --baseline \
    --codes twilio --sms-listen "127.0.0.1:$sms_port" --user-cooldown 0s --quiet "${targets[@]}" \
    --out "$out/$tag" >"$out/$tag.log" 2>&1 & lt_pid=$!
  # The harness joins the sample: its generator and Twilio endpoint are CPU on this machine too.
  start_sampler "$work/cpu-$tag.jsonl" "otpd-loadtest=$lt_pid"
  wait "$lt_pid" || { cat "$out/$tag.log" >&2; echo "cluster-bench: otpd-loadtest failed" >&2; exit 1; }
  lt_pid=""
  end=$(date +%s.%N)
  sleep 1
  stop_pid "$sampler_pid"; sampler_pid=""
  cat "$out/$tag.log"
  python3 "$work/cpu_report.py" "$work/cpu-$tag.jsonl" "$(python3 -c "print($end - $duration - 1.5)")" \
    "$(python3 -c "print($end - 0.5)")" | tee "$out/$tag-cpu.md"
}

# Node metrics worth keeping after a run (forwarding counts and round trip, errors by status).
save_metrics() {
  local tag=$1 i
  for i in "${!node_urls[@]}"; do
    curl -s "${node_urls[$i]}/metrics" | grep -E '^otpd_cluster_|^otpd_http_requests_total' \
      >"$out/$tag-metrics-${node_names[$i]}.txt" || true
  done
}

echo "== a) three nodes"
start_redis
start_cql 3-nodes
cluster_ports=()
start_node otpd-1 "[]" 3-nodes
first_port=${cluster_ports[0]}
start_node otpd-2 "[\"127.0.0.1:$first_port\"]" 3-nodes
start_node otpd-3 "[\"127.0.0.1:$first_port\",\"127.0.0.1:${cluster_ports[1]}\"]" 3-nodes
wait_members 3
"$bin/examples/cluster_latency" --node "${node_urls[0]}" --hash-key "$hash_key" --admin-token "$admin" \
  --requests "$requests" --members 3 --out "$out/latency.json" | tee "$out/latency.md"
send_run send-3-nodes
save_metrics send-3-nodes
wait_members 3

echo "== b) one node"
stop_nodes
redis-cli -u "$redis_url" flushall >/dev/null
start_cql 1-node
cluster_ports=()
start_node otpd-1 "[]" 1-node
wait_members 1
send_run send-1-node
save_metrics send-1-node

python3 - "$out" <<'PY' | tee "$out/summary.md"
import json, sys
out = sys.argv[1]
r3, r1 = (json.load(open(f"{out}/{t}/report.json")) for t in ("send-3-nodes", "send-1-node"))
def row(name, r):
    b, o = r["baseline"], r["runs"][0]
    return (f"| {name} | {b['requests_per_s']:.0f} | {o['requests_per_s']:.0f} | {o['requests_per_s'] / b['requests_per_s']:.3f} "
            f"| {o['overall']['p50_ms']:.1f} / {o['overall']['p99_ms']:.1f} | {o['errors']} {dict(o['errors_by_kind']) or ''} |")
print("| send, closed loop 64 conn | bare hyper req/s | otpd req/s | otpd / hyper | p50 / p99 ms | errors |")
print("| --- | ---: | ---: | ---: | --- | --- |")
print(row("3 nodes", r3)); print(row("1 node", r1))
t3, t1 = r3["runs"][0]["requests_per_s"], r1["runs"][0]["requests_per_s"]
print(f"\n3 nodes / 1 node: {t3 / t1:.2f}")
PY
