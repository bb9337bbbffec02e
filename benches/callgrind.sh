#!/usr/bin/env bash
# Instructions per write on a server's request path, counted by callgrind: a figure that does
# not move with the machine's load (two runs of the same build agree to 0.1%, where writes/s
# on these shared cores move by 10%), for comparing builds whose difference is a few percent
# of a write's CPU.
#
#   benches/callgrind.sh [WRITES] NAME=BIN [NAME=BIN ...]     # default 4000 writes
#
# For each build, in turn: a fresh data directory (identity made natively), then `cledger
# serve` under `valgrind --tool=callgrind --separate-threads=yes`, WRITES writes from
# `cledger bench` (8 connections, mTLS, HTTP/1.1; the generator is the first BIN, natively),
# a graceful stop. Prints the instructions of the tokio worker threads (the request path:
# TLS, HTTP, routing, authorization, JSON, submission and answer) per write; the writer
# thread's count depends on how writes fall into batches, so it is not compared. The TLS
# handshakes of the 8 connections are included, the same for every build.
set -euo pipefail
WRITES=4000
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then WRITES="$1"; shift; fi
[ $# -gt 0 ] || { sed -n '2,15p' "$0"; exit 2; }
command -v valgrind >/dev/null || apt-get install -y -qq valgrind
GENERATOR="${1#*=}"
for build in "$@"; do
    name="${build%%=*}" bin="${build#*=}"
    work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/cledger-callgrind.XXXXXX")"
    port=$((19700 + RANDOM % 200))
    "$bin" serve --data-dir "$work/d" --listen "127.0.0.1:$port" >"$work/first.out" 2>&1 &
    pid=$!
    until curl -sfk "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.2; done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/cg.out.%p" \
        "$bin" serve --data-dir "$work/d" --listen "127.0.0.1:$port" >"$work/serve.out" 2>&1 &
    pid=$!
    until curl -sfk "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.5; done
    "$GENERATOR" bench --endpoint "https://127.0.0.1:$port" --cert "$work/d/admin.pem" \
        --service-cert "$work/d/service_cert.pem" --phases append --connections 8 \
        --count "$WRITES" --warmup 0 --duration 600 >/dev/null 2>&1
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$work" "$WRITES" "$name" <<'PY'
import glob, re, sys
work, writes, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
workers = 0
for f in glob.glob(f"{work}/cg.out.*-*"):
    if f.endswith("-01"):
        continue  # the main thread: start-up
    text = open(f, errors="replace").read()
    if "hyper" in text:  # a tokio worker (the writer thread never enters hyper)
        workers += int(re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M).group(1))
print(f"{name:16} tokio workers {workers / writes:10,.0f} instructions per write")
PY
    rm -rf "$work"
done
