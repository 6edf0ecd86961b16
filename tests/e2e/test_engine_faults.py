"""Engine faults cost no job (issue 26): a Docker Engine of the test's own (a dockerd in a
network namespace, so the host's stays up for the rest of the suite) is stopped, killed
and restarted under running and queued jobs. Every job's end state and attempts are
counted, and each attempt that finishes leaves a marker in its own working dir, so a job
that ran to the end twice would show two."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc
from tests.swarm_cluster import Node, sh, unmount_under

pytestmark = pytest.mark.timeout(300)

WORK = 'sleep 8; echo done > "$KRAN_WORKDIR/done"'


@pytest.fixture(scope="module")
def daemon(test_image: str) -> Iterator[Node]:
    """A dockerd of its own, with the test image; no network (the jobs need none)."""
    node = Node(0, Path(tempfile.mkdtemp(prefix="kran-engine-")), prefix="kran-eng")
    sh("ip", "netns", "del", node.name, check=False)
    sh("ip", "netns", "add", node.name)
    sh("ip", "netns", "exec", node.name, "ip", "link", "set", "lo", "up")
    try:
        node.start()
        saved = node.root / "image.tar"
        sh("docker", "save", "-o", str(saved), test_image)
        node.docker("load", "-i", str(saved))
        saved.unlink()
        yield node
    finally:
        node.crash()
        for sub in ("exec", "data"):
            unmount_under(node.root / sub)
        sh("ip", "netns", "del", node.name, check=False)
        subprocess.run(["rm", "-rf", str(node.root)], check=False)


def _restart(node: Node, *, live_restore: bool) -> None:
    node.stop()
    node.extra = ("--live-restore",) if live_restore else ()
    time.sleep(2)  # down long enough for the server's probe (every second) to see it
    node.start()


@pytest.fixture
def engine_server(make_server: Any, daemon: Node) -> ServerProc:
    server: ServerProc = make_server(KRAN_LOCAL_DOCKER_HOST=daemon.sock, KRAN_CAPACITY_CPUS="16")
    return server


def _submit(c: Any, image: str, sh_: str = WORK, **extra: Any) -> int:
    body = {"image": image, "command": ["sh", "-c", sh_], "cpus": "0.25", "mem": "32", **extra}
    r = c.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _all_running(server: ServerProc, c: Any, jobs: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(c.get(f"/api/v1/jobs/{j}").json()["state"] != "running" for j in jobs):
        assert time.monotonic() < deadline, "the jobs did not all start"
        time.sleep(0.3)
    time.sleep(2)  # and their containers are well under way


def _finished(server: ServerProc, c: Any, jobs: list[int], timeout: float = 120) -> list[dict[str, Any]]:
    return [server.wait_state(j, {"succeeded", "failed", "lost", "killed", "timed_out"}, timeout) for j in jobs]


def _markers(server: ServerProc, job: dict[str, Any]) -> int:
    """Attempts of the job that ran to their end (each leaves `done` in its working dir)."""
    return sum(
        1
        for a in job["attempts"]
        if (server.data_dir / "jobs" / str(job["id"]) / str(a["number"]) / "work" / "done").exists()
    )


def _status(c: Any) -> dict[str, Any]:
    return dict(c.get("/api/v1/status").json())


def test_a_daemon_restart_requeues_the_running_jobs_without_using_a_retry(
    engine_server: ServerProc, daemon: Node, test_image: str
) -> None:
    """dockerd stopped (SIGTERM: it stops every container) and started again 5 s later,
    without live-restore: every running attempt is lost to the engine and re-queued,
    retries untouched; a job that exits 143 by itself fails as it should."""
    server = engine_server
    with server.api() as c:
        assert any("live-restore is off" in w for w in _status(c)["warnings"])
        own = server.wait_state(_submit(c, test_image, "kill -TERM $$", retries=0), {"failed"}, timeout=60)
        # its own signal: its own failure (settled once the daemon kept answering for 16 s after it)
        assert own["exit_code"] == 143 and len(own["attempts"]) == 1
        jobs = [_submit(c, test_image, retries=1) for _ in range(6)] + [_submit(c, test_image) for _ in range(2)]
        _all_running(server, c, jobs)
        daemon.stop()
        deadline = time.monotonic() + 10
        while "unreachable since" not in _status(c)["engines"]["docker"]:  # measured, within seconds
            assert time.monotonic() < deadline, _status(c)
            time.sleep(0.3)
        time.sleep(3)
        daemon.start()
        done = _finished(server, c, jobs)
    for job in done:
        assert job["state"] == "succeeded", job
        first, last = job["attempts"][0], job["attempts"][-1]
        assert len(job["attempts"]) == 2, job["attempts"]
        assert first["state"] == "lost" and "re-queued without using a retry" in first["reason"], first
        assert "restarted" in first["reason"] and last["state"] == "succeeded"
        assert _markers(server, job) == 1


def test_a_dead_daemon_kill_9_costs_no_job(engine_server: ServerProc, daemon: Node, test_image: str) -> None:
    server = engine_server
    with server.api() as c:
        jobs = [_submit(c, test_image, retries=0) for _ in range(4)]
        _all_running(server, c, jobs)
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait()
        daemon.proc = None
        time.sleep(3)
        daemon.start()
        done = _finished(server, c, jobs)
    for job in done:
        assert job["state"] == "succeeded", job
        assert _markers(server, job) == 1
        assert all(a["state"] in ("lost", "succeeded") for a in job["attempts"]), job["attempts"]


def test_jobs_wait_while_the_daemon_is_down_and_start_when_it_returns(
    engine_server: ServerProc, daemon: Node, test_image: str
) -> None:
    """Down for 30 s with jobs queued and more submitted meanwhile: taken (201), held with
    the reason, the gauge at 0; all run once it answers, none launched into the void."""
    server = engine_server
    with server.api() as c:
        daemon.stop()
        deadline = time.monotonic() + 10
        while _status(c)["engines"]["docker"] == "ok":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        down_at = time.monotonic()
        jobs = [_submit(c, test_image, "true", retries=0) for _ in range(3)]
        view = c.get(f"/api/v1/jobs/{jobs[0]}").json()
        assert view["state"] == "queued" and "docker engine unreachable since" in view["waiting_because"], view
        assert re.search(r'^kran_engine_up\{engine="docker"\} 0', c.get("/metrics").text, re.M)
        assert _status(c)["state"] == "degraded"
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        assert all(c.get(f"/api/v1/jobs/{j}").json()["state"] == "queued" for j in jobs)
        daemon.start()
        done = _finished(server, c, jobs, timeout=60)
        assert re.search(r'^kran_engine_up\{engine="docker"\} 1', c.get("/metrics").text, re.M)
    for job in done:
        assert job["state"] == "succeeded" and len(job["attempts"]) == 1, job


def test_no_requeue_makes_a_lost_attempt_final(engine_server: ServerProc, daemon: Node, test_image: str) -> None:
    server = engine_server
    with server.api() as c:
        once = _submit(c, test_image, retries=2, no_requeue=True)
        again = _submit(c, test_image)
        _all_running(server, c, [once, again])
        daemon.stop()
        time.sleep(3)
        daemon.start()
        lost, redone = _finished(server, c, [once, again])
    assert lost["state"] == "lost" and len(lost["attempts"]) == 1, lost
    assert "asked not to be re-queued" in lost["reason"] and _markers(server, lost) == 0
    assert redone["state"] == "succeeded" and len(redone["attempts"]) == 2


def test_with_live_restore_running_jobs_survive_a_restart(
    engine_server: ServerProc, daemon: Node, test_image: str
) -> None:
    server = engine_server
    _restart(daemon, live_restore=True)
    try:
        with server.api() as c:
            deadline = time.monotonic() + 15
            while any("live-restore" in w for w in _status(c)["warnings"]):
                assert time.monotonic() < deadline, _status(c)
                time.sleep(0.3)
            jobs = [_submit(c, test_image, retries=0) for _ in range(6)]
            _all_running(server, c, jobs)
            daemon.stop()
            time.sleep(3)
            daemon.start()
            done = _finished(server, c, jobs)
        for job in done:
            assert job["state"] == "succeeded" and len(job["attempts"]) == 1, job
            assert _markers(server, job) == 1
    finally:
        _restart(daemon, live_restore=False)
