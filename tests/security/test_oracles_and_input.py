"""Another user's objects are indistinguishable from missing ones (issue 18.4), and bad
input is a 4xx naming why, never a 500 (issue 18.6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc


@pytest.fixture
def two(make_server: Any) -> ServerProc:
    server: ServerProc = make_server()
    server.add_user("alice")
    server.add_user("bob")
    return server


def test_waiting_on_another_users_job_is_like_waiting_on_none(two: ServerProc) -> None:
    with two.api("alice") as c:
        theirs = c.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
    with two.api("bob") as c:
        for field in ("after", "after_any"):
            other = c.post("/api/v1/jobs", json={"command": ["true"], field: [theirs]})
            missing = c.post("/api/v1/jobs", json={"command": ["true"], field: [10**9]})
            assert other.status_code == missing.status_code == 422
            assert other.json()["error"].replace(str(theirs), "N") == missing.json()["error"].replace(str(10**9), "N")
        mine = c.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
        assert c.post("/api/v1/jobs", json={"command": ["true"], "after": [mine]}).status_code == 201
    with two.api() as c:  # an admin's job may wait on anyone's
        assert c.post("/api/v1/jobs", json={"command": ["true"], "after": [theirs]}).status_code == 201


def test_following_another_users_schedule_is_like_following_none(two: ServerProc) -> None:
    job = {"command": ["true"]}
    with two.api("alice") as c:
        assert c.post("/api/v1/schedules", json={"name": "nightly", "cron": "0 3 * * *", "job": job}).status_code == 201
    with two.api("bob") as c:
        other = c.post("/api/v1/schedules", json={"name": "b1", "after": ["nightly"], "job": job})
        missing = c.post("/api/v1/schedules", json={"name": "b2", "after": ["nosuch"], "job": job})
        assert other.status_code == missing.status_code == 422
        assert "unknown schedule" in other.json()["error"] and "unknown schedule" in missing.json()["error"]


@pytest.mark.parametrize(
    "trigger",
    [
        {"cron": "0 0 30 2 *"},
        {"cron": "0 0 31 4 *"},
        {"every": "R99999999999999999999/PT1H"},
        {"every": "R/0001-01-01T00:00:00Z/PT1S"},
    ],
)
def test_schedules_that_cannot_fire_are_422(two: ServerProc, trigger: dict[str, str]) -> None:
    with two.api("alice") as c:
        r = c.post("/api/v1/schedules", json={"name": "s", **trigger, "job": {"command": ["true"]}})
        assert r.status_code == 422, r.text
        assert c.get("/api/v1/schedules").status_code == 200


def test_the_last_fire_times_before_year_10000(two: ServerProc) -> None:
    with two.api("alice") as c:
        r = c.post(
            "/api/v1/schedules",
            json={"name": "late", "every": "R/9999-12-31T20:00:00Z/PT1H", "job": {"command": ["true"]}},
        )
        assert r.status_code == 201, r.text
        r = c.get("/api/v1/schedules/late/next", params={"n": 10})
        assert r.status_code == 200 and 0 < len(r.json()["next"]) <= 4, r.text


@pytest.mark.parametrize(
    "dests",
    [["a" * 300], ["a", "a/b"], ["a/b", "a"], ["d/" * 1000 + "f"], ["x", "./x"]],
)
def test_upload_destinations_the_file_system_cannot_hold_are_422(two: ServerProc, dests: list[str]) -> None:
    files = [("input", (d, b"data", "application/octet-stream")) for d in dests]
    with two.api("alice") as c:
        r = c.post("/api/v1/jobs/upload", data={"job": json.dumps({"command": ["true"]})}, files=files)
        assert r.status_code == 422, r.text
        assert c.get("/api/v1/jobs").json()["jobs"] == []


def test_a_yaml_bomb_is_refused_quickly(make_server: Any, tmp_path: Path) -> None:
    """Issue 18.3: a 1 KB document of anchors nested 8 deep, 9 aliases each, pinned the
    server's CPU; cancel did not stop it and it started again after every restart."""
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "\n".join(lines) + "\ncwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: echo\ninputs: []\noutputs: []\n"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "bomb.cwl").write_text(bomb)
    server: ServerProc = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared))
    started = time.monotonic()
    with server.api() as c:
        run_id = c.post("/api/v1/workflows", json={"workflow": str(shared / "bomb.cwl")}).json()["id"]
    run = server.poll(f"/api/v1/workflows/{run_id}", {"failed", "succeeded"}, 30, every=0.1)
    assert run["state"] == "failed" and "expands to more than" in (run["reason"] or ""), run
    assert time.monotonic() - started < 20
    with server.api() as c:
        assert c.get("/api/v1/jobs").status_code == 200


@pytest.mark.parametrize(
    "extra",
    [{"cpus": True}, {"mem": False}, {"network": "yes"}, {"priority": "5"}, {"retries": True}, {"timeout": True}],
)
def test_types_are_strict(two: ServerProc, extra: dict[str, Any]) -> None:
    """Issue 18.8: `cpus: true` and `network: "yes"` were accepted."""
    with two.api("alice") as c:
        r = c.post("/api/v1/jobs", json={"command": ["true"], **extra})
        assert r.status_code == 422, r.text
        assert (
            c.post("/api/v1/jobs", json={"command": ["true"], "cpus": 0.5, "mem": 64, "timeout": 30}).status_code == 201
        )
