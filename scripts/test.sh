#!/usr/bin/env bash
# Runs every test of the project: formatting and lints (rustfmt, clippy with warnings as
# errors), the Rust workspace (unit, property, crash, tamper, recovery, fault-injection and
# SIGKILL tests), a short run of every fuzz target (cargo-fuzz on the
# stable toolchain, installed if missing), the Python compatibility suite, which checks
# our receipts with the official azure-confidentialledger SDK and CCF's `ccf` package, both
# installed from PyPI into a virtualenv this script creates, and the JavaScript compatibility
# suite (the official @azure-rest/confidential-ledger SDK, installed from npm into
# tests/js/node_modules as pinned by tests/js/package-lock.json, run with `node --test`), and the
# web suite: the verifier module's unit tests and the /verify and /explorer pages end to end in
# headless Chromium (Debian's chromium package, installed with apt-get if missing, driven by
# playwright-core from tests/web/node_modules as pinned by tests/web/package-lock.json;
# screenshots in target/test-artifacts/web/).
set -euo pipefail
cd "$(dirname "$0")/.."
# Every target is built once per run: incremental caches would only cost disk (gigabytes on a
# clean machine). CARGO_INCREMENTAL=1 keeps them between runs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The partition test runs cluster nodes in network namespaces: it needs root and iproute2.
if ! command -v ip >/dev/null; then
  echo "== installing iproute2 (network namespaces for the cluster partition test)"
  apt-get install -y -qq iproute2 || { apt-get update -qq && apt-get install -y -qq iproute2; }
fi
# The JavaScript suite needs Node.js (20 or later) and npm.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing nodejs and npm (the JavaScript SDK suite)"
  apt-get install -y -qq nodejs npm || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
fi

echo "== cargo fmt --check, cargo clippy (warnings are errors)"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (workspace)"
# Build every target first: the cledger binary the Python suite drives is then built with the
# same (test-unified) features, so nothing is compiled twice.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked

echo "== fuzz smoke run (5 s per target; scripts/fuzz.sh 3600 for a long run)"
./scripts/fuzz.sh 5

echo "== Python compatibility suite (official SDK + ccf)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
CLEDGER_BIN="$PWD/target/debug/cledger" .venv/bin/python -m pytest -q -rsx tests/python

echo "== the Python compatibility suite again with the newer official SDK (azure-confidentialledger 2.0.0b2 + ccf)"
# The whole suite, nothing deselected: tests/python/sdk_compat.py adapts to each SDK's API and
# default api-version (2.0.0b2: 2024-12-09-preview). The tests of 2.0.0b2's multi-role user,
# user-defined role, function and endpoint methods are reported as skipped (not applicable) in
# the 1.1.1 run above.
if [ ! -x .venv-sdk2/bin/python ]; then
  python3 -m venv .venv-sdk2
fi
.venv-sdk2/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements-sdk2.txt
CLEDGER_BIN="$PWD/target/debug/cledger" .venv-sdk2/bin/python -m pytest -q tests/python

echo "== verifiability suite (COSE receipts with CCF's ccf 7 and scitt-cose; the C2SP test witness)"
# ccf 7 declares Requires-Python >= 3.12; its receipt code runs unchanged on Debian 12's 3.11,
# so it is installed with --ignore-requires-python (tests/verify/requirements.txt).
if [ ! -x .venv-verify/bin/python ]; then
  python3 -m venv .venv-verify
fi
.venv-verify/bin/pip install --quiet --disable-pip-version-check --ignore-requires-python \
  -r tests/verify/requirements.txt
CLEDGER_BIN="$PWD/target/debug/cledger" .venv-verify/bin/python -m pytest -q tests/verify

echo "== JavaScript compatibility suite (official @azure-rest/confidential-ledger)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "Node.js 20 or later is needed, found $(node --version)"; exit 1; }
npm ci --prefix tests/js --no-audit --no-fund --ignore-scripts --loglevel=error
CLEDGER_BIN="$PWD/target/debug/cledger" node --test tests/js/*.test.mjs

echo "== web pages (verifier module unit tests; the pages in headless Chromium)"
# playwright-core downloads no browser: the pages run in Debian's Chromium. The browser tests
# reuse tests/js/server.mjs (and so tests/js/node_modules, installed above).
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (the web page tests)"
  apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }
fi
npm ci --prefix tests/web --no-audit --no-fund --ignore-scripts --loglevel=error
CLEDGER_BIN="$PWD/target/debug/cledger" node --test tests/web/*.test.mjs
