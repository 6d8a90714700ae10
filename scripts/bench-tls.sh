#!/usr/bin/env bash
# What TLS costs a node: requests/s over HTTPS next to plain HTTP, in one run, with wrk.
#
#   scripts/bench-tls.sh [seconds] [connections]      # defaults: 10 s, 64 connections
#
# Two release nodes (one with http.tls_cert_file, one without), each pinned to CPU 0 while
# wrk runs on CPU 1, serve GET /health/live (a tiny JSON answer: the transport's cost, not
# the engine's). For each: keep-alive (every connection reused), and a new connection per
# request (`Connection: close`: a TCP handshake, and over TLS a full TLS 1.3 handshake with
# an ECDSA P-256 certificate, per request). Prints each figure and its ratio to plain HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
bin=target/release/otpd
[ -x "$bin" ] || { echo "bench-tls: build first: cargo build --release -p otpd" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench-tls: wrk is not installed" >&2; exit 1; }
pin_node=""; pin_load=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then pin_node="taskset -c 0"; pin_load="taskset -c 1"; fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 600 "$work/key.pem"

declare -A pid_of
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start <name> [tls]: a node with its own data directory; sets url to its base URL (not in a
# $(…) subshell, whose exit would run the cleanup).
start() {
  local name=$1 p extra=()
  p=$(port)
  url=""
  mkdir -p "$work/$name"
  if [ "${2:-}" = tls ]; then
    extra=(OTPD_HTTP__TLS_CERT_FILE="$work/cert.pem" OTPD_HTTP__TLS_KEY_FILE="$work/key.pem")
  fi
  env OTPD_NODE__DATA_DIR="$work/$name" OTPD_HTTP__LISTEN="127.0.0.1:$p" OTPD_ADMIN__LISTEN=127.0.0.1:0 \
    OTPD_NODE__LOG_LEVEL=warn "${extra[@]}" $pin_node "$bin" 2>"$work/$name.log" &
  pids+=($!)
  pid_of[$name]=$!
  local scheme=http; [ "${2:-}" = tls ] && scheme=https
  for _ in $(seq 100); do
    curl -skf "$scheme://127.0.0.1:$p/health/live" >/dev/null && { url="$scheme://127.0.0.1:$p"; return; }
    sleep 0.1
  done
  cat "$work/$name.log" >&2; echo "bench-tls: $name did not start" >&2; exit 1
}
start plain; plain=$url
start tls tls; tls=$url

# measure <key> <node> [header...]: wrk's requests/s into r[key], and the node's CPU time per
# request (µs) into us[key] (whichever side is the bottleneck, this is the node's own cost).
declare -A r us
measure() {
  local key=$1 name=$2; shift 2
  local url=$plain; [ "$name" = tls ] && url=$tls
  local before after out requests
  before=$(cpu "${pid_of[$name]}")
  out=$($pin_load wrk -t1 -c"$conns" -d"${secs}s" "$@" "$url/health/live")
  after=$(cpu "${pid_of[$name]}")
  r[$key]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  us[$key]=$(python3 -c "print(f'{($after - $before) / $requests * 1e6:.1f}')")
}
# Warm both (allocator, caches) before measuring.
measure warm plain; measure warm tls

measure plain_ka plain
measure tls_ka tls
measure plain_new plain -H "Connection: close"
measure tls_new tls -H "Connection: close"
# Once more in the other order, so a drift of the machine shows.
measure tls_ka2 tls
measure plain_ka2 plain

echo "bench-tls: GET /health/live, wrk -t1 -c$conns -d${secs}s, node on CPU 0, wrk on CPU 1 ($(date -u +%F))"
printf '%-34s %12s %12s %9s %14s %14s\n' "run" "plain req/s" "TLS req/s" "TLS/plain" "plain µs/req" "TLS µs/req"
for k in ka new ka2; do
  label="keep-alive"; [ "$k" = ka2 ] && label="keep-alive (again, reversed order)"
  [ "$k" = new ] && label="new connection per request"
  printf '%-34s %12s %12s %9s %14s %14s\n' "$label" "${r[plain_$k]}" "${r[tls_$k]}" \
    "$(python3 -c "print(f'{${r[tls_$k]}/${r[plain_$k]}:.2f}')")" "${us[plain_$k]}" "${us[tls_$k]}"
done
echo "(µs/req: the node's CPU time, user + system, per request answered)"
python3 -c "
print(f'TLS handshake (full TLS 1.3, X25519 + ECDSA P-256), node CPU per connection: {${us[tls_new]} - ${us[plain_new]}:.0f} us')
print(f'TLS record layer, node CPU per keep-alive request: {${us[tls_ka]} - ${us[plain_ka]}:.1f} us')
"
