"""Attacks on the TES API (issue 21), from the review of its first version: each failed
before its fix. Staging runs as root, so links a user could plant must never be followed;
file:// outputs are written by the task's user, never by root."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(300)
TES = "/ga4gh/tes/v1"
ENDED = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


def _wait(h: httpx.Client, tid: str, timeout: float = 120) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        b: dict[str, Any] = h.get(f"{TES}/tasks/{tid}", params={"view": "FULL"}).json()
        if b["state"] in ENDED:
            return b
        assert time.monotonic() < end, b
        time.sleep(0.3)


@pytest.fixture
def dirs() -> Iterator[Path]:
    """A dir other uids may pass through (pytest's tmp is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="kran-sec-tes-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_links_in_a_directory_input_are_left_out_and_inputs_cannot_overlap(
    open_server: Any, test_image: str, dirs: Path
) -> None:
    """A dataset under an allowed root with links to files and dirs elsewhere: copying them
    as links let a later input be written, as root, through them (a file overwritten, a
    file planted anywhere)."""
    allowed, victim = dirs / "allowed", dirs / "victim"
    (allowed / "ds").mkdir(parents=True)
    (allowed / "ds" / "real.txt").write_text("data\n")
    victim.mkdir()
    (victim / "target").write_text("ORIGINAL\n")
    (allowed / "ds" / "genome.fa").symlink_to(victim / "target")
    (allowed / "ds" / "latest").symlink_to(victim)
    server = open_server(KRAN_FILES_FILE_URL_ROOTS=str(allowed))
    server.add_user("alice")
    ds = {"path": "/data/ds", "url": f"file://{allowed}/ds", "type": "DIRECTORY"}
    ex = {"image": test_image, "command": ["sh", "-c", "ls -a /data/ds; cat /data/ds/real.txt"]}
    with server.api("alice") as h:
        for second in ({"path": "/data/ds/genome.fa", "content": "PWNED\n"}, {**ds, "url": f"file://{allowed}/ds"}):
            r = h.post(f"{TES}/tasks", json={"executors": [ex], "inputs": [ds, second]})
            assert r.status_code == 400 and r.json()["field"] == "inputs[1].path", r.text
        done = _wait(h, h.post(f"{TES}/tasks", json={"executors": [ex], "inputs": [ds]}).json()["id"])
    assert done["state"] == "COMPLETE", done
    listing = done["logs"][0]["logs"][0]["stdout"].split()
    assert "real.txt" in listing and "genome.fa" not in listing and "latest" not in listing
    assert (victim / "target").read_text() == "ORIGINAL\n" and sorted(p.name for p in victim.iterdir()) == ["target"]


def test_file_outputs_are_never_written_as_root(open_server: Any, dirs: Path) -> None:
    """An executor that never launched (its image is not there; ignore_error lets the task
    go on) left the task's dirs root's: the output's writer took that owner for the task's
    user and wrote as root, through a link, into a dir the user may not write."""
    out, victim = dirs / "out", dirs / "victim"
    (out / "alice").mkdir(parents=True)  # root's 0755: alice's uid may not write here
    victim.mkdir()
    (out / "alice" / "link").symlink_to(victim / "by-root")
    server = open_server(KRAN_TES_OUTPUT_ROOTS=f"{out}/{{user}}")
    server.add_user("alice")
    task = {
        "executors": [{"image": "kran-test/does-not-exist:latest", "command": ["true"], "ignore_error": True}],
        "inputs": [{"path": "/w/in", "content": "root wrote this\n"}],
        "outputs": [
            {"path": "/w/in", "url": f"file://{out}/alice/x"},
            {"path": "/w/in", "url": f"file://{out}/alice/link"},
        ],
    }
    with server.api("alice") as h:
        done = _wait(h, h.post(f"{TES}/tasks", json=task).json()["id"])
    assert done["state"] == "SYSTEM_ERROR", done
    assert not (out / "alice" / "x").exists() and not (victim / "by-root").exists()


def test_a_user_named_dot_dot_stays_in_its_output_root(open_server: Any, test_image: str, dirs: Path) -> None:
    out = dirs / "out"
    for u in ("bob", ".."):
        (out / u).mkdir(parents=True, exist_ok=True)
    (out / "bob").chmod(0o1777)
    server = open_server(KRAN_TES_OUTPUT_ROOTS=f"{out}/{{user}}")
    server.add_user("..")
    with server.api("..") as h:
        task = {
            "executors": [{"image": test_image, "command": ["sh", "-c", "echo x > /w/x"]}],
            "outputs": [{"path": "/w/x", "url": f"file://{out}/bob/stolen"}],
        }
        _wait(h, h.post(f"{TES}/tasks", json=task).json()["id"])
    assert not (out / "bob" / "stolen").exists()


def test_bad_numbers_and_unreadable_urls_are_400_and_not_stored(open_server: Any, test_image: str) -> None:
    server = open_server()
    ex = {"image": test_image, "command": ["true"]}
    with server.api() as h:
        for token in ("9" * 30, "-1", "x"):
            assert h.get(f"{TES}/tasks", params={"page_token": token}).status_code == 400
        bodies = {
            "resources.ram_gb": {"executors": [ex], "resources": {"ram_gb": 1e308}},
            "inputs[0].url": {"executors": [ex], "inputs": [{"path": "/d/s", "url": "file:///etc/shadow"}]},
            "executors[0].image": {"executors": [{"image": "--help", "command": ["true"]}]},
        }
        for field, body in bodies.items():
            r = h.post(f"{TES}/tasks", json=body)
            assert r.status_code == 400 and r.json()["field"] == field, r.text
        r = h.post(
            f"{TES}/tasks", json={"executors": [ex], "inputs": [{"path": "/d", "url": "/etc", "type": "DIRECTORY"}]}
        )
        assert r.status_code == 400
        assert h.get(f"{TES}/tasks").json()["tasks"] == []


def test_a_server_killed_while_it_submits_a_tasks_jobs_stores_none_twice(open_server: Any, test_image: str) -> None:
    """Each executor's job was recorded only once all were submitted: a kill -9 in between,
    and the next start submitted them all again (orphans that ran beside the task's own)."""
    server = open_server()
    steps = [{"image": test_image, "command": ["true"]}] * 20
    tasks = []
    for delay in (0.005, 0.02, 0.05, 0.1):
        with server.api() as h:
            tasks.append(h.post(f"{TES}/tasks", json={"executors": steps}).json()["id"])
        time.sleep(delay)
        server.kill9()
        server.start()
    with server.api() as h:
        for tid in tasks:
            assert _wait(h, tid)["state"] == "COMPLETE"
    with sqlite3.connect(server.data_dir / "kran.db") as db:
        (jobs,) = db.execute("select count(*) from jobs").fetchone()
    assert jobs == 20 * len(tasks)


def test_inputs_reach_only_the_hosts_the_admin_allows(open_server: Any, test_image: str) -> None:
    """The server fetches inputs from inside the cluster's network: with files.fetch_hosts
    set, a URL elsewhere (cloud metadata, a registry, an admin page) is refused at create."""
    server = open_server(KRAN_FILES_FETCH_HOSTS="*.example.org")
    ex = {"image": test_image, "command": ["true"]}
    with server.api() as h:
        for url in (
            "http://169.254.169.254/latest/meta-data/x",
            "http://127.0.0.1:5000/v2/x",
            "https://example.org.evil/x",
        ):
            r = h.post(f"{TES}/tasks", json={"executors": [ex], "inputs": [{"path": "/d/x", "url": url}]})
            assert r.status_code == 400 and r.json()["field"] == "inputs[0].url", r.text
        assert h.get(f"{TES}/tasks").json()["tasks"] == []


def test_an_output_name_that_is_not_utf8_breaks_no_listing(open_server: Any, test_image: str) -> None:
    """A task's output file named with a byte that is not UTF-8 was stored as a lone
    surrogate: its task, its owner's list and every admin's list answered 500 for good (an
    outside attack's finding). It is left out now, with a note in the task's system logs."""
    server = open_server()
    server.add_user("alice")
    task = {
        "executors": [
            {"image": test_image, "command": ["sh", "-c", 'echo x > "/data/$(printf "\\377")"; echo y > /data/ok']}
        ],
        "outputs": [{"path": "/data/*", "path_prefix": "/data", "url": "s3://bucket/out/"}],
    }
    with server.api("alice") as h, server.api() as admin:
        done = _wait(h, h.post(f"{TES}/tasks", json=task).json()["id"])
        assert done["state"] == "COMPLETE", done
        assert [o["path"] for o in done["logs"][0]["outputs"]] == ["/data/ok"]
        assert "not UTF-8" in " ".join(done["logs"][0]["system_logs"])
        for who in (h, admin):
            for view in ("BASIC", "FULL"):
                r = who.get(f"{TES}/tasks", params={"view": view})
                assert r.status_code == 200 and r.json()["tasks"], r.text


def test_an_output_stored_before_with_such_a_name_is_shown_escaped() -> None:
    from kran.api.tes import _escaped

    assert _escaped({"path": "/data/\udcff", "size_bytes": "2"}) == {"path": "/data/\\xff", "size_bytes": "2"}
