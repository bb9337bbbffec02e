#!/usr/bin/env bash
# Release builds (or one build with different settings) side by side under the same h2load load
# (bearer token, 256-byte writes), runs interleaved build by build so the machine's drift falls
# on all of them alike. For each build and connection count: the median writes/s over RUNS, the
# CPU of the server's threads by name (tokio workers are `cledger`, the write path
# `cledger-writer`; % of one core) and the mean transactions per group commit (from /metrics).
# Used for issue 18's steps 2 and 3 (PERFORMANCE.md).
#
#   benches/builds.sh RUNS SECONDS "CONNS..." NAME=BINARY[,VAR=VALUE...] ...
#   benches/builds.sh 3 10 "16 64" base=/tmp/a/cledger pipeline=/tmp/b/cledger
#
# VAR=VALUE pairs after a binary go to its server's environment (for builds whose experiment is
# switched by a variable). PROTOCOL=h2 in the script's environment drives HTTP/2 instead of
# HTTP/1.1. Raw lines go to benches/results/builds.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="$1" SECS="$2" CONNS="$3"
shift 3
[ $# -gt 0 ] || { echo "usage: $0 RUNS SECONDS \"CONNS...\" NAME=BINARY[,VAR=VALUE...] ..." >&2; exit 2; }
command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/cledger-builds.XXXXXX")"
PORT="${BENCH_PORT:-19575}"
OUT="$ROOT/benches/results/builds.txt"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=benches/token-load.sh
. "$ROOT/benches/token-load.sh"
token_setup
# CPU ticks of each live thread of PID, summed by thread name: "name ticks" lines.
thread_ticks() {
    for t in /proc/"$1"/task/*; do
        echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
    done 2>/dev/null | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}

one_run() { # NAME SPEC CONNS RUN
    local name="$1" spec="$2" conns="$3" run="$4" bin env_vars data="$WORK/data"
    bin="${spec%%,*}"
    env_vars=()
    if [ "$bin" != "$spec" ]; then
        IFS=, read -ra env_vars <<<"${spec#*,}"
    fi
    rm -rf "$data"
    start_token_server "$data" env "${env_vars[@]}" "$bin"
    h2load_writes "${PROTOCOL:-h1}" "$SECS" "$conns" &
    local h2=$!
    sleep 2.5 # the warm-up
    thread_ticks "$server_pid" >"$WORK/before"
    local t0 t1
    t0=$(date +%s.%N)
    wait "$h2"
    t1=$(date +%s.%N)
    thread_ticks "$server_pid" >"$WORK/after"
    curl -sfk "https://127.0.0.1:$PORT/metrics" >"$WORK/metrics"
    kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
    server_pid=""
    local rps
    rps=$(h2load_rate)
    python3 - "$WORK" "$name" "$conns" "$run" "$t0" "$t1" "$(getconf CLK_TCK)" "$rps" <<'EOF' | tee -a "$OUT"
import re, sys
work, name, conns, run, t0, t1, hz, rps = sys.argv[1:]
rps = float(rps)
# A thread that ended while being read leaves a partial line.
ticks = lambda f: {w[0]: int(w[1]) for w in map(str.split, open(f)) if len(w) == 2 and w[1].isdigit()}
before, after = ticks(f"{work}/before"), ticks(f"{work}/after")
secs = float(t1) - float(t0)
cpu = {k: (after[k] - before.get(k, 0)) / int(hz) / secs * 100 for k in after}
metrics = open(f"{work}/metrics").read()
m = lambda key: float(re.search(rf"^{key} ([\d.e+]+)$", metrics, re.M).group(1))
per_batch = m("cledger_batch_transactions_sum") / m("cledger_batch_transactions_count")
threads = " ".join(f"{k}={v:.0f}%" for k, v in sorted(cpu.items()) if v >= 1)
print(f"{conns} {name} run{run} {rps:.0f}/s {per_batch:.1f}tx/batch {threads}")
EOF
}

: >"$OUT"
for conns in $CONNS; do
    for run in $(seq 1 "$RUNS"); do
        for build in "$@"; do
            one_run "${build%%=*}" "${build#*=}" "$conns" "$run"
        done
    done
done
echo "== medians (writes/s)"
python3 - "$OUT" <<'EOF'
import collections, statistics, sys
rates = collections.defaultdict(list)
for line in open(sys.argv[1]):
    conns, name, _, rps = line.split()[:4]
    rates[(int(conns), name)].append(float(rps.removesuffix("/s")))
for (conns, name), values in sorted(rates.items(), key=lambda kv: kv[0][0]):
    print(f"{conns:5d} conns  {name:16s} {statistics.median(values):9.0f}  ({' · '.join(f'{v:.0f}' for v in values)})")
EOF
