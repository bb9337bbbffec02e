# Sourced by benches/throughput.sh and benches/builds.sh: a `cledger serve` that accepts a
# bearer token, and h2load writing through it. The caller sets WORK (a scratch directory) and
# PORT, and has a `server_pid` variable its cleanup kills.

# Writes $WORK/jwks.json, $WORK/token (for user bench-user) and $WORK/body.json (one
# 256-byte entry).
token_setup() {
    node "$ROOT/benches/token.mjs" "$WORK/jwks.json" bench-user >"$WORK/token"
    python3 -c "print('{\"contents\":\"' + 'a' * 256 + '\"}')" >"$WORK/body.json"
}

# start_token_server DATA_DIR COMMAND...: runs COMMAND serve (COMMAND is the binary, possibly
# after `env VAR=VALUE`) on DATA_DIR trusting $WORK/jwks.json, with the serve arguments in the
# array SERVE_EXTRA if set (e.g. `--curve p256`), waits until it is ready and makes bench-user a
# Contributor. Sets server_pid.
start_token_server() {
    local data="$1"
    shift
    "$@" serve --data-dir "$data" --listen "127.0.0.1:$PORT" \
        --jwt-issuer https://issuer.test --jwt-audience cledger --jwt-jwks-file "$WORK/jwks.json" \
        --jwt-tenant-id t1 ${SERVE_EXTRA[@]+"${SERVE_EXTRA[@]}"} >"$WORK/serve.out" 2>"$WORK/serve.err" &
    server_pid=$!
    until curl -sfk "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
        kill -0 "$server_pid" 2>/dev/null || { cat "$WORK/serve.err"; exit 1; }
        sleep 0.05
    done
    curl -sf --cacert "$data/service_cert.pem" --cert "$data/admin.pem" -X PATCH \
        -H 'content-type: application/merge-patch+json' -d '{"assignedRole":"Contributor"}' \
        "https://localhost:$PORT/app/users/bench-user?api-version=2022-05-13" >/dev/null
}

# h2load_writes PROTOCOL SECONDS CONNECTIONS [WRAPPER...]: h2load posting $WORK/body.json with
# the token over HTTP/1.1 (PROTOCOL h1: what the Azure SDKs' HTTP clients speak) or HTTP/2
# (h2), one request at a time per connection, after a 2 s warm-up, run under WRAPPER if given
# (e.g. /usr/bin/time); its report goes to $WORK/h2load.out, one line per request (start µs,
# status, µs to the response) to $WORK/h2load.log.
h2load_writes() {
    local protocol=() secs="$2" conns="$3"
    case "$1" in
    h1) protocol=(--h1) ;;
    h2) ;;
    *) echo "h2load_writes: protocol $1: expected h1 or h2" >&2; return 2 ;;
    esac
    shift 3
    rm -f "$WORK/h2load.log" # h2load appends to it
    "$@" h2load "${protocol[@]}" -D "$secs" --warm-up-time 2 -c "$conns" -m 1 -t 1 -d "$WORK/body.json" \
        --log-file "$WORK/h2load.log" \
        -H "authorization: Bearer $(cat "$WORK/token")" -H 'content-type: application/json' \
        "https://127.0.0.1:$PORT/app/transactions?api-version=2022-05-13" >"$WORK/h2load.out" 2>&1
}

# h2load_rate: the requests/s of the last h2load_writes run, from $WORK/h2load.out; fails,
# showing the report, if any request failed.
h2load_rate() {
    python3 - "$WORK/h2load.out" <<'EOF'
import re, sys
out = open(sys.argv[1]).read()
done, ok = (int(x) for x in re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out).groups())
if ok != done:
    sys.exit(f"h2load: {done - ok} requests failed:\n{out}")
print(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
EOF
}
