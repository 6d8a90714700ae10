#!/usr/bin/env bash
# Builds the cargo-fuzz (libFuzzer) targets of fuzz/ and runs each for a bounded time from its
# seed corpus. Used by scripts/test.sh; docs/FUZZING.md has the long-run command.
#
#   scripts/fuzz.sh                          # every target, OTPD_FUZZ_SECONDS (default 10) each
#   OTPD_FUZZ_SECONDS=600 scripts/fuzz.sh identifier
#
# The machine's one toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass the
# instrumentation flags it needs. No sanitizer (`-s none`): the fuzzed code is safe Rust, and
# the build stays one instrumented compile. Debug assertions (overflow checks) stay on.
# A crash exits non-zero and leaves its input in fuzz/artifacts/<target>/: turn it into a
# regression test (see docs/FUZZING.md) before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${OTPD_FUZZ_SECONDS:-10}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz --locked): skipped" >&2
  exit 0
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

echo "== cargo fuzz build (${targets[*]})"
started=$(date +%s)
cargo fuzz build -s none
echo "fuzz: built in $(( $(date +%s) - started )) s"

for target in "${targets[@]}"; do
  corpus="$(mktemp -d)"
  log="$(mktemp)"
  status=0
  # The seeds are read, never written: new inputs go to a throwaway corpus.
  cargo fuzz run -s none "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  echo "fuzz: $target: $runs executions in ${seconds} s ($rate exec/s)"
  if [ "$status" -ne 0 ]; then
    tail -60 "$log" >&2
    echo "fuzz: $target found a crash (input in fuzz/artifacts/$target/)" >&2
    rm -rf "$corpus" "$log"
    exit "$status"
  fi
  rm -rf "$corpus" "$log"
done
