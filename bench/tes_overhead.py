"""TES overhead: the same container through TES and through kran's own API, in one run.

    .venv/bin/python bench/tes_overhead.py [--n 100]

For each of N busybox `sleep 2` tasks/jobs, one after the other on an idle server: the time
from the create/submit request to the moment the server first says RUNNING (polled every
20 ms: TES view MINIMAL, kran's job view), median and p90, and their ratio. Then py-tes's
own `wait()` on a `sleep 3` task, counting the requests it makes while it waits. Needs
dockerd and the kran-test/busybox image (the tests build it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import tes
import tes.client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dispatch import admin_client, start_server  # noqa: E402

IMAGE = "kran-test/busybox:latest"
TES = "/ga4gh/tes/v1"


def submit_to_running(submit: Callable[[], str], state: Callable[[str], str], running: str) -> float:
    """Seconds from the request that creates it to the first answer that says it runs."""
    started = time.perf_counter()
    ident = submit()
    while state(ident) != running:
        time.sleep(0.02)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    server = start_server(cpus=32)  # room for every job of the run: none waits for another
    try:
        with admin_client(server) as c:
            own, through = [], []
            job = {"image": IMAGE, "command": ["sleep", "2"], "cpus": "1", "mem": "32"}  # the same request
            task = {
                "executors": [{"image": IMAGE, "command": ["sleep", "2"]}],
                "resources": {"cpu_cores": 1, "ram_gb": 1 / 32},
            }
            for _ in range(args.n):
                own.append(
                    submit_to_running(
                        lambda: str(c.post("/api/v1/jobs", json=job).json()["id"]),
                        lambda j: str(c.get(f"/api/v1/jobs/{j}").json()["state"]),
                        "running",
                    )
                )
                through.append(
                    submit_to_running(
                        lambda: str(c.post(f"{TES}/tasks", json=task).json()["id"]),
                        lambda t: str(c.get(f"{TES}/tasks/{t}").json()["state"]),
                        "RUNNING",
                    )
                )
            for name, xs in (("kran API", own), ("TES", through)):
                q = statistics.quantiles(xs, n=10)
                print(
                    f"{name:9} submit->running: median {statistics.median(xs) * 1000:.0f} ms, p90 {q[-1] * 1000:.0f} ms"
                )
            print(f"ratio TES/kran (median): {statistics.median(through) / statistics.median(own):.2f}")

        creds = server.credentials
        client = tes.HTTPClient(server.url, timeout=30, token=f"{creds['key_id']}.{creds['secret']}")
        counted = {"n": 0}
        http = tes.client.requests  # what py-tes sends through
        real_get = http.get

        def counting_get(*a: object, **kw: object) -> object:
            counted["n"] += 1
            return real_get(*a, **kw)  # type: ignore[arg-type]

        task = client.create_task(tes.Task(executors=[tes.Executor(image=IMAGE, command=["sleep", "3"])]))
        http.get = counting_get
        started = time.perf_counter()
        try:
            client.wait(task)
        finally:
            http.get = real_get
        print(f"py-tes wait(): {counted['n']} GETs over {time.perf_counter() - started:.1f} s for a 3 s task")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
