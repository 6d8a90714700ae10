# shellcheck shell=bash
# Sourced by scripts/perf.sh and scripts/capacity.sh: one release node with an empty data
# directory, pinned to CPU 0 while the load generator runs on CPU 1 (when there are two CPUs),
# with the resend cooldown, the send cap and every rate-limit rule out of the harness' reach
# (`{ limit = 1000000000 }`: the rules are still evaluated, they just never refuse), because the
# harness is one client address reusing a pool of a few thousand users on few number prefixes
# (docs/USING.md, "Rate limits"). Everything else is the default.
#
# The caller sets `bin` (the folder of the release binaries) before sourcing. Defines:
#   pin_node, pin_load, base_cpus   taskset prefixes, and the baseline's CPUs for otpd-loadtest
#   free_port                       prints a free loopback port
#   start_node [NAME=value ...]     a fresh node with these extra environment variables; sets
#                                   node (its PID), data (its folder) and target (its URL)
#   stop_node                       stops that node (by PID) and removes its folder
#   lt ARGS...                      otpd-loadtest on the generator's CPU against the node
# and stops the node on exit (trap; a caller with more to clean up calls stop_node itself).

pin_node=""; pin_load=""
base_cpus=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_node="taskset -c 0"; pin_load="taskset -c 1"; base_cpus=(--baseline-cpus 0)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

node_unlimited='{ limit = 1000000000 }'
node=""; data=""; target=""
stop_node() {
  if [ -n "$node" ]; then kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; fi
  if [ -n "$data" ]; then rm -rf "$data"; fi
  node=""; data=""
}
trap stop_node EXIT

start_node() {
  stop_node
  data=$(mktemp -d)
  local port
  port=$(free_port)
  # $pin_node is a command prefix (or empty): split on purpose.
  # shellcheck disable=SC2086
  env OTPD_NODE__DATA_DIR="$data" OTPD_HTTP__LISTEN="127.0.0.1:$port" OTPD_ADMIN__LISTEN=127.0.0.1:0 \
    OTPD_NODE__LOG_LEVEL=warn \
    OTPD_OTP__RESEND_COOLDOWN=0s OTPD_OTP__MAX_SENDS_PER_WINDOW=1000000000 \
    OTPD_LIMITS__IP_SEND="$node_unlimited" OTPD_LIMITS__IP_VERIFY="$node_unlimited" \
    OTPD_LIMITS__PREFIX_SEND="$node_unlimited" \
    OTPD_LIMITS__IDENTIFIER_LOGIN="$node_unlimited" OTPD_LIMITS__IDENTIFIER_REGISTER="$node_unlimited" \
    OTPD_LIMITS__IDENTIFIER_RESEND="$node_unlimited" OTPD_LIMITS__IDENTIFIER_VERIFY="$node_unlimited" \
    OTPD_LIMITS__DEVICE_CHALLENGE="$node_unlimited" OTPD_LIMITS__IP_CHALLENGE="$node_unlimited" \
    OTPD_LIMITS__SMS_BUDGET='{ daily = 100000000 }' \
    OTPD_LIMITS__CONVERSION_GUARD='{ mode = "record" }' \
    "$@" $pin_node "$bin/otpd" 2>"$data/node.log" &
  node=$!
  target=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -sf "$target/health/live" >/dev/null && return; sleep 0.1; done
  cat "$data/node.log" >&2; echo "the node did not start" >&2; exit 1
}

# shellcheck disable=SC2086
lt() { $pin_load "$bin/otpd-loadtest" "$@" --target "$target" --outbox "$data/outbox.jsonl" --user-cooldown 0s --quiet; }
