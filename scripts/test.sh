#!/usr/bin/env bash
# Installs what the test suite needs when the machine lacks it, then runs the whole suite.
# Used by `.ci/run` and documented in README.md; safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests start as real servers. Each is installed only when missing.
need_pkgs=()
missing() { ! command -v "$1" >/dev/null 2>&1; }
# make builds jemalloc, the binary's allocator (tikv-jemalloc-sys).
missing make && need_pkgs+=(make)
# python3 runs aiosmtpd, the real SMTP server of the e-mail delivery tests (installed below).
if missing python3; then need_pkgs+=(python3 python3-aiosmtpd); fi
# prometheus (with promtool) checks deploy/'s rules and config, lints /metrics, and scrapes a
# running node; the tests start their own server on a free loopback port, not the package's
# service.
if missing promtool || missing prometheus; then need_pkgs+=(prometheus); fi
# Redis (standalone and a 3-master cluster) for the shared cooldowns and rate limits.
missing redis-server && need_pkgs+=(redis-server)
missing redis-cli && need_pkgs+=(redis-tools)
# openssl makes the CA and node certificates of the cluster's mutual-TLS test.
missing openssl && need_pkgs+=(openssl)
# chromium (headless) and node (its WebSocket drives the DevTools protocol, no npm package)
# open the load-test harness's HTML reports in a real browser (loadtest/tests/browser/), and
# drive the sign-in page with a virtual passkey authenticator (tests/browser/signin.mjs).
missing chromium && need_pkgs+=(chromium)
missing node && need_pkgs+=(nodejs)
# npm installs axe-core for the sign-in page's browser test (tests/browser/package-lock.json).
missing npm && need_pkgs+=(npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# Python packages the tests start as real servers, installed with pip when missing.
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  python3 -m pip install -q aiosmtpd || python3 -m pip install -q --break-system-packages aiosmtpd ||
    echo "aiosmtpd could not be installed: the SMTP delivery test will report that it skipped"
fi

# The API-contract run (docs/CONTRACT.md): schemathesis from PyPI, pinned, installed when
# missing or at another version.
# hypothesis, which generates its data, is pinned with it.
SCHEMATHESIS_VERSION=4.32.5
HYPOTHESIS_VERSION=6.170.15
if [ "$(schemathesis --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ] ||
  [ "$(python3 -c 'import hypothesis; print(hypothesis.__version__)' 2>/dev/null)" != "$HYPOTHESIS_VERSION" ]; then
  pins=("schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==$HYPOTHESIS_VERSION")
  python3 -m pip install -q "${pins[@]}" || python3 -m pip install -q --break-system-packages "${pins[@]}" ||
    echo "schemathesis could not be installed: the API-contract run will report that it skipped"
fi

# The key-rotation test verifies tokens with an independent JOSE library: PyJWT (with
# cryptography, for EdDSA), pinned, installed when missing or at another version.
PYJWT_VERSION=2.10.1
CRYPTOGRAPHY_VERSION=46.0.3
if [ "$(python3 -c 'import jwt; print(jwt.__version__)' 2>/dev/null)" != "$PYJWT_VERSION" ] ||
  [ "$(python3 -c 'import cryptography; print(cryptography.__version__)' 2>/dev/null)" != "$CRYPTOGRAPHY_VERSION" ]; then
  pins=("PyJWT==$PYJWT_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION")
  python3 -m pip install -q "${pins[@]}" || python3 -m pip install -q --break-system-packages "${pins[@]}" ||
    echo "PyJWT could not be installed: the PyJWT part of the key-rotation test will report that it skipped"
fi

# The fuzz targets (docs/FUZZING.md): cargo-fuzz from crates.io, pinned, installed when missing.
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $NF}')" != "$CARGO_FUZZ_VERSION" ]; then
  # --debug: cargo-fuzz only starts cargo; an unoptimised build of it compiles sooner.
  cargo install --quiet --locked --debug "cargo-fuzz@$CARGO_FUZZ_VERSION" ||
    echo "cargo-fuzz could not be installed: the fuzz run will report that it skipped"
fi

# axe-core for the sign-in page's browser test (tests/browser/), from npm at the version the
# committed package-lock.json pins; node_modules is not committed.
if command -v npm >/dev/null 2>&1; then
  if [ ! -f tests/browser/node_modules/axe-core/axe.min.js ]; then
    npm ci --prefix tests/browser --no-audit --no-fund --silent ||
      echo "axe-core could not be installed: the sign-in page's browser test will report that it skipped"
  fi
else
  echo "NOTE: npm is missing: the sign-in page's browser test will report that it skipped"
fi

# The ScyllaDB half of the store conformance suite needs a cluster (none can be installed on
# these machines); the wire-level smoke tests against kassandra run either way.
if [ -z "${OTPD_TEST_SCYLLA:-}" ]; then
  echo "NOTE: OTPD_TEST_SCYLLA is not set: the ScyllaDB conformance tests will say SKIPPED" \
    "(set it to a contact point such as 127.0.0.1:9042 to run them against a real cluster)"
fi

# Each step says how long it took, so a slow CI run shows where its time went.
step() {
  local name="$1" started=$SECONDS
  shift
  echo "== $name"
  "$@"
  echo "== $name: $((SECONDS - started)) s (total $SECONDS s)"
}

step "cargo test (workspace, all targets)" cargo test --workspace --all-targets --locked

# schemathesis against a node on a loopback port (the debug binary cargo test just built).
step "API contract (schemathesis)" ./scripts/contract.sh

# Every fuzz target for a few seconds from its seed corpus.
step "fuzz" ./scripts/fuzz.sh
