"""Single-job latency on an idle server (issue 23.3), beside the bare equivalents.

    .venv/bin/python bench/latency.py [--n 200]

One job at a time, N times, for a process job (`sleep 0.3`) and a docker job (busybox
`sleep 0.3`): the time from the submit request to the first answer that says `running`,
and to the first that says it ended (`succeeded`), polled every 5 ms by the client. The
baselines: spawning the same process (`subprocess.Popen` until it runs: exec done; until it
exits) and `docker run --rm` (until its container runs, by `docker events`, and until it
exits). p50 and p99 of each. Needs dockerd and the kran-test/busybox image.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dispatch import IMAGE, admin_client, start_server  # noqa: E402

POLL_S = 0.005


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000


def line(name: str, to_run: list[float], to_end: list[float]) -> str:
    return (
        f"{name:28} ->running p50 {pct(to_run, 0.5):6.1f} ms p99 {pct(to_run, 0.99):6.1f} ms | "
        f"->ended p50 {pct(to_end, 0.5):6.1f} ms p99 {pct(to_end, 0.99):6.1f} ms"
    )


def through_kran(n: int, job: dict[str, object]) -> tuple[list[float], list[float]]:
    server = start_server(cpus=4)
    to_run, to_end = [], []
    try:
        with admin_client(server) as c:
            for _ in range(n):
                t0 = time.perf_counter()
                job_id = c.post("/api/v1/jobs", json=job).json()["id"]
                running = None
                while True:
                    state = c.get(f"/api/v1/jobs/{job_id}").json()["state"]
                    now = time.perf_counter()
                    if running is None and state in ("running", "succeeded"):
                        running = now
                    if state in ("succeeded", "failed", "lost"):
                        break
                    time.sleep(POLL_S)
                assert state == "succeeded", state
                to_run.append(running - t0)
                to_end.append(now - t0)
    finally:
        server.stop()
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    rows = []
    proc = {"command": ["sleep", "0.3"], "cpus": "0.1", "mem": "8"}
    rows.append(line("kran process job", *through_kran(args.n, proc)))
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
    dock = {"image": IMAGE, "command": ["sleep", "0.3"], "cpus": "0.25", "mem": "32"}
    rows.append(line("kran docker job", *through_kran(args.n, dock)))

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
    print("\n".join(rows))
    print(f"({args.n} each, one at a time, client polls every {POLL_S * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
