"""A full data dir is a state (issue 18.7): below the watermark (files.min_free) /status
says degraded and why, submits get 507 and store nothing, queued jobs wait with the
reason, jobs that fail for lack of space name the disk, and all of it ends by itself when
space returns. The data dir lies on a real ext4 file system of its own (a loop mount)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc, _cleanup_engine_leftovers, cli_for, start_test_server

MIB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Any]:
    """make(size_mb, **env): a server whose data dir is on a fresh ext4 of that size."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.fail("the disk-full tests need root and e2fsprogs (scripts/test.sh installs them)")
    made: list[tuple[ServerProc, Path]] = []

    def make(size_mb: int, **env: str) -> tuple[ServerProc, Path]:
        img, mnt = tmp_path / f"disk{len(made)}.img", tmp_path / f"disk{len(made)}"
        mnt.mkdir()
        subprocess.run(["truncate", "-s", f"{size_mb}M", str(img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
        s = start_test_server(mnt, 0, **env)
        made.append((s, mnt))
        return s, mnt

    yield make
    for s, mnt in made:
        s.stop()
        _cleanup_engine_leftovers(s.data_dir)
        shutil.copy(s.log, mnt.with_suffix(".log"))  # kept for a failing test
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_to(mnt: Path, free_mb: int) -> Path:
    """Allocate a file so that about `free_mb` MiB stay free for unprivileged writers."""
    free = shutil.disk_usage(mnt).free
    fill = mnt / f"fill-{time.monotonic_ns()}"
    size = max(free - free_mb * MIB, 0)
    if size:
        subprocess.run(["fallocate", "-l", str(size), str(fill)], check=True)
    return fill


def status(s: ServerProc) -> dict[str, Any]:
    with s.api() as c:
        r = c.get("/status")
    assert r.status_code == 200, r.text  # degraded is not unready: reads, kills and logs go on
    body: dict[str, Any] = r.json()
    return body


def wait_for(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_below_the_default_watermark_nothing_is_stored_and_no_job_starts(small_disk: Any) -> None:
    """Default settings (files.min_free = 1G) on a 1.5 GiB data dir."""
    s, mnt = small_disk(1536)
    kran = cli_for(s)
    assert status(s)["state"] == "ok"
    with s.api() as c:
        hog = c.post("/api/v1/jobs", json={"command": ["sleep", "60"], "cpus": "4"}).json()["id"]
        s.wait_state(hog, {"running"})
        waiting = c.post("/api/v1/jobs", json={"command": ["sh", "-c", "echo ran"], "cpus": "4"}).json()["id"]
        before = len(c.get("/api/v1/jobs", params={"limit": 1000}).json()["jobs"])
        fill = fill_to(mnt, 900)

        body = status(s)
        assert body["state"] == "degraded" and body["ready"] is True
        assert "data dir full" in body["degraded"][0] and "files.min_free = 1G" in body["degraded"][0], body
        r = kran("status")
        assert "degraded" in r.output and "data dir full" in r.output

        one = c.post("/api/v1/jobs", json={"command": ["true"]})
        assert one.status_code == 507 and "data dir full" in one.json()["error"], one.text
        assert "nothing was stored" in one.json()["error"]
        many = c.post("/api/v1/jobs/batch", json={"jobs": [{"command": ["true"]}] * 50})
        assert many.status_code == 507
        up = c.post(
            "/api/v1/jobs/upload",
            data={"job": '{"command": ["true"]}'},
            files={"input": ("x", b"x" * 4 * MIB)},
        )
        assert up.status_code == 507, up.text
        r = kran("submit", "--", "true")
        assert r.exit_code != 0 and "data dir full" in r.output and "507" in r.output
        assert len(c.get("/api/v1/jobs", params={"limit": 1000}).json()["jobs"]) == before
        assert not os.listdir(s.data_dir / "uploads")

        # the capacity frees up, but dispatch is paused: the queued job waits and says why
        c.post(f"/api/v1/jobs/{hog}/kill").raise_for_status()
        s.wait_state(hog, {"killed"})
        time.sleep(1.5)  # more than a dispatch pass
        job = c.get(f"/api/v1/jobs/{waiting}").json()
        assert job["state"] == "queued" and "data dir full" in job["waiting_because"], job

        fill.unlink()  # space returns: everything resumes by itself
        done = s.wait_state(waiting, {"succeeded", "failed"})
        assert done["state"] == "succeeded", done
        assert status(s)["state"] == "ok" and status(s)["degraded"] == []
        assert c.post("/api/v1/jobs", json={"command": ["true"]}).status_code == 201


def test_a_job_that_fills_the_disk_fails_naming_it(small_disk: Any) -> None:
    """A job writes until the data dir has no space left: its failure names the disk, the
    next submits are refused, and deleting the file (the operator's fix) recovers."""
    s, mnt = small_disk(64, KRAN_FILES_MIN_FREE="8M")
    with s.api() as c:
        job = c.post("/api/v1/jobs", json={"command": ["sh", "-c", "dd if=/dev/zero of=big bs=1M; exit 1"]}).json()
        end = s.wait_state(job["id"], {"succeeded", "failed", "lost"}, timeout=60)
        assert end["state"] == "failed", end
        assert "data dir full" in end["reason"] and "files.min_free = 8M" in end["reason"], end
        assert c.post("/api/v1/jobs", json={"command": ["true"]}).status_code == 507
        for big in mnt.glob("server0/jobs/*/*/work/big"):
            big.unlink()
        assert wait_for(lambda: status(s)["state"] == "ok")
        ok = c.post("/api/v1/jobs", json={"command": ["true"]})
        assert ok.status_code == 201
        assert s.wait_state(ok.json()["id"], {"succeeded", "failed"})["state"] == "succeeded"


def test_without_a_watermark_the_stores_full_disk_is_a_507_and_nothing_is_lost(small_disk: Any) -> None:
    """files.min_free = 0: no watermark, so the store itself meets the full disk. Its error
    is a 507 naming the disk, never a 500; the jobs stored before are intact."""
    s, mnt = small_disk(64, KRAN_FILES_MIN_FREE="0")
    with s.api() as c:
        first = c.post("/api/v1/jobs/batch", json={"jobs": [{"command": ["true"], "labels": {"n": "1"}}] * 20})
        ids = first.json()["ids"]
        fill_to(mnt, 0)
        subprocess.run(["sh", "-c", f"cat /dev/zero > {mnt}/rest"], capture_output=True, check=False)  # root's share
        body = {"jobs": [{"command": ["echo", "x" * 2000], "labels": {"n": str(i)}} for i in range(2000)]}
        codes = []
        for _ in range(5):
            codes.append(c.post("/api/v1/jobs/batch", json=body).status_code)
        assert 507 in codes and 500 not in codes, codes
        r = c.post("/api/v1/jobs/batch", json=body)
        assert r.status_code == 507 and "full" in r.json()["error"], r.text
        assert status(s)["state"] == "degraded"
        for f in mnt.glob("fill-*"):
            f.unlink()
        (mnt / "rest").unlink()
        for i in ids:  # each in a true final state: run, or failed for the disk and saying so
            end = s.wait_state(i, {"succeeded", "failed", "lost"})
            assert end["state"] == "succeeded" or (
                end["state"] == "failed" and ("full" in end["reason"] or "No space" in end["reason"])
            ), end
        stored = c.get("/api/v1/jobs", params={"limit": 10_000}).json()["jobs"]
        assert len(stored) == 20 + 2000 * codes.count(201)  # whole batches or nothing
        assert wait_for(lambda: status(s)["state"] == "ok")
        assert c.post("/api/v1/jobs", json={"command": ["true"]}).status_code == 201
