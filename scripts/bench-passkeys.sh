#!/usr/bin/env bash
# The cost of a passkey login next to a code login and a device-key login, in one run on one
# node: release builds, the node pinned to CPU 0 and the load generator to CPU 1 (when there are
# two), each scenario closed loop with 64 connections for the same time, limits out of reach (one
# client address), as scripts/perf.sh does.
#
#   scripts/bench-passkeys.sh [out-dir] [seconds]     # default: passkey-bench/ 20
#
# login          login → code (outbox) → login/verify → me            (4 steps, 3 requests)
# device-login   device-login/challenge → P-256 signature → verify     (2 requests)
# passkey-login  passkey-login/options → WebAuthn assertion → verify   (2 requests)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-passkey-bench}
seconds=${2:-20}
mkdir -p "$out"
cargo build --release -p otpd -p otpd-loadtest
bin=target/release
pin_node=""; pin_load=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then pin_node="taskset -c 0"; pin_load="taskset -c 1"; fi
unlimited='{ limit = 1000000000 }'
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
OTPD_NODE__DATA_DIR=$data OTPD_HTTP__LISTEN=127.0.0.1:$port OTPD_ADMIN__LISTEN=127.0.0.1:0 OTPD_NODE__LOG_LEVEL=warn \
OTPD_OTP__RESEND_COOLDOWN=0s OTPD_OTP__MAX_SENDS_PER_WINDOW=1000000000 \
OTPD_LIMITS__IP_SEND="$unlimited" OTPD_LIMITS__IP_VERIFY="$unlimited" OTPD_LIMITS__PREFIX_SEND="$unlimited" \
OTPD_LIMITS__IDENTIFIER_LOGIN="$unlimited" OTPD_LIMITS__IDENTIFIER_REGISTER="$unlimited" \
OTPD_LIMITS__IDENTIFIER_RESEND="$unlimited" OTPD_LIMITS__IDENTIFIER_VERIFY="$unlimited" \
OTPD_LIMITS__DEVICE_CHALLENGE="$unlimited" OTPD_LIMITS__IP_CHALLENGE="$unlimited" \
OTPD_LIMITS__SMS_BUDGET='{ daily = 100000000 }' OTPD_LIMITS__CONVERSION_GUARD='{ mode = "record" }' \
  $pin_node $bin/otpd 2>"$data/node.log" & node=$!
trap 'kill $node 2>/dev/null || true; wait $node 2>/dev/null || true; rm -rf "$data"' EXIT
target=http://127.0.0.1:$port
for _ in $(seq 100); do curl -sf "$target/health/live" >/dev/null && break; sleep 0.1; done
curl -sf "$target/health/live" >/dev/null || { cat "$data/node.log" >&2; echo "bench: the node did not start" >&2; exit 1; }
lt() { $pin_load $bin/otpd-loadtest "$@" --target "$target" --outbox "$data/outbox.jsonl" --user-cooldown 0s --quiet; }
for scenario in login device-login passkey-login; do
  lt run --scenario "$scenario" --users 2000 --connections 64 --duration "${seconds}s" --out "$out/$scenario"
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for s in ["login", "device-login", "passkey-login"]:
    run = json.load(open(f"{out}/{s}/report.json"))["runs"][0]
    rows[s] = run
rate = lambda r: r["scenarios_ok"] / r["duration_s"]
print(f"{'scenario':<14} {'logins/s':>9} {'requests/s':>11} {'failed':>7}")
for s, r in rows.items():
    print(f"{s:<14} {rate(r):>9.0f} {r['requests_per_s']:>11.0f} {r['scenarios_failed']:>7}")
for s in ["login", "device-login"]:
    if rate(rows[s]):
        print(f"passkey logins/s ÷ {s} logins/s = {rate(rows['passkey-login']) / rate(rows[s]):.2f}")
PY
