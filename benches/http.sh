#!/usr/bin/env bash
# The HTTPS figures of docs/PERFORMANCE.md: a release `cledger serve` on a fresh data directory
# (same disk as /work), driven by `cledger bench` over mTLS on the same machine, over HTTP/1.1
# as the Azure SDKs' transports (BENCH_PROTOCOL=h2 for HTTP/2).
#
#   benches/http.sh append  [RUNS] [SECONDS] [CONNECTIONS...]   # default 3 15 1 16 64 256
#   benches/http.sh reads   DATA_DIR [RUNS] [SECONDS] [CONNECTIONS]  # a filled ledger (see below)
#   benches/http.sh programs [RUNS] [SECONDS] [CONNECTIONS]     # default 3 10 64
#
# `append` runs append-only phases and prints, per connection count, the median over RUNS of
# committed writes/s and latency percentiles, plus the CPU the server and the generator used
# per write (from /proc and getrusage), which is what bounds throughput on a 2-core machine.
# `reads` serves DATA_DIR (e.g. filled by `cledger local fill --count 10000000`), measures the
# time from start to `/readyz` answering 200, then read/receipt/list phases on random
# sequence numbers of the whole ledger (--existing), one phase at a time with the CPU each side
# used per operation, and the server's peak RSS.
# `programs` alternates, run by run on one fresh ledger, plain writes (`append`), writes with
# one pre-hook (`hooked`) and executions of a trivial user-defined function (`execute`), with
# the CPU per operation of each side: the cost a hook adds to a write.
# Raw JSON of every run goes to benches/results/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# CLEDGER_BIN: another build to measure (e.g. an older release, to compare side by side).
BIN="${CLEDGER_BIN:-$ROOT/target/release/cledger}"
PROTOCOL="${BENCH_PROTOCOL:-h1}"
OUT="$ROOT/benches/results"
WORK="${BENCH_DIR:-/var/tmp}/cledger-http-bench.$$"
PORT="${BENCH_PORT:-19555}"
mkdir -p "$OUT" "$WORK"
[ -n "${CLEDGER_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q -p cledger)

server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

start_server() { # DATA_DIR; sets server_pid, writes seconds until /readyz said ready to $WORK/ready
    local dir="$1" t0 t1
    t0=$(date +%s.%N)
    "$BIN" serve --data-dir "$dir" --listen "127.0.0.1:$PORT" >"$WORK/serve.out" 2>"$WORK/serve.err" &
    server_pid=$!
    until curl -sfk "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
        kill -0 "$server_pid" 2>/dev/null || { cat "$WORK/serve.err"; exit 1; }
        sleep 0.05
    done
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.2f}')" >"$WORK/ready"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Adds the server's and the generator's CPU per operation to a bench JSON file.
cpu_per_op() { # FILE TICKS_BEFORE TICKS_AFTER HZ GEN_CPU_FILE SECONDS
    python3 - "$@" <<'EOF'
import json, sys
f, before, after, hz, gen, secs = sys.argv[1:]
d = json.load(open(f))
p = d["phases"][0]
u, s = map(float, open(gen).read().split()[-2:])
total_ops = p["ops_per_sec"] * (float(secs) + 2)  # the warm-up used CPU too
d["server_cpu_us_per_op"] = (int(after) - int(before)) / int(hz) / total_ops * 1e6
d["generator_cpu_us_per_op"] = (u + s) / total_ops * 1e6
json.dump(d, open(f, "w"), indent=1)
EOF
}

# Prints, per phase, the medians over RUNS of the JSON files PREFIX-PHASE-rN.json.
phase_table() { # PREFIX RUNS PHASE...
    python3 - "$OUT" "$@" <<'EOF'
import json, statistics, sys
out, prefix, runs, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
med = statistics.median
print(f"{'phase':>8} {'per s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'srv us/op':>9} {'gen us/op':>9}  runs")
for name in names:
    rs = [json.load(open(f"{out}/{prefix}-{name}-r{r}.json")) for r in range(1, runs + 1)]
    ph = [r["phases"][0] for r in rs]
    rates = [p["ops_per_sec"] for p in ph]
    errors = sum(sum(p["errors"].values()) for p in ph)
    print(f"{name:>8} {med(rates):>9.0f} {med([p['latency_ms']['p50'] for p in ph]):>7.2f} "
          f"{med([p['latency_ms']['p99'] for p in ph]):>7.2f} {errors:>6} "
          f"{med([r['server_cpu_us_per_op'] for r in rs]):>9.1f} {med([r['generator_cpu_us_per_op'] for r in rs]):>9.1f}"
          f"  {', '.join(f'{x:.0f}' for x in rates)}")
EOF
}

conn() { echo --endpoint "https://127.0.0.1:$PORT" --cert "$1/admin.pem" --service-cert "$1/service_cert.pem"; }

case "${1:-}" in
append)
    RUNS="${2:-3}"; SECS="${3:-15}"; shift $(( $# < 3 ? $# : 3 ))
    CONNS=("$@"); [ ${#CONNS[@]} -eq 0 ] && CONNS=(1 16 64 256)
    start_server "$WORK/data"
    hz=$(getconf CLK_TCK)
    for c in "${CONNS[@]}"; do
        for r in $(seq 1 "$RUNS"); do
            f="$OUT/append-c$c-r$r.json"
            before=$(cpu_ticks "$server_pid")
            /usr/bin/time -f "%U %S" -o "$WORK/gen.cpu" "$BIN" bench --protocol "$PROTOCOL" $(conn "$WORK/data") \
                --phases append --connections "$c" --duration "$SECS" --warmup 2 --output "$f" >/dev/null 2>&1
            after=$(cpu_ticks "$server_pid")
            cpu_per_op "$f" "$before" "$after" "$hz" "$WORK/gen.cpu" "$SECS"
        done
    done
    python3 - "$OUT" "$RUNS" "${CONNS[@]}" <<'EOF'
import json, statistics, sys
out, runs, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"{'conns':>6} {'writes/s':>10} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'p99.9':>7} {'srv us/op':>9} {'gen us/op':>9}  runs (writes/s)")
for c in conns:
    rs = [json.load(open(f"{out}/append-c{c}-r{r}.json")) for r in range(1, runs + 1)]
    ph = [r["phases"][0] for r in rs]
    med = lambda xs: statistics.median(xs)
    rates = [p["ops_per_sec"] for p in ph]
    print(f"{c:>6} {med(rates):>10.0f} {med([p['latency_ms']['p50'] for p in ph]):>7.2f} "
          f"{med([p['latency_ms']['p90'] for p in ph]):>7.2f} {med([p['latency_ms']['p99'] for p in ph]):>7.2f} "
          f"{med([p['latency_ms']['p99_9'] for p in ph]):>7.2f} {med([r['server_cpu_us_per_op'] for r in rs]):>9.1f} "
          f"{med([r['generator_cpu_us_per_op'] for r in rs]):>9.1f}  {', '.join(f'{x:.0f}' for x in rates)}")
EOF
    ;;
reads)
    DATA="${2:?DATA_DIR}"; RUNS="${3:-3}"; SECS="${4:-15}"; C="${5:-64}"
    start_server "$DATA"
    echo "start to ready: $(cat "$WORK/ready") s"
    hz=$(getconf CLK_TCK)
    for phase in read receipt list; do
        for r in $(seq 1 "$RUNS"); do
            f="$OUT/reads-$phase-r$r.json"
            before=$(cpu_ticks "$server_pid")
            /usr/bin/time -f "%U %S" -o "$WORK/gen.cpu" "$BIN" bench --protocol "$PROTOCOL" $(conn "$DATA") --existing \
                --phases "$phase" --verify-every 100 --connections "$C" --duration "$SECS" \
                --warmup 2 --output "$f" >/dev/null 2>&1
            after=$(cpu_ticks "$server_pid")
            cpu_per_op "$f" "$before" "$after" "$hz" "$WORK/gen.cpu" "$SECS"
        done
    done
    echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$server_pid/status")"
    phase_table reads "$RUNS" read receipt list
    ;;
programs)
    RUNS="${2:-3}"; SECS="${3:-10}"; C="${4:-64}"
    start_server "$WORK/data"
    hz=$(getconf CLK_TCK)
    for r in $(seq 1 "$RUNS"); do
        for phase in append hooked execute; do
            f="$OUT/programs-$phase-r$r.json"
            before=$(cpu_ticks "$server_pid")
            /usr/bin/time -f "%U %S" -o "$WORK/gen.cpu" "$BIN" bench --protocol "$PROTOCOL" $(conn "$WORK/data") \
                --phases "$phase" --connections "$C" --duration "$SECS" --warmup 2 --output "$f" >/dev/null 2>&1
            after=$(cpu_ticks "$server_pid")
            cpu_per_op "$f" "$before" "$after" "$hz" "$WORK/gen.cpu" "$SECS"
        done
    done
    phase_table programs "$RUNS" append hooked execute
    ;;
*)
    sed -n '2,19p' "$0"
    exit 2
    ;;
esac
