"""Dispatch benchmark: kran vs. the same commands run directly, in one run.

    .venv/bin/python bench/dispatch.py [--process-jobs 500] [--docker-jobs 100] [--submits 2000] [--data-parent DIR]

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
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import ServerProc, free_port  # noqa: E402

IMAGE = "kran-test/busybox:latest"
# where the servers keep their data: not under /tmp, as the default data dir
# (~/.local/share/kran) is not; a host job's work dir under /tmp is bound into its private
# /tmp, a mount more to make and to let go of for each job, which users do not pay.
# --data-parent puts it elsewhere (a tmpfs: what the disk's file system costs, apart)
DATA_PARENT = "/var/tmp"


def start_server(cpus: float, **env: str) -> ServerProc:
    data = Path(tempfile.mkdtemp(prefix="kran-bench-", dir=os.environ.get("BENCH_DATA_PARENT", DATA_PARENT)))
    atexit.register(shutil.rmtree, data, True)
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


def machine_busy_s() -> float:
    """CPU seconds all cpus spent busy since boot (idle and iowait left out)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> tuple[float, float]:
    """A process's own CPU seconds, and those of the children it reaped (with theirs)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / hz, (int(fields[13]) + int(fields[14])) / hz


def fork_server_of(pid: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                    if b"spawner.py" in (entry / "cmdline").read_bytes():
                        return int(entry.name)
            except OSError:
                continue
    return None


@dataclass
class Cpu:
    """CPU seconds a run took: the whole machine, the server, and the fork server with the
    job processes it reaped (wrappers and all they ran)."""

    machine: float = 0.0
    server: float = 0.0
    fork_server: float = 0.0
    jobs: float = 0.0

    @staticmethod
    def now(server: int | None) -> Cpu:
        c = Cpu(machine_busy_s())
        if server is not None:
            c.server = process_cpu_s(server)[0]
            spawner = fork_server_of(server)
            if spawner is not None:
                c.fork_server, c.jobs = process_cpu_s(spawner)
        return c

    def __sub__(self, o: Cpu) -> Cpu:
        return Cpu(
            self.machine - o.machine, self.server - o.server, self.fork_server - o.fork_server, self.jobs - o.jobs
        )


def through_kran(jobs: list[dict[str, object]], cpus: float) -> tuple[float, Cpu]:
    s = start_server(cpus)
    try:
        with admin_client(s) as c:
            pid = s.proc.pid if s.proc else None
            cpu0 = Cpu.now(pid)
            t0 = time.perf_counter()
            c.post("/api/v1/jobs/batch", json={"jobs": jobs}).raise_for_status()
            wait_all_final(c, len(jobs))
            took = time.perf_counter() - t0
            cpu = Cpu.now(pid) - cpu0
            bad = {k: v for k, v in c.get("/status").json()["jobs_by_state"].items() if k != "succeeded"}
            if bad:
                failed = c.get("/api/v1/jobs", params={"state": "failed", "limit": 3}).json()
                raise SystemExit(f"some jobs did not succeed: {bad}; for example: {failed}")
            return took, cpu
    finally:
        s.stop()


def direct(argvs: list[list[str]], concurrency: int) -> tuple[float, float]:
    """Seconds, and machine CPU seconds, to run the commands at this concurrency."""
    busy = machine_busy_s()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for rc in pool.map(lambda a: subprocess.run(a, stdout=subprocess.DEVNULL).returncode, argvs):
            assert rc == 0
    return time.perf_counter() - t0, machine_busy_s() - busy


def bench_process(n: int, concurrency: int) -> tuple[float, float, Cpu, float]:
    """kran's and the direct rate (jobs/s), kran's CPU and the direct run's machine CPU."""
    cpus = 0.1
    k, cpu = through_kran([{"command": ["true"], "cpus": str(cpus), "mem": "1"}] * n, cpus * concurrency)
    d, d_cpu = direct([["true"]] * n, concurrency)
    return n / k, n / d, cpu, d_cpu


def bench_docker(n: int, concurrency: int) -> tuple[float, float]:
    k, _ = through_kran([{"image": IMAGE, "command": ["true"], "cpus": "0.25", "mem": "32"}] * n, 0.25 * concurrency)
    d, _ = direct(
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
    ap.add_argument("--data-parent", default=DATA_PARENT, help="where the servers' data dirs are made")
    a = ap.parse_args()
    os.environ["BENCH_DATA_PARENT"] = a.data_parent
    print(f"machine: {os.cpu_count()} cpus")
    for conc in a.process_concurrency if a.process_jobs else []:
        k, d, cpu, d_cpu = bench_process(a.process_jobs, conc)
        n, ms = a.process_jobs, 1000 / a.process_jobs
        print(
            f"process jobs: {n} x `true`, concurrency {conc}: "
            f"kran {k:.0f} jobs/s, direct {d:.0f} jobs/s, kran/direct throughput {k / d:.2f}"
        )
        print(
            f"  CPU per job: kran {cpu.machine * ms:.2f} ms (server {cpu.server * ms:.2f}, fork server "
            f"{cpu.fork_server * ms:.2f}, each job's processes {cpu.jobs * ms:.2f}), direct {d_cpu * ms:.2f} ms"
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
