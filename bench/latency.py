"""Single-job latency on an idle server (issue 23.3), beside the bare equivalents.

    .venv/bin/python bench/latency.py [--n 200] [--watch stream|poll] [--no-docker]

One job at a time, N times, for a process job (`sleep 0.3`) and a docker job (busybox
`sleep 0.3`), on a server with its default settings: the time from the submit request to
the client learning that the job is `running`, and that it ended (`succeeded`). The client
learns it from the server's event stream (`GET /api/v1/events/stream`, opened before the
first submit), or with `--watch poll` from `GET /api/v1/jobs/ID` every 5 ms. The
baselines: spawning the same process (`subprocess.Popen` until it runs: exec done; until it
exits) and `docker run --rm` (until its container runs, by `docker ps`, and until it
exits). p50 and p99 of each. Needs dockerd and the kran-test/busybox image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dispatch import IMAGE, admin_client, start_server  # noqa: E402
from kran.settings import QueueSection  # noqa: E402

POLL_S = 0.005
ENDED = ("succeeded", "failed", "lost")


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000


def line(name: str, to_run: list[float], to_end: list[float]) -> str:
    return (
        f"{name:28} ->running p50 {pct(to_run, 0.5):6.1f} ms p99 {pct(to_run, 0.99):6.1f} ms | "
        f"->ended p50 {pct(to_end, 0.5):6.1f} ms p99 {pct(to_end, 0.99):6.1f} ms"
    )


def through_kran(n: int, job: dict[str, object], watch: str) -> tuple[list[float], list[float]]:
    default_poll = QueueSection.model_fields["poll_interval_s"].default
    server = start_server(cpus=4, KRAN_QUEUE_POLL_INTERVAL_S=str(default_poll))  # the default, not BENCH_POLL
    try:
        with admin_client(server) as c:
            return (streamed if watch == "stream" else polled)(c, admin_client(server, timeout=None), n, job)
    finally:
        server.stop()


def polled(c: httpx.Client, _: httpx.Client, n: int, job: dict[str, object]) -> tuple[list[float], list[float]]:
    to_run, to_end = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        job_id = c.post("/api/v1/jobs", json=job).json()["id"]
        running = None
        while True:
            state = c.get(f"/api/v1/jobs/{job_id}").json()["state"]
            now = time.perf_counter()
            if running is None and state in ("running", *ENDED):
                running = now
            if state in ENDED:
                break
            time.sleep(POLL_S)
        assert state == "succeeded", state
        to_run.append(running - t0)
        to_end.append(now - t0)
    return to_run, to_end


def streamed(c: httpx.Client, events: httpx.Client, n: int, job: dict[str, object]) -> tuple[list[float], list[float]]:
    """One event stream for the run, read by a thread: when each (job, state) arrived."""
    seen: dict[tuple[int, str], float] = {}
    arrived = threading.Condition()
    opened = threading.Event()

    def read() -> None:
        try:
            with events, events.stream("GET", "/api/v1/events/stream") as r:
                opened.set()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        e = json.loads(line[6:])
                        with arrived:
                            seen[(e["job_id"], e["to"])] = time.perf_counter()
                            arrived.notify_all()
        except httpx.HTTPError:  # the server stopped at the end of the run
            pass

    threading.Thread(target=read, daemon=True).start()
    opened.wait(10)
    to_run, to_end = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        job_id = c.post("/api/v1/jobs", json=job).json()["id"]
        with arrived:
            assert arrived.wait_for(lambda j=job_id: any((j, s) in seen for s in ENDED), 30), "no end seen"
        assert (job_id, "succeeded") in seen, "the job did not succeed"
        to_run.append(seen[(job_id, "running")] - t0)
        to_end.append(seen[(job_id, "succeeded")] - t0)
    return to_run, to_end


def bare(
    n: int, start: Callable[[], subprocess.Popen[bytes]], running: Callable[[subprocess.Popen[bytes]], bool]
) -> tuple[list[float], list[float]]:
    to_run, to_end = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        p = start()
        while not running(p):
            time.sleep(POLL_S / 5)
        to_run.append(time.perf_counter() - t0)
        p.wait()
        to_end.append(time.perf_counter() - t0)
    return to_run, to_end


def machine_spread(n: int) -> str:
    """The machine's own spread, for reading the p99s above: the same fixed piece of Python
    (about 10 ms of CPU when run back to back), N times with the same 0.3 s idle before each
    as the jobs above have, and back to back. On a VM whose CPUs slow down when idle, the
    first is slower and its p99 further from its p50."""

    def work(k: int) -> int:
        total = 0
        for i in range(k):
            total += i * i
        return total

    t = time.perf_counter()
    work(100_000)
    k = int(100_000 * 0.010 / (time.perf_counter() - t))
    spread = {}
    for idle in (0.3, 0.0):
        took = []
        for _ in range(n):
            time.sleep(idle)
            t = time.perf_counter()
            work(k)
            took.append(time.perf_counter() - t)
        spread[idle] = f"p50 {pct(took, 0.5):5.1f} ms p99 {pct(took, 0.99):5.1f} ms"
    return f"{'fixed Python work (machine)':28} after 0.3 s idle: {spread[0.3]} | back to back: {spread[0.0]}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--watch", choices=["stream", "poll"], default="stream", help="how the client learns states")
    ap.add_argument("--no-docker", action="store_true", help="process jobs only")
    args = ap.parse_args()
    rows = []
    proc = {"command": ["sleep", "0.3"], "cpus": "0.1", "mem": "8"}
    rows.append(line("kran process job", *through_kran(args.n, proc, args.watch)))
    rows.append(
        line(
            "bare process (Popen)",
            *bare(
                args.n,
                lambda: subprocess.Popen(["sleep", "0.3"]),
                lambda p: Path(f"/proc/{p.pid}/exe").resolve().name == "sleep",
            ),
        )
    )
    if args.no_docker:
        print("\n".join(rows))
        return
    dock = {"image": IMAGE, "command": ["sleep", "0.3"], "cpus": "0.25", "mem": "32"}
    rows.append(line("kran docker job", *through_kran(args.n, dock, args.watch)))

    def docker_run() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--init",
                "--cpus",
                "0.25",
                "-m",
                "32m",
                IMAGE,
                "sleep",
                "0.3",
            ],
            stdout=subprocess.DEVNULL,
        )

    def container_runs(p: subprocess.Popen[bytes]) -> bool:
        out = subprocess.run(["docker", "ps", "-q", "--filter", f"ancestor={IMAGE}"], capture_output=True, text=True)
        return bool(out.stdout.strip()) or p.poll() is not None

    rows.append(line("bare docker run --rm", *bare(args.n, docker_run, container_runs)))
    rows.append(machine_spread(args.n))
    print("\n".join(rows))
    how = "the event stream" if args.watch == "stream" else f"polling every {POLL_S * 1000:.0f} ms"
    print(f"({args.n} each, one at a time, the client watching {how})")


if __name__ == "__main__":
    main()
