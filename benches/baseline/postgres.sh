#!/usr/bin/env bash
# Baseline for issue 7: what a user gets from PostgreSQL for durable 256-byte appends.
#
# Starts a throwaway PostgreSQL (OS packages) in a fresh temp dir on loopback with
# fsync=on, synchronous_commit=on, full_page_writes=on, and drives it with pgbench:
#   plain - one INSERT of (collection, contents, sha256(contents)) per transaction
#   tls   - the plain insert over TLS with client certificate authentication (hostssl ... cert,
#           sslmode=verify-full, P-384 certificates): what a secure deployment uses, and what
#           cledger's mTLS clients pay for too
#   chain - the same entry appended to a table carrying a SHA-256 hash chain, serialised
#           on a single head row (hash_n = sha256(hash_{n-1} || sha256(contents_n)));
#           the chain is verified with SQL after every run.
# See README.md in this directory.
set -euo pipefail

CLIENTS="32,64,128"
DURATION=60
RUNS=3
JSON=""
BASE_DIR="${BASELINE_DIR:-/var/tmp}"
ENTRY_BYTES=256   # fixed: contents is 8 x md5 hex = 256 characters

usage() {
  cat <<EOF
usage: $0 [--clients N[,N...]] [--duration SECS] [--runs R] [--quick] [--json FILE] [--dir DIR]
  --clients   pgbench client counts to run (default 32,64,128)
  --duration  seconds per pgbench run (default 60)
  --runs      runs per (workload, clients); the median is reported (default 3)
  --quick     smoke run: --clients 32 --duration 5 --runs 1
  --json      also write the results as JSON to FILE
  --dir       parent of the temporary data directory (default \$BASELINE_DIR or /var/tmp;
              must be on the disk you want to measure, not tmpfs)
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --clients) CLIENTS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --quick) CLIENTS=32; DURATION=5; RUNS=1; shift ;;
    --json) JSON="$2"; shift 2 ;;
    --dir) BASE_DIR="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$CLIENTS" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "bad --clients: $CLIENTS" >&2; exit 2; }
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -gt 0 ]] || { echo "bad --duration: $DURATION" >&2; exit 2; }
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -gt 0 ]] || { echo "bad --runs: $RUNS" >&2; exit 2; }
if [[ -n "$JSON" ]]; then
  JSON="$(realpath -m "$JSON")"
fi

# ---------------------------------------------------------------- PostgreSQL binaries
find_pgbin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" && -x "$d/pgbench" && -x "$d/psql" ]]; then
      echo "$d"; return 0
    fi
  done
  # Non-Debian layouts: everything on PATH.
  local i
  i="$(command -v initdb || true)"
  if [[ -n "$i" ]]; then
    d="$(dirname "$(realpath "$i")")"
    if [[ -x "$d/pg_ctl" && -x "$d/postgres" && -x "$d/pgbench" && -x "$d/psql" ]]; then
      echo "$d"; return 0
    fi
  fi
  return 1
}

if ! PGBIN="$(find_pgbin)"; then
  echo "PostgreSQL server binaries not found: installing postgresql postgresql-contrib" >&2
  if [[ $EUID -ne 0 ]]; then echo "need root to apt-get install" >&2; exit 1; fi
  # Debian's postinst creates and starts a cluster on 5432; we do not use it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql postgresql-contrib || {
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql postgresql-contrib
  }
  PGBIN="$(find_pgbin)" || { echo "still no PostgreSQL binaries after install" >&2; exit 1; }
fi

# PostgreSQL refuses to run as root: run everything as the postgres OS user.
if [[ $EUID -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || { echo "no 'postgres' OS user" >&2; exit 1; }
  AS_PG=(runuser -u postgres --)
  PG_OWNER="postgres"
else
  AS_PG=()
  PG_OWNER="$(id -un)"
fi

# ---------------------------------------------------------------- temp dir, port, cleanup
mkdir -p "$BASE_DIR"
FSTYPE="$(df --output=fstype "$BASE_DIR" | tail -1 | tr -d ' ')"
if [[ "$FSTYPE" == "tmpfs" || "$FSTYPE" == "ramfs" ]]; then
  echo "refusing: $BASE_DIR is on $FSTYPE (nothing would reach the disk); use --dir" >&2
  exit 2
fi
WORK="$(mktemp -d "$BASE_DIR/cledger-pgbaseline.XXXXXX")"
chmod 0700 "$WORK"
chown "$PG_OWNER" "$WORK"
PGDATA="$WORK/data"
STARTED=0
PGBENCH_PID=""

cleanup() {
  local rc=$?
  set +e
  if [[ -n "$PGBENCH_PID" ]]; then
    kill -TERM "$PGBENCH_PID" 2>/dev/null
    wait "$PGBENCH_PID" 2>/dev/null
  fi
  if [[ $STARTED -eq 1 ]]; then
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1
    if [[ -f "$PGDATA/postmaster.pid" ]]; then
      # Still running: kill exactly our postmaster (first line of its pid file).
      local pid
      pid="$(head -1 "$PGDATA/postmaster.pid" 2>/dev/null)"
      [[ -n "$pid" ]] && kill -QUIT "$pid" 2>/dev/null
      sleep 1
    fi
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

MAX_CLIENTS=0
IFS=',' read -r -a CLIENT_LIST <<<"$CLIENTS"
for c in "${CLIENT_LIST[@]}"; do (( c > MAX_CLIENTS )) && MAX_CLIENTS=$c; done
MAX_CONN=$(( MAX_CLIENTS + 10 ))
(( MAX_CONN < 100 )) && MAX_CONN=100

# ---------------------------------------------------------------- initdb + start
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; exit 1; }

# TLS for the `tls` workload: a CA, a server certificate for 127.0.0.1 and a client certificate
# for the role `postgres` (certificate authentication maps the CN to the role). Connections
# without TLS keep trust authentication (the other workloads, and psql for setup).
TLS="$WORK/tls"
mkdir -p "$TLS"
make_cert() { # NAME SUBJECT [EXTFILE]: NAME.key, NAME.crt signed by the CA
  openssl ecparam -name secp384r1 -genkey -noout -out "$TLS/$1.key" 2>/dev/null
  openssl req -new -key "$TLS/$1.key" -subj "$2" -out "$TLS/$1.csr" 2>/dev/null
  openssl x509 -req -in "$TLS/$1.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 2 -sha384 ${3:+-extfile "$3"} -out "$TLS/$1.crt" 2>/dev/null
}
openssl ecparam -name secp384r1 -genkey -noout -out "$TLS/ca.key" 2>/dev/null
openssl req -new -x509 -key "$TLS/ca.key" -subj "/CN=baseline CA" -days 2 -sha384 -out "$TLS/ca.crt" 2>/dev/null
echo "subjectAltName=IP:127.0.0.1" >"$TLS/server.ext"
make_cert server "/CN=127.0.0.1" "$TLS/server.ext"
make_cert client "/CN=postgres"
chown -R "$PG_OWNER" "$TLS"
chmod 0600 "$TLS"/*.key
cat >"$PGDATA/pg_hba.conf" <<'EOF'
local     all  all                 trust
hostssl   all  all  127.0.0.1/32   cert
hostnossl all  all  127.0.0.1/32   trust
EOF
export PGSSLMODE=disable   # setup and the plain/chain workloads: no TLS
TLS_ENV=(env PGSSLMODE=verify-full PGSSLROOTCERT="$TLS/ca.crt" PGSSLCERT="$TLS/client.crt" PGSSLKEY="$TLS/client.key")

# Everything not listed here is the PostgreSQL default (shared_buffers=128MB, max_wal_size=1GB,
# wal_sync_method=fdatasync on Linux, commit_delay=0, ...). max_connections is raised only so
# that the largest client count fits (default 100).
PG_OPTS="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$WORK"
PG_OPTS+=" -c fsync=on -c synchronous_commit=on -c full_page_writes=on"
PG_OPTS+=" -c max_connections=$MAX_CONN"
PG_OPTS+=" -c ssl=on -c ssl_cert_file=$TLS/server.crt -c ssl_key_file=$TLS/server.key -c ssl_ca_file=$TLS/ca.crt"
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/server.log" -w -t 60 -o "$PG_OPTS" start >/dev/null \
  || { cat "$WORK/server.log" >&2; exit 1; }
STARTED=1

PSQL=("${AS_PG[@]}" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
PSQL+=(-d bench)

# ---------------------------------------------------------------- workload scripts
# contents: 8 x md5(random()) = 256 hex characters, fresh per transaction.
# collection: one of 'subledger:0'..'subledger:3'.
cat >"$WORK/plain.sql" <<'EOF'
\set c random(0, 3)
INSERT INTO entries (collection, contents, digest)
SELECT 'subledger:' || :c::int, x, sha256(convert_to(x, 'UTF8'))
FROM (SELECT string_agg(md5(random()::text), '') AS x FROM generate_series(1, 8)) AS e;
EOF

# One statement = one transaction. The UPDATE locks the single head row, so appends are
# serialised; a waiting UPDATE is re-evaluated against the committed new head (READ COMMITTED),
# so its hash extends the latest one.
cat >"$WORK/chain.sql" <<'EOF'
\set c random(0, 3)
WITH e AS MATERIALIZED (
  SELECT 'subledger:' || :c::int AS collection, x AS contents, sha256(convert_to(x, 'UTF8')) AS digest
  FROM (SELECT string_agg(md5(random()::text), '') AS x FROM generate_series(1, 8)) AS r
), h AS (
  UPDATE chain_head SET seq = seq + 1, hash = sha256(hash || (SELECT digest FROM e))
  RETURNING seq, hash
)
INSERT INTO chain (seq, collection, contents, digest, hash)
SELECT h.seq, e.collection, e.contents, e.digest, h.hash FROM e, h;
EOF
chown "$PG_OWNER" "$WORK"/*.sql

setup_plain() {
  "${PSQL[@]}" <<'EOF'
SET client_min_messages = warning;
DROP TABLE IF EXISTS entries;
CREATE TABLE entries (id bigserial PRIMARY KEY, collection text NOT NULL, contents text NOT NULL,
                      digest bytea NOT NULL);
CHECKPOINT;
EOF
}

setup_chain() {
  "${PSQL[@]}" <<'EOF'
SET client_min_messages = warning;
DROP TABLE IF EXISTS chain;
DROP TABLE IF EXISTS chain_head;
CREATE TABLE chain_head (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, hash bytea NOT NULL);
INSERT INTO chain_head VALUES (1, 0, decode(repeat('00', 32), 'hex'));  -- genesis: 32 zero bytes
CREATE TABLE chain (seq bigint PRIMARY KEY, collection text NOT NULL, contents text NOT NULL,
                    digest bytea NOT NULL, hash bytea NOT NULL);
-- Append-only: refuse UPDATE, DELETE and TRUNCATE (what a user adds for tamper evidence).
CREATE OR REPLACE FUNCTION chain_append_only() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'chain is append-only'; END $$;
CREATE TRIGGER chain_no_update BEFORE UPDATE OR DELETE ON chain
  FOR EACH ROW EXECUTE FUNCTION chain_append_only();
CREATE TRIGGER chain_no_truncate BEFORE TRUNCATE ON chain
  FOR EACH STATEMENT EXECUTE FUNCTION chain_append_only();
CHECKPOINT;
EOF
}

# Prints "rows ok" or "rows FAILED: ..." ; every row's digest and hash link is recomputed.
VERIFY_SQL="$(cat <<'EOF'
WITH stats AS (
  SELECT count(*) AS n, coalesce(min(seq), 1) AS lo, coalesce(max(seq), 0) AS hi FROM chain
), bad_digest AS (
  SELECT count(*) AS k FROM chain WHERE digest IS DISTINCT FROM sha256(convert_to(contents, 'UTF8'))
), bad_link AS (
  SELECT count(*) AS k
  FROM chain c LEFT JOIN chain p ON p.seq = c.seq - 1
  WHERE c.hash IS DISTINCT FROM
        sha256(CASE WHEN c.seq = 1 THEN decode(repeat('00', 32), 'hex') ELSE p.hash END || c.digest)
), head AS (
  SELECT h.seq, h.hash, (SELECT hash FROM chain WHERE seq = h.seq) AS last_hash FROM chain_head h
)
SELECT s.n || ' ' ||
       CASE WHEN s.n = s.hi AND s.lo = 1 AND d.k = 0 AND l.k = 0 AND hd.seq = s.hi
                 AND (s.n = 0 OR hd.hash = hd.last_hash)
            THEN 'ok'
            ELSE format('FAILED: rows=%s min_seq=%s max_seq=%s head_seq=%s bad_digests=%s bad_links=%s head_matches_last=%s',
                        s.n, s.lo, s.hi, hd.seq, d.k, l.k, hd.hash = hd.last_hash)
       END
FROM stats s, bad_digest d, bad_link l, head hd;
EOF
)"
verify_chain() {
  "${PSQL[@]}" -A -t -c "$VERIFY_SQL"
}

# Self-test of the verifier: tamper with one row's contents inside a transaction that is rolled
# back, and require that verification then fails.
selftest_verifier() {
  local out
  out="$("${PSQL[@]}" -A -t <<EOF
BEGIN;
ALTER TABLE chain DISABLE TRIGGER chain_no_update;
-- change the contents and its digest consistently: only the hash links can catch this
UPDATE chain SET contents = 'tampered' || substr(contents, 9),
                 digest = sha256(convert_to('tampered' || substr(contents, 9), 'UTF8'))
 WHERE seq = (SELECT max(seq) / 2 + 1 FROM chain);
$VERIFY_SQL
ROLLBACK;
EOF
)"
  if [[ "$out" != *FAILED* ]]; then
    echo "verifier self-test: tampering was NOT detected: $out" >&2; exit 1
  fi
  echo "  verifier self-test: a tampered row is detected (${out#* })" >&2
}

# ---------------------------------------------------------------- run
echo "# PostgreSQL baseline  $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "# $("$PGBIN/postgres" --version); data dir $PGDATA ($FSTYPE, $(df --output=source "$BASE_DIR" | tail -1)); 127.0.0.1:$PORT"
echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "# settings: $("${PSQL[@]}" -A -t -c "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync','synchronous_commit','full_page_writes','wal_sync_method','shared_buffers','max_wal_size','max_connections','commit_delay','wal_level')")"
echo "# entry: ${ENTRY_BYTES}-byte contents; pgbench -n -M prepared -j 2 -T $DURATION; clients $CLIENTS; $RUNS run(s) each"

# CPU clock ticks used so far by the whole PostgreSQL server: the postmaster, its live children
# (background writers, WAL writer, checkpointer) and, through cutime/cstime, every backend that
# has exited (pgbench's connections, once it is done).
pg_cpu_ticks() {
  local pm child total
  pm="$(head -1 "$PGDATA/postmaster.pid")"
  total="$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")"
  for child in $(pgrep -P "$pm"); do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}
HZ="$(getconf CLK_TCK)"

RESULTS="$WORK/results.tsv"   # workload clients run tps latency_ms server_us client_us
: >"$RESULTS"
for workload in plain tls chain; do
  # The tls workload is the plain one (table and statement) over TLS with a client certificate.
  script="${workload/tls/plain}"
  for c in "${CLIENT_LIST[@]}"; do
    for ((r = 1; r <= RUNS; r++)); do
      "setup_$script"
      out="$WORK/pgbench.out"
      # In the background + wait, so that a signal to this script is handled at once.
      connect=(env)
      [[ $workload == tls ]] && connect=("${TLS_ENV[@]}")
      cpu_before="$(pg_cpu_ticks)"
      /usr/bin/time -f "%U %S" -o "$WORK/pgbench.cpu" \
        "${AS_PG[@]}" "${connect[@]}" "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -n -f "$WORK/$script.sql" \
          -c "$c" -j 2 -T "$DURATION" -M prepared bench >"$out" 2>&1 &
      PGBENCH_PID=$!
      if ! wait "$PGBENCH_PID"; then
        PGBENCH_PID=""
        echo "pgbench failed ($workload, $c clients, run $r):" >&2; cat "$out" >&2; exit 1
      fi
      PGBENCH_PID=""
      sleep 0.5   # the backends exit and are reaped into the postmaster's cutime
      cpu_after="$(pg_cpu_ticks)"
      tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")"
      lat="$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$out")"
      failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")"
      if [[ -z "$tps" || -z "$lat" ]]; then
        echo "could not parse pgbench output:" >&2; cat "$out" >&2; exit 1
      fi
      if [[ -n "$failed" && "$failed" != "0" ]]; then
        echo "pgbench reports $failed failed transactions:" >&2; cat "$out" >&2; exit 1
      fi
      check=""
      if [[ $workload == chain ]]; then
        check="$(verify_chain)"
        if [[ "$check" != *" ok" ]]; then
          echo "HASH CHAIN VERIFICATION FAILED after $workload/$c/run $r: $check" >&2; exit 1
        fi
        check="  chain verified: ${check% ok} rows"
      fi
      # CPU per transaction: the server's (all its processes) and pgbench's.
      read -r server_us client_us < <(python3 -c "
import sys
tps, secs, ticks, hz = float('$tps'), float('$DURATION'), int('$cpu_after') - int('$cpu_before'), int('$HZ')
u, s = map(float, open('$WORK/pgbench.cpu').read().split()[-2:])
ops = tps * secs
print(f'{ticks / hz / ops * 1e6:.1f} {(u + s) / ops * 1e6:.1f}')")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$c" "$r" "$tps" "$lat" "$server_us" "$client_us" >>"$RESULTS"
      printf '  %-5s clients=%-4s run %d/%d: tps=%s latency=%s ms server %s us/tx pgbench %s us/tx%s\n' "$workload" "$c" "$r" "$RUNS" "$tps" "$lat" "$server_us" "$client_us" "$check" >&2
    done
  done
done

selftest_verifier
[[ "$(verify_chain)" == *" ok" ]] || { echo "chain does not verify after the self-test rollback" >&2; exit 1; }

python3 - "$RESULTS" "$JSON" "$DURATION" "$ENTRY_BYTES" <<'EOF'
import json, statistics, sys
path, json_path, duration, entry = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = {}
for line in open(path):
    w, c, r, tps, lat, srv, cli = line.split("\t")
    rows.setdefault((w, int(c)), []).append((float(tps), float(lat), float(srv), float(cli)))
out = []
print()
print(f"{'workload':<9}{'clients':>8}{'median tps':>12}{'median latency ms':>19}{'srv us/tx':>10}{'pgbench us/tx':>14}  runs (tps)")
for (w, c), v in rows.items():
    tps = [x[0] for x in v]
    lat = [x[1] for x in v]
    m, ml = statistics.median(tps), statistics.median(lat)
    srv, cli = statistics.median([x[2] for x in v]), statistics.median([x[3] for x in v])
    print(f"{w:<9}{c:>8}{m:>12.0f}{ml:>19.2f}{srv:>10.1f}{cli:>14.1f}  " + ", ".join(f"{t:.0f}" for t in tps))
    out.append({"workload": w, "clients": c, "runs": tps, "median_tps": m,
                "latency_ms": ml, "latency_ms_runs": lat,
                "server_cpu_us_per_tx": srv, "client_cpu_us_per_tx": cli,
                "duration_s": duration, "entry_bytes": entry})
if json_path:
    with open(json_path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"\nJSON written to {json_path}")
EOF
