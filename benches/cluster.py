#!/usr/bin/env python3
"""The cluster figures of docs/PERFORMANCE.md, from one run on this machine (all nodes and the
load generator share its cores):

1. committed writes/s and p50/p99 commit latency of one node, then of a 3-node cluster driven
   through its primary (`cledger bench`, mTLS, HTTP/1.1 as the Azure SDKs; or, with
   `--generator h2load`, h2load over HTTP/1.1 with a bearer token, a cheaper generator that
   leaves more of the cores to the nodes), in alternating runs (RUNS each, medians reported),
   with the CPU each node used per committed write (from /proc/PID/stat) and the generator's
   (from getrusage of the finished child);
2. failover: KILLS times, SIGKILL the primary under continuous writes and time from the kill
   to the first write a new primary commits (median and max), restarting the killed node;
3. catch-up: a node joining a ledger of CATCHUP transactions (filled through the primary), time
   until it has committed them all (transactions/s).

    benches/cluster.py [--runs 3] [--seconds 10] [--connections 64] [--kills 20] [--catchup 20000]
                       [--parts throughput,failover,catchup] [--generator bench|h2load]
                       [--cluster-also-at N,...] [--serve-arg ARG ...]

`--cluster-also-at 16` also measures the cluster at 16 connections in each run (reported as
`cluster3-c16`), for its commit latency below the peak; `--serve-arg` passes an argument to
every node of the throughput part (for example `--serve-arg=--signature-interval-ms=1`).

Needs a release build (`cargo build --release -p cledger`); h2load also needs h2load
(nghttp2-client) and node (benches/token.mjs makes the token). Raw results go to
benches/results/cluster-PARTS.json (cluster-PARTS-h2load.json with h2load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("CLEDGER_BIN") or ROOT / "target" / "release" / "cledger")
READY = re.compile(r"^listening on https://127\.0\.0\.1:(\d+)")
HZ = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A `cledger serve` process; a cluster node (`peer=True`) keeps its two ports across
    restarts, since the cluster knows it by its addresses."""

    def __init__(self, data: Path, *extra: str, peer: bool = False):
        self.data, self.extra, self.proc = data, extra, None
        self.port = free_port()
        if peer:
            self.extra = ("--peer-listen", f"127.0.0.1:{free_port()}", *extra)

    def start(self) -> "Node":
        self.data.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.data.parent / f"{self.data.name}.log", "a")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}",
             "--log-level", os.environ.get("BENCH_LOG", "warn"), *self.extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        for line in self.proc.stdout:
            if READY.match(line.strip()):
                threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
                return self
        raise SystemExit(f"{self.data} did not start")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def cpu_ticks(self) -> int:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def context(admin_dir: Path, client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(admin_dir / "service_cert.pem"))
    if client_cert:
        ctx.load_cert_chain(str(admin_dir / "admin.pem"))
    return ctx


def get(node: Node, admin_dir: Path, path: str) -> dict:
    with urllib.request.urlopen(node.url + path, context=context(admin_dir, False), timeout=5) as r:
        return json.loads(r.read())


def post(node: Node, admin_dir: Path, path: str, body: dict, timeout: float = 10) -> tuple[int, dict]:
    req = urllib.request.Request(node.url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, context=context(admin_dir), timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}
    except (urllib.error.URLError, OSError):  # a killed node: refused, reset, timed out
        return 0, {}


def is_primary(node: Node, admin_dir: Path) -> bool:
    try:
        return get(node, admin_dir, "/node/consensus")["details"]["leadership_state"] == "Leader"
    except Exception:  # noqa: BLE001
        return False


def primary(nodes: list[Node], admin_dir: Path, timeout: float = 30) -> Node:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in nodes:
            if n.proc.poll() is None and is_primary(n, admin_dir):
                return n
        time.sleep(0.05)
    raise SystemExit("no primary")


def form_cluster(base: Path, size: int, extra: tuple[str, ...] = ()) -> list[Node]:
    founder = Node(base / "n1", *extra, peer=True).start()
    admin = founder.data
    primary([founder], admin)
    nodes = [founder]
    for i in range(2, size + 1):
        status, token = post(founder, admin, "/node/join-tokens", {"expires_in_seconds": 600})
        assert status == 200, status
        tf = base / f"n{i}.token"
        tf.write_text(token["token"])
        nodes.append(Node(base / f"n{i}", "--join", founder.url, "--service-cert",
                          str(admin / "service_cert.pem"), "--join-token", str(tf), *extra, peer=True).start())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cfg = get(founder, admin, "/node/consensus")["details"]["configs"][0]["nodes"]
        if sum(v["voter"] for v in cfg.values()) == size:
            return nodes
        time.sleep(0.1)
    raise SystemExit("cluster did not form")


class Tokens:
    """A bearer-token user for h2load: a JWKS file every node trusts, a token for `bench-user`
    and a 256-byte entry to post (as benches/token-load.sh does for one node)."""

    def __init__(self, base: Path):
        self.jwks, self.body = base / "jwks.json", base / "body.json"
        self.token = subprocess.run(["node", str(ROOT / "benches" / "token.mjs"), str(self.jwks), "bench-user"],
                                    check=True, capture_output=True, text=True).stdout.strip()
        self.body.write_text(json.dumps({"contents": "a" * 256}))

    def serve_args(self) -> tuple[str, ...]:
        return ("--jwt-issuer", "https://issuer.test", "--jwt-audience", "cledger",
                "--jwt-jwks-file", str(self.jwks), "--jwt-tenant-id", "t1")

    def grant(self, node: Node, admin_dir: Path):
        """Makes bench-user a Contributor, through `node` (the primary of a cluster)."""
        req = urllib.request.Request(node.url + "/app/users/bench-user?api-version=2022-05-13",
                                     data=b'{"assignedRole":"Contributor"}', method="PATCH",
                                     headers={"content-type": "application/merge-patch+json"})
        with urllib.request.urlopen(req, context=context(admin_dir), timeout=10) as r:
            assert r.status == 200, r.status

    def load(self, target: Node, seconds: int, connections: int, out: Path) -> dict:
        """h2load over HTTP/1.1, one request at a time per connection, after a 2 s warm-up: the
        rate, and p50/p99 from its per-request log. Fails if any request failed."""
        log = out.with_suffix(".log")
        log.unlink(missing_ok=True)  # h2load appends
        report = subprocess.run(
            ["h2load", "--h1", "-D", str(seconds), "--warm-up-time", "2", "-c", str(connections), "-m", "1",
             "-t", "1", "-d", str(self.body), "--log-file", str(log),
             "-H", f"authorization: Bearer {self.token}", "-H", "content-type: application/json",
             target.url + "/app/transactions?api-version=2022-05-13"],
            check=True, capture_output=True, text=True).stdout
        done, ok = (int(x) for x in re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", report).groups())
        if ok != done:
            sys.exit(f"h2load: {done - ok} requests failed:\n{report}")
        latencies = sorted(int(line.split()[2]) for line in log.read_text().splitlines())
        result = {"phases": [{
            "ops_per_sec": float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", report).group(1)),
            "latency_ms": {"p50": latencies[len(latencies) // 2] / 1000,
                           "p99": latencies[len(latencies) * 99 // 100] / 1000},
            "errors": done - ok,
        }]}
        out.write_text(json.dumps(result))
        return result


def bench(target: Node, admin_dir: Path, seconds: int, connections: int, out: Path) -> dict:
    subprocess.run(
        [str(BIN), "bench", "--endpoint", target.url, "--cert", str(admin_dir / "admin.pem"),
         "--service-cert", str(admin_dir / "service_cert.pem"), "--phases", "append",
         "--connections", str(connections), "--duration", str(seconds), "--warmup", "2",
         "--output", str(out)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return json.loads(out.read_text())


def measured(nodes: list[Node], target: Node, admin_dir: Path, seconds: int, connections: int, out: Path,
             tokens: Tokens | None = None) -> dict:
    before = [n.cpu_ticks() for n in nodes]
    # The generator is the only child that ends meanwhile: the nodes run on, unwaited.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if tokens:
        result = tokens.load(target, seconds, connections, out)
    else:
        result = bench(target, admin_dir, seconds, connections, out)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = [n.cpu_ticks() for n in nodes]
    phase = result["phases"][0]
    writes = phase["ops_per_sec"] * (seconds + 2)  # the warm-up used CPU too
    generator_s = (children_after.ru_utime - children_before.ru_utime
                   + children_after.ru_stime - children_before.ru_stime)
    return {
        "writes_per_sec": phase["ops_per_sec"],
        "p50_ms": phase["latency_ms"]["p50"],
        "p99_ms": phase["latency_ms"]["p99"],
        "errors": phase["errors"],
        "cpu_us_per_write": [round((a - b) / HZ / writes * 1e6, 1) for a, b in zip(after, before)],
        "generator_cpu_us_per_write": round(generator_s / writes * 1e6, 1),
    }


def throughput(base: Path, runs: int, seconds: int, connections: int, generator: str,
               also_at: list[int], serve_args: tuple[str, ...]) -> dict:
    tokens = Tokens(base) if generator == "h2load" else None
    extra = (tokens.serve_args() if tokens else ()) + serve_args
    single = Node(base / "single", *extra).start()
    cluster = form_cluster(base / "c3", 3, extra)
    admin = cluster[0].data
    if tokens:
        tokens.grant(single, single.data)
        tokens.grant(primary(cluster, admin), admin)
    results = {"single": [], "cluster3": []} | {f"cluster3-c{c}": [] for c in also_at}
    try:
        for r in range(runs):
            results["single"].append(
                measured([single], single, single.data, seconds, connections, base / f"s{r}.json", tokens))
            p = primary(cluster, admin)
            ordered = [p] + [n for n in cluster if n is not p]
            results["cluster3"].append(measured(ordered, p, admin, seconds, connections, base / f"c{r}.json", tokens))
            for c in also_at:
                results[f"cluster3-c{c}"].append(
                    measured(ordered, p, admin, seconds, c, base / f"c{r}-{c}.json", tokens))
    finally:
        single.stop()
        for n in cluster:
            n.stop()
    return results


def commit_seqno(node: Node, admin_dir: Path) -> int:
    return int(get(node, admin_dir, "/node/commit")["transaction_id"].split(".")[1])


def caught_up(node: Node, nodes: list[Node], admin_dir: Path, timeout: float = 60):
    """Waits until `node` has committed what the primary had when asked, then a second more
    for the cluster to settle."""
    target = commit_seqno(primary(nodes, admin_dir), admin_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if commit_seqno(node, admin_dir) >= target:
                time.sleep(1)
                return
        except (urllib.error.URLError, OSError, KeyError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{node.data.name} did not catch up")


def failover(base: Path, kills: int) -> dict:
    nodes = form_cluster(base, 3)
    admin = nodes[0].data
    stop = threading.Event()
    acknowledged = []
    times = []

    def writer():
        i = 0
        while not stop.is_set():
            for n in nodes:
                if n.proc.poll() is None:
                    sent = time.monotonic()
                    status, body = post(n, admin, "/app/transactions?api-version=2022-05-13",
                                        {"contents": f"load {i}"}, timeout=3)
                    if status == 200:
                        acknowledged.append((sent, time.monotonic()))
                        i += 1
                        break
            else:
                time.sleep(0.01)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(kills):
            # Ask just before the kill: a node that restarted may have started an election
            # since (openraft has no pre-vote), and killing a former primary times nothing.
            victim = primary(nodes, admin)
            killed_at = time.monotonic()
            victim.kill()
            # Only writes sent after the kill count: an answer the victim sent just before it
            # died may be read after.
            def after_kill():
                return [acked for sent, acked in list(acknowledged) if sent > killed_at]
            while not after_kill():
                if time.monotonic() - killed_at > 30:
                    raise SystemExit("no write committed within 30 s of a kill")
                time.sleep(0.005)
            times.append(min(after_kill()) - killed_at)
            victim.start()
            caught_up(victim, nodes, admin)
    finally:
        stop.set()
        for n in nodes:
            n.stop()
    return {"kills": kills, "median_s": statistics.median(times), "max_s": max(times),
            "seconds": [round(t, 3) for t in times], "writes": len(acknowledged)}


def catchup(base: Path, count: int) -> dict:
    founder = Node(base / "n1", peer=True).start()
    admin = founder.data
    primary([founder], admin)
    subprocess.run(
        [str(BIN), "bench", "--endpoint", founder.url, "--cert", str(admin / "admin.pem"),
         "--service-cert", str(admin / "service_cert.pem"), "--phases", "append",
         "--connections", "64", "--count", str(count), "--warmup", "0"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    commit = get(founder, admin, "/node/commit")["transaction_id"]
    seqno = int(commit.split(".")[1])
    status, token = post(founder, admin, "/node/join-tokens", {})
    (base / "t").write_text(token["token"])
    t0 = time.monotonic()
    joiner = Node(base / "n2", "--join", founder.url, "--service-cert", str(admin / "service_cert.pem"),
                  "--join-token", str(base / "t"), peer=True).start()
    while commit_seqno(joiner, admin) < seqno:
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    joiner.stop()
    founder.stop()
    return {"transactions": seqno, "seconds": round(elapsed, 2), "per_sec": round(seqno / elapsed)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--catchup", type=int, default=20000)
    ap.add_argument("--parts", default="throughput,failover,catchup")
    ap.add_argument("--generator", choices=["bench", "h2load"], default="bench",
                    help="what drives the throughput part (failover and catch-up use cledger bench)")
    ap.add_argument("--cluster-also-at", default="",
                    help="also measure the cluster at these connection counts (comma-separated)")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="an argument for every node of the throughput part (repeatable)")
    args = ap.parse_args()
    also_at = [int(c) for c in args.cluster_also_at.split(",") if c]
    parts = args.parts.split(",")
    if not BIN.exists():
        sys.exit("build it first: cargo build --release -p cledger")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as tmp:
        base = Path(tmp)
        (base / "tp").mkdir()
        (base / "fo").mkdir()
        (base / "cu").mkdir()
        results = {}
        if "throughput" in parts:
            results["throughput"] = throughput(base / "tp", args.runs, args.seconds, args.connections,
                                               args.generator, also_at, tuple(args.serve_arg))
        if "failover" in parts:
            results["failover"] = failover(base / "fo", args.kills)
        if "catchup" in parts:
            results["catchup"] = catchup(base / "cu", args.catchup)
    (ROOT / "benches" / "results").mkdir(exist_ok=True)
    suffix = "-h2load" if args.generator == "h2load" else ""
    (ROOT / "benches" / "results" / f"cluster-{'-'.join(parts)}{suffix}.json").write_text(json.dumps(results, indent=1))
    med = statistics.median
    for name, rs in results.get("throughput", {}).items():
        cpu = [med([r["cpu_us_per_write"][i] for r in rs]) for i in range(len(rs[0]["cpu_us_per_write"]))]
        print(f"{name:13} writes/s {med([r['writes_per_sec'] for r in rs]):8.0f}  p50 {med([r['p50_ms'] for r in rs]):6.2f} ms"
              f"  p99 {med([r['p99_ms'] for r in rs]):6.2f} ms  CPU us/write per node {cpu}"
              f"  generator {med([r['generator_cpu_us_per_write'] for r in rs]):.1f}"
              f"  runs {[round(r['writes_per_sec']) for r in rs]}")
    if f := results.get("failover"):
        print(f"failover  {f['kills']} kills: median {f['median_s']:.2f} s, max {f['max_s']:.2f} s ({f['writes']} writes acknowledged)")
    if c := results.get("catchup"):
        print(f"catch-up  {c['transactions']} transactions in {c['seconds']} s = {c['per_sec']}/s")


if __name__ == "__main__":
    main()
