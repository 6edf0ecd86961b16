"""Job arrays against the same jobs submitted otherwise (issue 20.4), one real server each.

    .venv/bin/python bench/arrays.py [--tasks 100000] [--run 1000] [--concurrency 8]

1. Submit: an array of `--tasks` tasks (one request, one row) vs. a batch submit of the
   same number of jobs (one request, a row each). Time of the request.
2. Throughput: `--run` no-op host-process tasks, concurrency `--concurrency` (the array's
   %N), from submit to all succeeded, vs. the same jobs submitted one by one (a client
   loop of single submits) at the same concurrency (the capacity allows that many).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dispatch import admin_client, start_server, wait_all_final  # noqa: E402

JOB = {"command": ["true"], "cpus": "0.1", "mem": "16"}  # 1 MiB: now and then the kernel OOM-kills `true`


def submit_times(n: int) -> tuple[float, float]:
    s = start_server(1.0, KRAN_QUEUE_MAX=str(2 * n + 10), KRAN_SERVER_MAX_BODY_MB="256")
    try:
        with admin_client(s, timeout=600) as c:
            t = time.perf_counter()
            c.post("/api/v1/arrays", json={"array": f"0-{n - 1}", "job": {**JOB, "cpus": "1"}}).raise_for_status()
            array = time.perf_counter() - t
            t = time.perf_counter()
            c.post("/api/v1/jobs/batch", json={"jobs": [{**JOB, "cpus": "1"}] * n}).raise_for_status()
            batch = time.perf_counter() - t
            return array, batch
    finally:
        s.stop()


def array_run(n: int, concurrency: int) -> float:
    s = start_server(0.1 * concurrency + 0.05)
    try:
        with admin_client(s) as c:
            t = time.perf_counter()
            a = c.post("/api/v1/arrays", json={"array": f"0-{n - 1}%{concurrency}", "job": JOB}).json()
            while c.get(f"/api/v1/arrays/{a['id']}").json()["state"] != "done":
                time.sleep(0.05)
            took = time.perf_counter() - t
            tasks = c.get(f"/api/v1/arrays/{a['id']}").json()["tasks"]
            if tasks != {"succeeded": n}:
                raise SystemExit(f"array tasks: {tasks}")
            return took
    finally:
        s.stop()


def one_by_one(n: int, concurrency: int) -> float:
    s = start_server(0.1 * concurrency + 0.05)
    try:
        with admin_client(s) as c:
            t = time.perf_counter()
            for _ in range(n):
                c.post("/api/v1/jobs", json=JOB).raise_for_status()
            wait_all_final(c, n)
            return time.perf_counter() - t
    finally:
        s.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--run", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    array, batch = submit_times(args.tasks)
    print(f"submit {args.tasks} tasks: array {array * 1000:.0f} ms, batch of jobs {batch * 1000:.0f} ms")
    a = array_run(args.run, args.concurrency)
    o = one_by_one(args.run, args.concurrency)
    print(
        f"{args.run} tasks at {args.concurrency} at once: array {args.run / a:.0f} tasks/s, "
        f"one by one {args.run / o:.0f} jobs/s ({a / o:.2f} x the makespan)"
    )


if __name__ == "__main__":
    main()
