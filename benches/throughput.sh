#!/usr/bin/env bash
# Issue 18's comparison, from one run on this machine (everything shares its cores): durable
# 256-byte writes at the same concurrency, fsync on, with the CPU each side used per write.
#
#   benches/throughput.sh [RUNS] [SECONDS] [CONNECTIONS]     # default 3 10 64
#
# 1. PostgreSQL (benches/baseline/postgres.sh): a plain INSERT, the same over TLS with client
#    certificate authentication, and a hash-chained append-only table; pgbench -M prepared.
# 2. cledger, one node, driven by `cledger bench` over HTTPS with a client certificate (mTLS):
#    benches/http.sh append.
# 3. cledger, one node, driven by h2load (nghttp2-client, a C load generator) with a bearer
#    token: the server's own ceiling when the generator is cheap. Over HTTP/1.1 (what the Azure
#    SDKs' HTTP clients speak), over HTTP/2, over HTTP/1.1 on a P-256 identity (`--curve`),
#    and over HTTP/1.1 with a quarter of the connections (about half the peak rate), with p50
#    and p99 commit latency from h2load's per-request log.
#    Beside them, the machine's HTTPS ceiling (benches/baseline/https-ceiling.sh): nginx
#    answering every request with a constant 200, driven by the same h2load command — what no
#    HTTPS server can exceed here with the generator on the same cores.
# 4. cledger, a 3-node cluster through its primary, next to one node again (benches/cluster.py
#    --parts throughput), `cledger bench` with mTLS; the cluster also at half the connections
#    (about 60% of its rate at CONNECTIONS), for its commit latency below the peak.
# Then one table of the medians. Raw results go to benches/results/throughput-*.json (and the
# files the scripts above write). CLEDGER_BIN: the build to measure (default: a release build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-3}" SECS="${2:-10}" CONNS="${3:-64}"
OUT="$ROOT/benches/results"
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/cledger-throughput.XXXXXX")"
PORT="${BENCH_PORT:-19565}"
mkdir -p "$OUT"
if [ -z "${CLEDGER_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p cledger)
    CLEDGER_BIN="$ROOT/target/release/cledger"
fi
export CLEDGER_BIN
command -v h2load >/dev/null || apt-get install -y -qq nghttp2-client \
    || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }

# shellcheck source=benches/token-load.sh
. "$ROOT/benches/token-load.sh"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== 1. PostgreSQL: plain, TLS + client certificate, hash chain ($CONNS clients)"
"$ROOT/benches/baseline/postgres.sh" --clients "$CONNS" --duration "$SECS" --runs "$RUNS" \
    --json "$OUT/throughput-postgres.json" 2>&1 | tail -5

echo "== 1b. the machine's HTTPS ceiling: nginx answering a constant 200, h2load as in 3"
"$ROOT/benches/baseline/https-ceiling.sh" "$RUNS" "$SECS" "$CONNS" "$OUT/throughput-ceiling.json"

echo "== 2. cledger, one node, cledger bench (mTLS)"
"$ROOT/benches/http.sh" append "$RUNS" "$SECS" "$CONNS"

echo "== 3. cledger, one node, h2load with a bearer token: HTTP/1.1 (the SDKs'), HTTP/2, P-256"
token_setup
hz=$(getconf CLK_TCK)
# NAME PROTOCOL CURVE CONNECTIONS: a fresh ledger on CURVE, RUNS runs of h2load over PROTOCOL.
token_runs() {
    local name="$1" protocol="$2" curve="$3" conns="$4"
    SERVE_EXTRA=(--curve "$curve")
    rm -rf "$WORK/data"
    start_token_server "$WORK/data" "$CLEDGER_BIN"
    echo "  $name"
    for r in $(seq 1 "$RUNS"); do
        before=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
        h2load_writes "$protocol" "$SECS" "$conns" /usr/bin/time -f "%U %S" -o "$WORK/h2load.cpu"
        after=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
        rps=$(h2load_rate)
        python3 - "$WORK" "$((after - before))" "$hz" "$SECS" "$OUT/throughput-$name-r$r.json" "$rps" <<'EOF'
import json, re, sys
work, ticks, hz, secs, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rps = float(sys.argv[6])
out = open(f"{work}/h2load.out").read()
mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)
# Commit latency percentiles from the per-request log (the warm-up is not logged).
lat = sorted(int(line.split()[2]) for line in open(f"{work}/h2load.log"))
pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000
u, s = map(float, open(f"{work}/h2load.cpu").read().split()[-2:])
ops = rps * (secs + 2)  # the warm-up used CPU too
r = {"writes_per_sec": rps, "mean_latency": mean, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
     "server_cpu_us_per_op": ticks / hz / ops * 1e6, "generator_cpu_us_per_op": (u + s) / ops * 1e6}
json.dump(r, open(path, "w"), indent=1)
print(f"  {rps:8.0f} writes/s  mean {mean}  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  server {r['server_cpu_us_per_op']:.1f} us/op  h2load {r['generator_cpu_us_per_op']:.1f} us/op")
EOF
    done
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}
token_runs token-h1 h1 p384 "$CONNS"
token_runs token-h2 h2 p384 "$CONNS"
token_runs token-h1-p256 h1 p256 "$CONNS"
# A quarter of the connections gives about half the peak rate: the issue's latency bound.
token_runs token-h1-quarter h1 p384 "$((CONNS / 4))"

echo "== 4. cledger, one node and a 3-node cluster (cledger bench, mTLS)"
python3 "$ROOT/benches/cluster.py" --runs "$RUNS" --seconds "$SECS" --connections "$CONNS" \
    --parts throughput --cluster-also-at "$((CONNS / 2))"

echo "== summary (medians of $RUNS runs, $CONNS connections, 256-byte entries, fsync on)"
python3 - "$OUT" "$RUNS" "$CONNS" <<'EOF'
import json, statistics, sys
out, runs, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3]
med = statistics.median
rows = []
for w in json.load(open(f"{out}/throughput-postgres.json")):
    rows.append((f"PostgreSQL {w['workload']}", w["median_tps"], w["server_cpu_us_per_tx"], w["client_cpu_us_per_tx"], "pgbench"))
ceiling = json.load(open(f"{out}/throughput-ceiling.json"))
rows.append(("nginx, constant 200 (HTTPS ceiling)", med([c["requests_per_sec"] for c in ceiling]),
             med([c["server_cpu_us_per_op"] for c in ceiling]), med([c["generator_cpu_us_per_op"] for c in ceiling]), "h2load"))
bench = [json.load(open(f"{out}/append-c{conns}-r{r}.json")) for r in range(1, runs + 1)]
rows.append(("cledger, 1 node, mTLS", med([b["phases"][0]["ops_per_sec"] for b in bench]),
             med([b["server_cpu_us_per_op"] for b in bench]), med([b["generator_cpu_us_per_op"] for b in bench]), "cledger bench"))
latencies = []
for name, label in [("token-h1", "token, HTTP/1.1"), ("token-h2", "token, HTTP/2"),
                    ("token-h1-p256", "token, HTTP/1.1, P-256"),
                    ("token-h1-quarter", f"token, HTTP/1.1, {int(conns) // 4} conns")]:
    h = [json.load(open(f"{out}/throughput-{name}-r{r}.json")) for r in range(1, runs + 1)]
    rows.append((f"cledger, 1 node, {label}", med([x["writes_per_sec"] for x in h]),
                 med([x["server_cpu_us_per_op"] for x in h]), med([x["generator_cpu_us_per_op"] for x in h]), "h2load"))
    latencies.append((label, med([x["p50_ms"] for x in h]), med([x["p99_ms"] for x in h])))
cluster = json.load(open(f"{out}/cluster-throughput.json"))["throughput"]
half = f"cluster3-c{int(conns) // 2}"
for name, label in [("single", "cledger, 1 node, mTLS (cluster.py)"), ("cluster3", "cledger, 3-node cluster, mTLS"),
                    (half, f"cledger, 3-node cluster, mTLS, {int(conns) // 2} conns")]:
    rs = cluster[name]
    cpu = sum(med([r["cpu_us_per_write"][i] for r in rs]) for i in range(len(rs[0]["cpu_us_per_write"])))
    rows.append((label, med([r["writes_per_sec"] for r in rs]), cpu,
                 med([r["generator_cpu_us_per_write"] for r in rs]), "cledger bench"))
    if name != "single":
        latencies.append((label.removeprefix("cledger, "), med([r["p50_ms"] for r in rs]), med([r["p99_ms"] for r in rs])))
plain = rows[0][1]
print(f"{'':44} {'writes/s':>9} {'x PG plain':>10} {'server us/write':>16} {'client us/write':>16}  generator")
for name, rate, srv, cli, gen in rows:
    cli = f"{cli:16.1f}" if cli is not None else f"{'':>16}"
    print(f"{name:44} {rate:9.0f} {rate / plain:10.2f} {srv:16.1f} {cli}  {gen}")
print("(cluster: server CPU summed over the three nodes)")
print(f"\ncommit latency (medians of {runs} runs; h2load, and cledger bench for the cluster):")
for label, p50, p99 in latencies:
    print(f"  {label:36} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
EOF
