#!/usr/bin/env bash
# The machine's HTTPS ceiling: nginx (the OS package) answering every request with a constant
# 200 and a small JSON body — no parsing, no storage, no fsync, no signature — driven by the
# same h2load command benches/throughput.sh drives cledger with (HTTP/1.1, one request at a
# time per connection, a 256-byte JSON body, a bearer token header, TLS 1.3 on a P-384 key).
# No HTTPS server can write faster on this machine with the generator on the same cores, so
# it bounds what any of the write rates beside it can reach.
#
#   benches/baseline/https-ceiling.sh [RUNS] [SECONDS] [CONNECTIONS] [JSON]   # default 3 10 64
#
# Prints requests/s and the CPU per request of nginx's workers and of h2load for each run;
# JSON (if given): one object per run with requests_per_sec, server_cpu_us_per_op and
# generator_cpu_us_per_op. Needs nginx, h2load and openssl (installed with apt-get if
# missing). Everything lives in a temp directory removed on exit, nginx included.
set -euo pipefail
RUNS="${1:-3}" SECS="${2:-10}" CONNS="${3:-64}" JSON="${4:-}"
PORT="${CEILING_PORT:-19901}"
WORK="$(mktemp -d "${BASELINE_DIR:-/var/tmp}/cledger-ceiling.XXXXXX")"
for tool in nginx:nginx-light h2load:nghttp2-client openssl:openssl; do
    command -v "${tool%%:*}" >/dev/null || apt-get install -y -qq "${tool#*:}" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
cleanup() {
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
    sleep 0.2
    rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -days 2 \
    -subj /CN=localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
# As many workers as cores, as cledger's tokio runtime; no access log (cledger writes none by
# default either); keep-alive for the whole run.
cat >"$WORK/nginx.conf" <<EOF
worker_processes $(nproc);
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORK/body;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.3;
        location / {
            default_type application/json;
            add_header x-ms-ccf-transaction-id 2.1000 always;
            return 200 '{"collectionId":"subledger:0"}';
        }
    }
}
EOF
nginx -c "$WORK/nginx.conf"
until curl -sfk -o /dev/null "https://127.0.0.1:$PORT/"; do sleep 0.1; done
python3 -c "print('{\"contents\":\"' + 'a' * 256 + '\"}')" >"$WORK/body.json"
# A token's length, not a valid one: nginx does not read it.
token="$(python3 -c "print('e' * 600)")"
workers_ticks() { # the CPU ticks of nginx's worker processes so far
    local total=0 pid
    for pid in $(pgrep -P "$(cat "$WORK/nginx.pid")"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
for r in $(seq 1 "$RUNS"); do
    before=$(workers_ticks)
    /usr/bin/time -f "%U %S" -o "$WORK/h2load.cpu" \
        h2load --h1 -D "$SECS" --warm-up-time 2 -c "$CONNS" -m 1 -t 1 -d "$WORK/body.json" \
        -H "authorization: Bearer $token" -H 'content-type: application/json' \
        "https://127.0.0.1:$PORT/app/transactions?api-version=2022-05-13" >"$WORK/h2load.out" 2>&1
    after=$(workers_ticks)
    python3 - "$WORK" "$((after - before))" "$(getconf CLK_TCK)" "$SECS" "$r" <<'EOF'
import json, re, sys
work, ticks, hz, secs, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
out = open(f"{work}/h2load.out").read()
done, ok = (int(x) for x in re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out).groups())
if ok != done:
    sys.exit(f"h2load: {done - ok} requests failed:\n{out}")
rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
u, s = map(float, open(f"{work}/h2load.cpu").read().split()[-2:])
ops = rps * (secs + 2)  # the warm-up used CPU too
r = {"requests_per_sec": rps, "server_cpu_us_per_op": ticks / hz / ops * 1e6,
     "generator_cpu_us_per_op": (u + s) / ops * 1e6}
with open(f"{work}/runs.jsonl", "a") as f:
    f.write(json.dumps(r) + "\n")
print(f"  run {run}: {rps:8.0f} requests/s  nginx {r['server_cpu_us_per_op']:.1f} us/op  h2load {r['generator_cpu_us_per_op']:.1f} us/op")
EOF
done
if [ -n "$JSON" ]; then
    python3 -c 'import json, sys; json.dump([json.loads(l) for l in open(sys.argv[1])], open(sys.argv[2], "w"), indent=1)' \
        "$WORK/runs.jsonl" "$JSON"
fi
