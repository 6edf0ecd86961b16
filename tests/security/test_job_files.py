"""The files API against a job that changes its dir while it is served: symlink and dir
swaps (races), hard links, FIFOs, devices, files that grow or vanish."""

from __future__ import annotations

import base64
import io
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.security.conftest import wait_job, wait_running

SECRET = b"TOPSECRET-root-only"


@contextmanager
def root_only_secret() -> Iterator[Path]:
    """A file only root may read, in a dir any job could name (beside the data dirs)."""
    d = Path(tempfile.mkdtemp(prefix="kran-secret-", dir="/tmp"))
    d.chmod(0o755)
    (d / "x").write_bytes(SECRET)
    (d / "x").chmod(0o600)
    (d / "f").write_bytes(SECRET)
    (d / "f").chmod(0o600)
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def _job(c: httpx.Client, sh: str) -> int:
    r = c.post("/api/v1/jobs", json={"sh": sh, "timeout": 300})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_swapping_files_for_symlinks_while_served_never_leaks(open_server: Any) -> None:
    """Issue 17.2: the server checked the resolved path, then opened the path again; a job
    swapping a file for a symlink in a loop got the target (104 of 4,237 before the fix).
    1,600 file downloads and 160 archives race a job swapping `f` (a file) and `d` (a dir)
    for links to a root-only file and dir, as fast as it can."""
    server = open_server()
    server.add_user("mallory")
    with root_only_secret() as secret, server.api("mallory") as c:
        swap = (
            "mkdir -p real; echo public > real/x; echo public > f; mkdir d; echo public > d/x; echo started; "
            f"while :; do ln -sfn {secret}/f f.l; mv -fT f.l f; echo public > f.n; mv -fT f.n f; "
            f"ln -sfn {secret} d.l; mv -fT d.l d; ln -sfn real d.r; mv -fT d.r d; "
            "rm -rf d; mkdir d.n; echo public > d.n/x; mv -T d.n d; done"
        )
        job = _job(c, swap)
        wait_running(server, job, "mallory", marker="started")
        tries = leaks = errors = 0
        for i in range(800):
            paths = ["files/f", "files/d/x"] + (["archive"] if i % 10 == 0 else [])
            for path in paths:
                tries += 1
                try:
                    r = c.get(f"/api/v1/jobs/{job}/{path}")
                except httpx.TransportError:  # a response cut off mid-way
                    errors += 1
                    continue
                leaks += SECRET in r.content
                errors += r.status_code >= 500
        c.post(f"/api/v1/jobs/{job}/kill")
        wait_job(server, job, "mallory")
    assert (leaks, errors) == (0, 0), f"{leaks} of {tries} responses leaked, {errors} were 5xx or cut off"


def test_hard_links_fifos_and_devices_are_not_served(open_server: Any) -> None:
    """A hard link to a file the job cannot read (where protected_hardlinks is off), a FIFO
    (an open would hang), a device (an open has effects): refused, left out of archives."""
    server = open_server()
    server.add_user("mallory")
    with server.api("mallory") as c:
        job = _job(c, "echo public > ok; mkfifo pipe; echo done")
        assert wait_job(server, job, "mallory")["state"] == "succeeded"
        work = server.data_dir / "jobs" / str(job) / "1" / "work"
        secret = server.data_dir / "secret"  # same file system as the work dir
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        os.link(secret, work / "hard")  # what the job could do with protected_hardlinks=0
        os.mknod(work / "zero", 0o666 | 0o020000, os.makedev(1, 5))  # /dev/zero
        for name in ("hard", "pipe", "zero"):
            t = time.monotonic()
            r = c.get(f"/api/v1/jobs/{job}/files/{name}")
            assert 400 <= r.status_code < 500 and SECRET not in r.content, (name, r.status_code)
            assert time.monotonic() - t < 5, name
        assert c.get(f"/api/v1/jobs/{job}/files/ok").content == b"public\n"
        r = c.get(f"/api/v1/jobs/{job}/archive")
        names = tarfile.open(fileobj=io.BytesIO(r.content)).getnames()
        assert sorted(names) == ["ok"] and SECRET not in r.content


def test_files_that_grow_or_vanish_while_served(open_server: Any) -> None:
    """A file appended to (and cut) while it is downloaded gets exactly the announced
    length; one removed and re-made in a loop gets a 200 or a 404, never a 5xx."""
    server = open_server()
    with server.api() as c:
        job = _job(
            c,
            "head -c 2000000 /dev/zero > grow; echo started; i=0; "
            "while :; do head -c 4096 /dev/zero >> grow; echo x > v; rm v; i=$((i+1)); "
            "[ $i -lt 300 ] || { head -c 1000000 /dev/zero > grow; i=0; }; done",
        )
        wait_running(server, job, marker="started")
        ranged = []
        for _ in range(40):
            r = c.get(f"/api/v1/jobs/{job}/files/grow")
            assert r.status_code == 200 and len(r.content) == int(r.headers["content-length"])
            r = c.get(f"/api/v1/jobs/{job}/files/grow", headers={"Range": "bytes=10-19"})
            # `> grow` empties the file for a moment: then the range is not satisfiable (416)
            assert r.status_code in (206, 416) and (r.status_code == 416 or r.content == b"\0" * 10)
            ranged.append(r.status_code)
            assert c.get(f"/api/v1/jobs/{job}/files/v").status_code in (200, 404)
            assert c.get(f"/api/v1/jobs/{job}/archive").status_code == 200
        assert ranged.count(206) >= 30, ranged
        c.post(f"/api/v1/jobs/{job}/kill")
        wait_job(server, job)


DEEP = (
    'python3 -c "import os\n'
    "for top in ('.', '/tmp'):\n"
    "    os.chdir(top)\n"
    "    for i in range(3000):\n"
    "        os.mkdir('d'); os.chdir('d'); open('f', 'w').write('x')\n"
    "print('deep')\"; sleep 2"
)


def test_a_tree_thousands_of_levels_deep_breaks_nothing(open_server: Any) -> None:
    """A job leaves 3,000 nested dirs in its working dir and its /tmp. The safe walk and
    Python's rmtree recursed once a level: RecursionError (with `ignore_errors` too). Its
    archive broke off mid-stream; its /tmp stayed after it ended (its collect failed,
    its cgroup left); and retention failed at every check on this one job, so no one's
    files expired any more. Now the listing answers (dirs past 128 levels are not
    entered), the /tmp goes at the end, and retention removes everyone's files."""
    server = open_server(KRAN_FILES_RETENTION="3s", KRAN_FILES_RETENTION_CHECK_S="0.2")
    server.add_user("mallory")
    server.add_user("alice")
    with server.api("mallory") as c, server.api("alice") as a:
        deep = _job(c, DEEP)
        wait_running(server, deep, marker="deep", user="mallory")
        r = c.get(f"/api/v1/jobs/{deep}/archive")
        assert r.status_code == 200, r.text
        names = tarfile.open(fileobj=io.BytesIO(r.content)).getnames()  # (a broken stream raises)
        assert "d/" * 127 + "d" in names and len(names) == 2 * 128 + 1, len(names)
        assert wait_job(server, deep, "mallory")["state"] == "succeeded"
        attempt = server.data_dir / "jobs" / str(deep) / "1"
        assert not (attempt / "tmp").exists(), "the job's /tmp was not removed"
        theirs = _job(a, "echo mine > out")
        assert wait_job(server, theirs, "alice")["state"] == "succeeded"
        deadline = time.monotonic() + 30
        while not (
            a.get(f"/api/v1/jobs/{theirs}").json()["files_expired"]
            and c.get(f"/api/v1/jobs/{deep}").json()["files_expired"]
        ):
            assert time.monotonic() < deadline, "retention stopped at the deep tree"
            time.sleep(0.2)
        assert not attempt.exists() and not (server.data_dir / "jobs" / str(theirs)).exists()


def test_a_dir_of_many_files_is_listed_a_page_at_a_time(open_server: Any) -> None:
    """A job made 1,000,000 files in one dir: one listing took the server from 142 MB to
    1.16 GB, six at once to 6 GB (an outside attack's finding). A listing is a page now
    (at most 10,000 entries, by name, picked as the names stream: none past the page is
    kept); `next_cursor` gives the next, and names that are not UTF-8 go through it.
    (12,001 files here: a file takes 0.35 ms to make on this VM.)"""
    server = open_server()
    server.add_user("mallory")
    with server.api("mallory") as c:
        py = 'import os\nfor i in range(1, 12001): os.mknod(str(i))\nos.mknod(b"z\\xff")'
        make = f"mkdir many; cd many; python3 -c '{py}'"
        job = _job(c, f"{make}; echo made; sleep 300")
        wait_running(server, job, marker="made", user="mallory")
        r = c.get(f"/api/v1/jobs/{job}/files", params={"path": "many"})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["entries"]) == 10_000 and page["next_cursor"]
        names = [e["name"] for e in page["entries"]]
        assert names == sorted(names)
        r = c.get(f"/api/v1/jobs/{job}/files", params={"path": "many", "cursor": page["next_cursor"], "limit": 5})
        assert [e["name"] for e in r.json()["entries"]] == sorted(str(i) for i in range(1, 12001))[10_000:10_005]
        last = c.get(f"/api/v1/jobs/{job}/files", params={"path": "many", "limit": 2, "cursor": _cursor("9999")})
        assert [e["name"] for e in last.json()["entries"]] == ["z\\xff"] and last.json()["next_cursor"] is None
        bad = c.get(f"/api/v1/jobs/{job}/files", params={"path": "many", "cursor": "!!"})
        assert bad.status_code == 422 and "cursor" in bad.text
        c.post(f"/api/v1/jobs/{job}/kill")
        wait_job(server, job, "mallory")


def _cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()
