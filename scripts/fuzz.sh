#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a while on the stable toolchain (cargo-fuzz, `-s none`).
#
#   scripts/fuzz.sh            # 5 s per target (a smoke run, as the test command does)
#   scripts/fuzz.sh 3600       # an hour per target
#   FUZZ_TARGETS="http frame" scripts/fuzz.sh 60
#
# Installs cargo-fuzz 0.13.2 if `cargo fuzz` is missing, builds all targets, runs each from the
# committed seeds (fuzz/seeds/<target>) plus its local corpus (fuzz/corpus/<target>, not in
# git), prints executions per target and in total, and exits non-zero if any target failed.
# A failing input is saved under fuzz/artifacts/<target>/; replay it with
#   cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>     (from the repo root)
# See fuzz/README.md for long runs.
set -euo pipefail

SECONDS_PER_TARGET="${1:-5}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(txid frame entry receipt proofs http)
read -r -a TARGETS <<< "${FUZZ_TARGETS:-${ALL_TARGETS[*]}}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

echo "== building fuzz targets (stable, no sanitizer)"
cargo fuzz build -s none --fuzz-dir fuzz

LOGS="$ROOT/fuzz/target/fuzz-logs"
mkdir -p "$LOGS"
total=0
failed=()
for target in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/seeds/$target"
    mkdir -p "$corpus" "$seeds" "fuzz/artifacts/$target"
    log="$LOGS/$target.log"
    echo "== $target: ${SECONDS_PER_TARGET}s"
    status=0
    cargo fuzz run -s none --fuzz-dir fuzz "$target" "$corpus" "$seeds" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    if [ -z "$execs" ]; then
        execs="$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -n 1)"
    fi
    execs="${execs:-0}"
    total=$((total + execs))
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "   FAILED (exit $status) after $execs executions; last lines of $log:"
        tail -n 40 "$log" | sed 's/^/   | /'
    else
        echo "   $execs executions"
    fi
done

echo "== total: $total executions over ${#TARGETS[@]} targets"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "== fuzzing found failures in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
