#!/usr/bin/env python3
"""Raw fdatasync ceiling of a disk (issue 7 baseline). Python 3 standard library only.

Single thread, one file per run, in a fresh temp dir under --dir (default /var/tmp, which on the
reference machine is the same ext4 filesystem as /work). Workloads:

  append-256      write(256 B) + fdatasync per record, file grows (every sync also commits the
                  new file size: what an append-only log without preallocation pays)
  overwrite-256   pwrite(256 B) + fdatasync per record into a file preallocated with zeros and
                  synced beforehand (what PostgreSQL's WAL, with its pre-zeroed segments, pays)
  append-512KiB   write(512 KiB = 2048 records) + fdatasync per batch: the bandwidth side

Each workload runs in two CPU modes (--cpu both, the default):

  idle   nothing else of ours running. On a VM whose vCPUs halt when idle (the reference
         Firecracker VM), the flush's completion is then only noticed at the next host timer
         tick: about 4 ms per sync, whatever the disk does.
  busy   one busy-loop process per CPU at nice 19 runs alongside, so the vCPU never halts: the
         disk's own flush latency. A loaded server is in this state.

Reports per workload and mode: syncs/s, records/s, MB/s, and write+fdatasync latency p50/p99 in
ms; the median over --runs runs (each run's own p50/p99, then the median of those).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

RECORD = 256
BATCH = 512 * 1024
PREALLOC = 64 * 1024 * 1024  # overwrite-256 wraps around inside this many bytes


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def run_once(directory, workload, duration):
    path = os.path.join(directory, f"{workload}.dat")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        if workload == "overwrite-256":
            chunk = bytes(1024 * 1024)
            for _ in range(PREALLOC // len(chunk)):
                os.write(fd, chunk)
            os.fsync(fd)
            size = PREALLOC
        payload_len = BATCH if workload == "append-512KiB" else RECORD
        # Distinct bytes per op so nothing can be deduplicated or elided.
        base = os.urandom(payload_len)
        lat = []
        ops = 0
        offset = 0
        pc = time.perf_counter_ns
        start = pc()
        deadline = start + int(duration * 1e9)
        if workload == "overwrite-256":
            while True:
                buf = ops.to_bytes(8, "little") + base[8:]
                t0 = pc()
                os.pwrite(fd, buf, offset)
                os.fdatasync(fd)
                t1 = pc()
                lat.append(t1 - t0)
                ops += 1
                offset += RECORD
                if offset + RECORD > size:
                    offset = 0
                if t1 >= deadline:
                    break
        else:
            while True:
                buf = ops.to_bytes(8, "little") + base[8:]
                t0 = pc()
                n = os.write(fd, buf)
                if n != len(buf):
                    raise OSError(f"short write {n}")
                os.fdatasync(fd)
                t1 = pc()
                lat.append(t1 - t0)
                ops += 1
                if t1 >= deadline:
                    break
        elapsed = (pc() - start) / 1e9
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    records = ops * (payload_len // RECORD)
    return {
        "syncs_per_s": ops / elapsed,
        "records_per_s": records / elapsed,
        "mb_per_s": ops * payload_len / elapsed / 1e6,
        "p50_ms": percentile(lat, 0.50) / 1e6,
        "p99_ms": percentile(lat, 0.99) / 1e6,
        "syncs": ops,
        "seconds": elapsed,
    }


@contextmanager
def cpu_burners(enabled):
    """One nice-19 busy loop per CPU while enabled, killed (by pid) on exit."""
    procs = []
    try:
        if enabled:
            for _ in range(os.cpu_count() or 1):
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", "import os\nos.nice(19)\nwhile True: pass"]))
            time.sleep(0.2)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def run_workload(directory, w, mode, args):
    runs = []
    for r in range(args.runs):
        res = run_once(directory, w, args.duration)
        runs.append(res)
        print(f"  {w:<14} cpu {mode:<4} run {r + 1}/{args.runs}: {res['syncs_per_s']:,.0f} syncs/s "
              f"p50 {res['p50_ms']:.3f} ms p99 {res['p99_ms']:.3f} ms", file=sys.stderr, flush=True)

    def med(k):
        return statistics.median(x[k] for x in runs)

    return {
        "workload": w,
        "cpu": mode,
        "bytes_per_sync": BATCH if w == "append-512KiB" else RECORD,
        "runs": [round(x["syncs_per_s"], 1) for x in runs],
        "median_ops_s": med("syncs_per_s"),
        "median_records_s": med("records_per_s"),
        "median_mb_s": med("mb_per_s"),
        "latency_ms": {"p50": med("p50_ms"), "p99": med("p99_ms")},
        "latency_ms_runs": [{"p50": x["p50_ms"], "p99": x["p99_ms"]} for x in runs],
        "duration_s": args.duration,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run and workload (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per workload, median reported (default 3)")
    ap.add_argument("--dir", default=os.environ.get("BASELINE_DIR", "/var/tmp"),
                    help="parent of the temp dir holding the test file (default $BASELINE_DIR or /var/tmp)")
    ap.add_argument("--workloads", default="append-256,overwrite-256,append-512KiB",
                    help="comma-separated subset (default: all three)")
    ap.add_argument("--cpu", choices=("idle", "busy", "both"), default="both",
                    help="run with the CPUs left idle, kept busy by nice-19 spinners, or both (default)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--quick", action="store_true", help="smoke run: --duration 2 --runs 1")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.runs = 2.0, 1
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in ("append-256", "overwrite-256", "append-512KiB"):
            ap.error(f"unknown workload {w}")
    if args.runs < 1 or args.duration <= 0:
        ap.error("--runs must be >= 1 and --duration > 0")

    os.makedirs(args.dir, exist_ok=True)
    df = subprocess.run(["df", "--output=source,fstype,target", args.dir],
                        capture_output=True, text=True).stdout.strip().splitlines()[-1].split()
    if len(df) >= 2 and df[1] in ("tmpfs", "ramfs"):
        sys.exit(f"refusing: {args.dir} is on {df[1]}; use --dir on a real disk")
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(f"# fdatasync baseline  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"# dir {args.dir} on {' '.join(df)}; {os.cpu_count()} CPUs, {cpu}")
    modes = ["idle", "busy"] if args.cpu == "both" else [args.cpu]
    print(f"# {args.duration:g} s per run, {args.runs} run(s) per workload, single thread; cpu: {', '.join(modes)}")

    tmp = tempfile.mkdtemp(prefix="cledger-fsyncbaseline.", dir=args.dir)
    results = []
    try:
        for mode in modes:
            with cpu_burners(mode == "busy"):
                for w in workloads:
                    results.append(run_workload(tmp, w, mode, args))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'workload':<15}{'cpu':<6}{'syncs/s':>10}{'records/s':>12}{'MB/s':>9}{'p50 ms':>9}{'p99 ms':>9}  runs (syncs/s)")
    for x in results:
        print(f"{x['workload']:<15}{x['cpu']:<6}{x['median_ops_s']:>10,.0f}{x['median_records_s']:>12,.0f}"
              f"{x['median_mb_s']:>9.1f}{x['latency_ms']['p50']:>9.3f}{x['latency_ms']['p99']:>9.3f}  "
              + ", ".join(f"{v:,.0f}" for v in x["runs"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        print(f"\nJSON written to {args.json}")


if __name__ == "__main__":
    main()
