"""Scale without a cluster (issue 23.6): a server holding many queued jobs.

    .venv/bin/python bench/scale.py [--queued 100000] [--stored 1000000]

A default server (SQLite) whose only cpu is held by one blocker job, so every job submitted
after it stays queued. Jobs are submitted in batches of 1,000 (`POST /api/v1/jobs/batch`)
up to --queued, then the server's RSS (VmRSS) is read and these are timed (median of 20,
after a warm-up): the first page of `GET /api/v1/jobs` (50 jobs), `GET /api/v1/status`
(what `kran status` shows), one job's view and a dispatcher pass's worth of CPU (the
server's CPU seconds over 10 s idle with the queue full). Then more jobs up to --stored
and the same again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dispatch import admin_client, start_server  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(c: httpx.Client, path: str, n: int = 20) -> float:
    c.get(path).raise_for_status()
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        c.get(path).raise_for_status()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs) * 1000


def fill(c: httpx.Client, upto: int, have: int) -> int:
    job = {"command": ["true"], "cpus": "1", "mem": "1"}
    while have < upto:
        n = min(1000, upto - have)
        c.post("/api/v1/jobs/batch", json={"jobs": [job] * n}, timeout=300).raise_for_status()
        have += n
    return have


def report(c: httpx.Client, pid: int, queued: int, some_job: int) -> None:
    before = cpu_s(pid)
    time.sleep(10)
    idle = (cpu_s(pid) - before) / 10
    print(
        f"{queued:>9} queued: RSS {rss_mb(pid):6.0f} MB; list {timed(c, '/api/v1/jobs?limit=50'):6.1f} ms; "
        f"status {timed(c, '/api/v1/status'):6.1f} ms; one job {timed(c, f'/api/v1/jobs/{some_job}'):5.1f} ms; "
        f"server CPU while it waits {idle * 100:4.1f} %",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queued", type=int, default=100_000)
    ap.add_argument("--stored", type=int, default=1_000_000)
    args = ap.parse_args()
    server = start_server(cpus=1, KRAN_QUEUE_MAX=str(args.stored + 10))
    try:
        assert server.proc is not None
        pid = server.proc.pid
        with admin_client(server, timeout=300) as c:
            c.post("/api/v1/jobs", json={"command": ["sleep", "3600"], "cpus": "1", "mem": "1"}).raise_for_status()
            print(f"{0:>9} queued: RSS {rss_mb(pid):6.0f} MB (idle server)", flush=True)
            t0 = time.perf_counter()
            have = fill(c, args.queued, 0)
            print(f"  submitted {have} in {time.perf_counter() - t0:.0f} s", flush=True)
            report(c, pid, have, have // 2)
            if args.stored > have:
                t0 = time.perf_counter()
                have = fill(c, args.stored, have)
                print(f"  submitted up to {have} in {time.perf_counter() - t0:.0f} s", flush=True)
                report(c, pid, have, have // 2)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
