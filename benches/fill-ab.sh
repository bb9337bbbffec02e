#!/usr/bin/env bash
# Store write throughput of two cledger binaries side by side: `cledger local fill` of COUNT
# 256-byte entries into a fresh ledger (`cledger local init`), alternating the binaries, RUNS
# runs each, into COLLECTION (a named collection exercises the index at every commit). Prints
# each run's rate and the process's CPU time per entry (user+system, from /usr/bin/time), then
# the medians. Usage: benches/fill-ab.sh OLD_BIN NEW_BIN [COUNT] [RUNS] [COLLECTION]
set -euo pipefail
old=$1 new=$2 count=${3:-200000} runs=${4:-3} collection=${5:-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -A rates cpus
for run in $(seq "$runs"); do
  for which in old new; do
    bin=${!which}
    dir="$work/$which-$run"
    "$bin" local init --data-dir "$dir" >/dev/null
    start=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$work/time" \
      "$bin" local fill --data-dir "$dir" --count "$count" --collection "$collection" >/dev/null
    end=$(date +%s.%N)
    read -r user sys <"$work/time"
    rate=$(echo "$count / ($end - $start)" | bc -l)
    cpu=$(echo "($user + $sys) * 1000000 / $count" | bc -l)
    printf '%s run %d: %8.0f entries/s  %6.2f us CPU/entry\n' "$which" "$run" "$rate" "$cpu"
    rates[$which]+="$rate "
    cpus[$which]+="$cpu "
    rm -rf "$dir"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for which in old new; do
  printf '%s median: %8.0f entries/s  %6.2f us CPU/entry\n' "$which" \
    "$(echo "${rates[$which]}" | median)" "$(echo "${cpus[$which]}" | median)"
done
