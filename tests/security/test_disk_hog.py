"""A job must not hold the whole server: while the data dir is full no job starts, for
anyone, so one job writing without end stopped every user's work until an operator came
(a denial of service from any user). It is evicted instead (services/scheduler/evict.py).
The data dir lies on a real ext4 file system of its own (a loop mount)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import TEST_IMAGE
from tests.e2e.test_disk_full import small_disk, status, wait_for

__all__ = ["small_disk"]  # (the fixture, used by name)


def test_a_running_job_whose_files_fill_the_data_dir_is_evicted(small_disk: Any) -> None:
    """One job writing without end held every user's dispatch (no job starts while the data
    dir is full). The job furthest over the disk it asked for is evicted, as Kubernetes
    does under disk pressure: killed for good, its working dir removed, and the reason says
    so with figures; a job with few files runs on, and dispatch resumes. Its file hides 200
    dirs down, past the bounded walk's depth."""
    s, mnt = small_disk(256, KRAN_FILES_MIN_FREE="64M")
    deep = "p=.; i=0; while [ $i -lt 200 ]; do p=$p/d; i=$((i+1)); done; mkdir -p $p"
    with s.api() as c:
        quiet = c.post("/api/v1/jobs", json={"command": ["sh", "-c", "echo hi > out; sleep 600"]}).json()["id"]
        s.wait_state(quiet, {"running"})
        writer = {"command": ["sh", "-c", f"{deep}; dd if=/dev/zero of=$p/big bs=1M count=180 status=none; sleep 600"]}
        filler = c.post("/api/v1/jobs", json=writer).json()["id"]
        end = s.wait_state(filler, {"succeeded", "failed", "killed", "lost"}, timeout=60)
        assert end["state"] == "failed" and end["reason"].startswith("evicted: the data dir was full"), end
        assert "files.min_free = 64M" in end["reason"] and "over the 0 MiB of disk it asked for" in end["reason"]
        took = int(end["reason"].split("its files took ")[1].split(" MiB")[0])
        assert 150 <= took <= 200, end["reason"]
        assert not (s.data_dir / "jobs" / str(filler) / "1" / "work").exists()
        assert wait_for(lambda: status(s)["state"] == "ok")
        assert c.get(f"/api/v1/jobs/{quiet}").json()["state"] == "running"
        after = c.post("/api/v1/jobs", json={"command": ["true"]})
        assert after.status_code == 201
        assert s.wait_state(after.json()["id"], {"succeeded", "failed"})["state"] == "succeeded"
        assert s.wait_state(filler, {"failed"})["attempts"][-1]["state"] == "failed"  # not re-run
        c.post(f"/api/v1/jobs/{quiet}/kill").raise_for_status()


@pytest.mark.docker
def test_a_kill_under_way_with_a_long_grace_does_not_shield_a_job(small_disk: Any) -> None:
    """A container that had itself killed with a day's grace and ignores SIGTERM was never
    a candidate (a kill was under way) and wrote on for its grace; it is evicted at once.
    (A host job's wrapper ends at the SIGTERM, and its processes with it.)"""
    s, _ = small_disk(256, KRAN_FILES_MIN_FREE="64M")
    with s.api() as c:
        script = "trap '' TERM; sleep 3; dd if=/dev/zero of=big bs=1M count=180; sleep 600"
        spec = {"image": TEST_IMAGE, "command": ["sh", "-c", script], "grace": "1d"}
        job = c.post("/api/v1/jobs", json=spec).json()["id"]
        s.wait_state(job, {"running"})
        time.sleep(0.5)
        c.post(f"/api/v1/jobs/{job}/kill").raise_for_status()  # its own kill: SIGTERM, ignored
        time.sleep(1)
        assert c.get(f"/api/v1/jobs/{job}").json()["state"] == "running"
        end = s.wait_state(job, {"succeeded", "failed", "killed", "lost"}, timeout=60)
        assert end["state"] == "failed" and end["reason"].startswith("evicted: the data dir was full"), end
        assert wait_for(lambda: status(s)["state"] == "ok")


@pytest.mark.docker
def test_a_container_whose_files_fill_the_data_dir_is_evicted_too(small_disk: Any) -> None:
    """The same for a docker job: its working dir is the attempt's, bound in."""
    s, _ = small_disk(256, KRAN_FILES_MIN_FREE="64M")
    with s.api() as c:
        writer = {"image": TEST_IMAGE, "command": ["sh", "-c", "dd if=/dev/zero of=big bs=1M count=180; sleep 600"]}
        filler = c.post("/api/v1/jobs", json=writer).json()["id"]
        end = s.wait_state(filler, {"succeeded", "failed", "killed", "lost"}, timeout=90)
        assert end["state"] == "failed" and end["reason"].startswith("evicted: the data dir was full"), end
        assert not (s.data_dir / "jobs" / str(filler) / "1" / "work").exists()
        assert wait_for(lambda: status(s)["state"] == "ok")
