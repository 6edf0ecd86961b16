"""The attack suite: each test is an attack an ordinary user (or their job) would try
against a `kran serve` running as root with its defaults. Each failed before its fix."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kran.jobfs_removal import remove_tree
from tests.conftest import ServerProc, _cleanup_engine_leftovers, start_test_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks are on a server running as root")


@pytest.fixture
def open_server() -> Iterator[Any]:
    """Servers whose data dir sits below dirs anyone may traverse (as /srv/kran would):
    pytest's own tmp dirs are 0700, which would hide every mistake kran makes itself."""
    made: list[ServerProc] = []
    top = Path(tempfile.mkdtemp(prefix="kran-sec-", dir="/tmp"))
    top.chmod(0o755)

    def make(**env: str) -> ServerProc:
        # 0755: what an operator's mkdir leaves; kran must tighten it itself
        s = start_test_server(top, len(made), data_mode=0o755, **env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
        _cleanup_engine_leftovers(s.data_dir)
    remove_tree(top)  # (a job's tree may be thousands of levels deep: shutil.rmtree recursed)


def wait_job(server: ServerProc, job_id: int, user: str | None = None, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with server.api(user) as c:
        while True:
            job: dict[str, Any] = c.get(f"/api/v1/jobs/{job_id}").json()
            if job["state"] in ("succeeded", "failed", "killed", "timed_out", "lost"):
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.05)


def wait_running(server: ServerProc, job_id: int, user: str | None = None, marker: str | None = None) -> None:
    """Until the job runs (and, with `marker`, its stdout has that line)."""
    deadline = time.monotonic() + 30
    with server.api(user) as c:
        while True:
            job = c.get(f"/api/v1/jobs/{job_id}").json()
            if job["state"] == "running" and (marker is None or marker in c.get(f"/api/v1/jobs/{job_id}/logs").text):
                return
            assert job["state"] in ("queued", "starting", "running"), job
            assert time.monotonic() < deadline, job
            time.sleep(0.05)


def logs(server: ServerProc, job_id: int, user: str | None = None, stream: str = "stdout") -> str:
    with server.api(user) as c:
        params = {"stream": stream} if stream != "stdout" else {}
        return c.get(f"/api/v1/jobs/{job_id}/logs", params=params).text
