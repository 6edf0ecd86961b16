"""kill -9 of the server: no job lost, none run twice, every job ends in a true state."""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from pathlib import Path

from tests.conftest import ServerProc


def test_running_jobs_are_readopted_after_kill9(server: ServerProc, test_image: str, shared_dir: Path) -> None:
    runs = shared_dir / "runs.txt"
    with server.api() as c:
        proc_ok = c.post(
            "/api/v1/jobs", json={"sh": f"echo $KRAN_JOB_ID >> {runs}; sleep 2; echo done", "cpus": "0.5"}
        ).json()["id"]
        proc_fail = c.post(
            "/api/v1/jobs", json={"sh": f"echo $KRAN_JOB_ID >> {runs}; sleep 2; exit 4", "cpus": "0.5"}
        ).json()["id"]
        still = c.post("/api/v1/jobs", json={"sh": f"echo $KRAN_JOB_ID >> {runs}; sleep 6", "cpus": "0.5"}).json()["id"]
        vanish = c.post("/api/v1/jobs", json={"sh": "sleep 30", "cpus": "0.5", "retries": 1}).json()["id"]
        dock = c.post(
            "/api/v1/jobs",
            json={"image": test_image, "sh": "echo $KRAN_JOB_ID >> runs; sleep 2; echo hi", "cpus": "0.5"},
        ).json()["id"]
        queued = c.post("/api/v1/jobs", json={"command": ["echo", "later"], "cpus": "4"}).json()["id"]
    for j in (proc_ok, proc_fail, still, vanish, dock):
        server.wait_state(j, {"running"})
    vanish_pid = _pid_of(server, vanish)
    server.kill9()
    os.killpg(vanish_pid, signal.SIGKILL)  # its work disappears while the server is down
    time.sleep(3)  # proc_ok, proc_fail and dock end while nobody watches
    server.start()
    assert server.wait_state(proc_ok, {"succeeded"})["attempts"][0]["exit_code"] == 0
    assert server.wait_state(proc_fail, {"failed"})["exit_code"] == 4
    d = server.wait_state(dock, {"succeeded"})
    assert len(d["attempts"]) == 1
    assert server.wait_state(still, {"succeeded"}, timeout=20)["attempts"][0]["number"] == 1
    deadline = time.monotonic() + 20
    with server.api() as c:
        while (rec := c.get(f"/api/v1/jobs/{vanish}").json())["attempt"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert rec["attempts"][0]["state"] == "lost" and rec["state"] in ("starting", "running")  # retried
    with server.api() as c:
        c.post(f"/api/v1/jobs/{vanish}/kill")
        assert c.get(f"/api/v1/jobs/{proc_ok}/logs").content == b"done\n"
        assert c.get(f"/api/v1/jobs/{dock}/logs").content == b"hi\n"
    assert server.wait_state(queued, {"succeeded"}, timeout=30)
    counts = collections.Counter(runs.read_text().split())
    assert counts == {str(proc_ok): 1, str(proc_fail): 1, str(still): 1}


def _pid_of(server: ServerProc, job_id: int) -> int:
    import sqlite3

    con = sqlite3.connect(server.data_dir / "kran.db")
    try:
        (handle,) = con.execute("SELECT handle FROM attempts WHERE job_id=? ORDER BY number DESC", (job_id,)).fetchone()
    finally:
        con.close()
    return int(handle.split(":")[1])


def test_repeated_kill9_during_a_burst_runs_every_job_exactly_once(server: ServerProc, shared_dir: Path) -> None:
    runs = shared_dir / "runs.txt"
    n = 60
    with server.api() as c:
        ids = c.post(
            "/api/v1/jobs/batch",
            json={
                "jobs": [
                    {"sh": f"echo $KRAN_JOB_ID >> {runs}; sleep 0.{random.randint(1, 9)}", "cpus": "0.25"}
                    for _ in range(n)
                ]
            },
        ).json()["ids"]
    rng = random.Random(7)
    for _ in range(4):
        time.sleep(rng.uniform(0.2, 1.0))
        server.kill9()
        time.sleep(rng.uniform(0.0, 0.5))
        server.start()
    final = [server.wait_state(j, {"succeeded", "failed", "lost"}, timeout=60) for j in ids]
    assert all(j["state"] == "succeeded" for j in final), [
        (j["id"], j["state"], j["reason"]) for j in final if j["state"] != "succeeded"
    ]
    counts = collections.Counter(runs.read_text().split())
    assert sorted(counts) == sorted(str(i) for i in ids)
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}


def test_server_restart_keeps_queue_and_history(server: ServerProc) -> None:
    with server.api() as c:
        done = c.post("/api/v1/jobs", json={"command": ["echo", "x"]}).json()["id"]
        server.wait_state(done, {"succeeded"})
    server.kill9()
    server.start()
    with server.api() as c:
        job = c.get(f"/api/v1/jobs/{done}").json()
        assert job["state"] == "succeeded"
        assert c.get(f"/api/v1/jobs/{done}/logs").content == b"x\n"
        events = c.get("/api/v1/events", params={"job": done}).json()["events"]
        assert [e["to"] for e in events] == ["queued", "starting", "running", "succeeded"]
