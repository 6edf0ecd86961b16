"""Dispatch benchmark: kran vs. the same commands run directly, in one run.

    .venv/bin/python bench/dispatch.py [--process-jobs 500] [--docker-jobs 100] [--submits 2000]

Prints, for each part, kran's figure, the baseline's and the ratio:
- process jobs: N `true` jobs through kran (batch submit, wait until all ended) vs. the
  same commands run with subprocess at the same concurrency;
- docker jobs: N busybox `true` containers through kran vs. `docker run --rm` at the same
  concurrency;
- single submits: p50/p99 latency and rate with 32 concurrent clients (the jobs queue
  behind a blocker, so only the submit path is measured);
- batch submits: jobs/s for batches of 1000.
Needs dockerd and the kran-test/busybox image (scripts/test.sh or the tests build it), and
wrk (apt-get install wrk) for the single-submit part (an httpx client is the fallback).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import ServerProc, free_port  # noqa: E402

IMAGE = "kran-test/busybox:latest"


def start_server(cpus: float, **env: str) -> ServerProc:
    data = Path(tempfile.mkdtemp(prefix="kran-bench-"))
    (data / "home").mkdir()
    full = {
        **os.environ,
        "KRAN_CAPACITY_CPUS": str(cpus),
        "KRAN_CAPACITY_MEM_MB": "100000",
        "KRAN_QUEUE_POLL_INTERVAL_S": os.environ.get("BENCH_POLL", "0.02"),
        "HOME": str(data / "home"),
        **env,
    }
    s = ServerProc(data, free_port(), full)
    s.start()
    return s


def admin_client(s: ServerProc, timeout: float = 120) -> httpx.Client:
    creds = s.credentials
    return httpx.Client(
        base_url=s.url, timeout=timeout, headers={"Authorization": f"Bearer {creds['key_id']}.{creds['secret']}"}
    )


def wait_all_final(c: httpx.Client, n: int) -> None:
    while True:
        counts = c.get("/status").json()["jobs_by_state"]
        if sum(v for k, v in counts.items() if k not in ("queued", "starting", "running")) >= n:
            return
        time.sleep(0.05)


def through_kran(jobs: list[dict[str, object]], cpus: float) -> float:
    s = start_server(cpus)
    try:
        with admin_client(s) as c:
            t0 = time.perf_counter()
            c.post("/api/v1/jobs/batch", json={"jobs": jobs}).raise_for_status()
            wait_all_final(c, len(jobs))
            took = time.perf_counter() - t0
            bad = {k: v for k, v in c.get("/status").json()["jobs_by_state"].items() if k != "succeeded"}
            if bad:
                raise SystemExit(f"some jobs did not succeed: {bad}")
            return took
    finally:
        s.stop()


def direct(argvs: list[list[str]], concurrency: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for rc in pool.map(lambda a: subprocess.run(a, stdout=subprocess.DEVNULL).returncode, argvs):
            assert rc == 0
    return time.perf_counter() - t0


def bench_process(n: int, concurrency: int) -> tuple[float, float]:
    cpus = 0.1
    k = through_kran([{"command": ["true"], "cpus": str(cpus), "mem": "1"}] * n, cpus * concurrency)
    d = direct([["true"]] * n, concurrency)
    return n / k, n / d


def bench_docker(n: int, concurrency: int) -> tuple[float, float]:
    k = through_kran([{"image": IMAGE, "command": ["true"], "cpus": "0.25", "mem": "32"}] * n, 0.25 * concurrency)
    d = direct(
        [["docker", "run", "--rm", "--network", "none", "--init", "--cpus", "0.25", "-m", "32m", IMAGE, "true"]] * n,
        concurrency,
    )
    return k, d


async def _submits(url: str, n: int, clients: int, headers: dict[str, str]) -> list[float]:
    lat: list[float] = []
    sem = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients), headers=headers
    ) as c:

        async def one() -> None:
            async with sem:
                t = time.perf_counter()
                r = await c.post("/api/v1/jobs", json={"command": ["true"], "cpus": "1"})
                lat.append(time.perf_counter() - t)
                r.raise_for_status()

        await asyncio.gather(*(one() for _ in range(n)))
    return lat


def _wrk_submits(url: str, clients: int, seconds: int, headers: dict[str, str]) -> tuple[float, float, float]:
    """wrk (Debian's package) as the load generator: a Python client on the same 2 cores
    saturates long before the server does. Requests carry a bearer token."""
    script = Path(tempfile.mkdtemp()) / "submit.lua"
    lua = Path(__file__).with_name("submit.lua").read_text()
    script.write_text(lua + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/api/v1/jobs",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")

    def ms(label: str) -> float:
        value = next(line.split()[1] for line in out.splitlines() if line.strip().startswith(label))
        return (
            float(value[:-2])
            if value.endswith("ms")
            else float(value[:-2]) / 1000
            if value.endswith("us")
            else float(value[:-1]) * 1000
        )

    rate = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    return rate, ms("50%"), ms("99%")


def bench_submit(n: int, clients: int, batches: int) -> dict[str, float]:
    s = start_server(1)
    try:
        with admin_client(s) as c:
            headers = {"Authorization": c.headers["authorization"]}
            c.post("/api/v1/jobs", json={"command": ["sleep", "600"], "cpus": "1"}).raise_for_status()
            if shutil.which("wrk"):
                single_rate, p50, p99 = _wrk_submits(s.url, clients, 10, headers)
                tool = "wrk"
            else:
                t0 = time.perf_counter()
                lat = sorted(asyncio.run(_submits(s.url, n, clients, headers)))
                single_rate = n / (time.perf_counter() - t0)
                p50, p99 = 1000 * statistics.median(lat), 1000 * lat[int(0.99 * (len(lat) - 1))]
                tool = "httpx"
            body = {"jobs": [{"command": ["true"], "cpus": "1"}] * 1000}
            t0 = time.perf_counter()
            for _ in range(batches):
                c.post("/api/v1/jobs/batch", json=body).raise_for_status()
            batch_rate = batches * 1000 / (time.perf_counter() - t0)
            for j in c.get("/api/v1/jobs", params={"state": "running"}).json()["jobs"]:
                c.post(f"/api/v1/jobs/{j['id']}/kill")
            while c.get("/api/v1/jobs", params={"state": "running"}).json()["jobs"]:
                time.sleep(0.1)  # stop the server only once the blocker has been collected
        return {"rate": single_rate, "p50_ms": p50, "p99_ms": p99, "batch_rate": batch_rate, "tool": tool}
    finally:
        s.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--process-jobs", type=int, default=500)
    ap.add_argument("--process-concurrency", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--docker-jobs", type=int, default=100)
    ap.add_argument("--docker-concurrency", type=int, default=8)
    ap.add_argument("--submits", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=10)
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cpus")
    for conc in a.process_concurrency if a.process_jobs else []:
        k, d = bench_process(a.process_jobs, conc)
        print(
            f"process jobs: {a.process_jobs} x `true`, concurrency {conc}: "
            f"kran {k:.0f} jobs/s, direct {d:.0f} jobs/s, kran/direct throughput {k / d:.2f}"
        )
    if a.docker_jobs:
        k, d = bench_docker(a.docker_jobs, a.docker_concurrency)
        print(
            f"docker jobs: {a.docker_jobs} x busybox `true`, concurrency {a.docker_concurrency}: "
            f"kran makespan {k:.1f}s ({a.docker_jobs / k:.1f} jobs/s), docker run {d:.1f}s "
            f"({a.docker_jobs / d:.1f} jobs/s), makespan ratio {k / d:.2f}"
        )
    if a.submits:
        r = bench_submit(a.submits, 32, a.batches)
        print(
            f"single submits, 32 clients ({r['tool']}): {r['rate']:.0f}/s, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
        )
        print(f"batch submits (1000 per request): {r['batch_rate']:.0f} jobs/s")


if __name__ == "__main__":
    main()
