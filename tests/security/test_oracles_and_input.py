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


@pytest.fixture(scope="module")
def shared(module_server: ServerProc) -> ServerProc:
    """For the parametrized refusals: alice (each case checks nothing was stored) and bob."""
    module_server.add_user("alice")
    module_server.add_user("bob")
    return module_server


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


def _same(a: Any, b: Any, *names: str) -> bool:
    """The same status and message, but for the names asked about."""

    def text(r: Any) -> str:
        t = r.json().get("error", "")
        for n in names:
            t = t.replace(n, "N")
        return t

    return bool(a.status_code == b.status_code and text(a) == text(b))


def test_schedule_names_are_per_owner(two: ServerProc) -> None:
    """A taken name was a 409 "exists already" for anyone: now each owner has their own."""
    job = {"command": ["true"]}
    with two.api("alice") as c:
        assert c.post("/api/v1/schedules", json={"name": "nightly", "cron": "0 3 * * *", "job": job}).status_code == 201
    with two.api("bob") as c:
        mine = c.post("/api/v1/schedules", json={"name": "nightly", "every": "PT1H", "job": job})
        assert mine.status_code == 201 and mine.json()["owner"] == "bob", mine.text
        assert c.get("/api/v1/schedules/nightly").json()["kind"] == "every"  # bob's own
        assert [s["owner"] for s in c.get("/api/v1/schedules").json()["schedules"]] == ["bob"]
        theirs = c.get("/api/v1/schedules/nightly", params={"owner": "alice"})
        missing = c.get("/api/v1/schedules/nosuch", params={"owner": "alice"})
        assert theirs.status_code == 404 and _same(theirs, missing, "nightly", "nosuch")
        for verb in ("enable", "disable", "run-now"):
            r = c.post(f"/api/v1/schedules/nightly/{verb}", params={"owner": "alice"})
            assert _same(r, c.post(f"/api/v1/schedules/nosuch/{verb}", params={"owner": "alice"}), "nightly", "nosuch")
        assert c.delete("/api/v1/schedules/nightly", params={"owner": "alice"}).status_code == 404
        other = c.post("/api/v1/schedules", json={"name": "b1", "after": ["alice/nightly"], "job": job})
        missing = c.post("/api/v1/schedules", json={"name": "b1", "after": ["alice/nosuch"], "job": job})
        assert other.status_code == 422 and _same(other, missing, "alice/nightly", "alice/nosuch")
        follow = c.post("/api/v1/schedules", json={"name": "b2", "after": ["nightly"], "job": job}).json()
        assert follow["after"] == ["nightly"]  # bob's own nightly
    with two.api("alice") as c:
        assert c.get("/api/v1/schedules/nightly").json()["kind"] == "cron"  # untouched
    with two.api() as c:  # an admin names anyone's
        assert c.get("/api/v1/schedules/nightly", params={"owner": "alice"}).json()["owner"] == "alice"
        r = c.post("/api/v1/schedules", json={"name": "a1", "after": ["alice/nightly"], "job": job})
        assert r.status_code == 201 and r.json()["after"] == ["alice/nightly"]
        assert c.get("/api/v1/schedules/nightly").status_code == 404  # the admin has none of their own


def _who(c: Any, app: str) -> str:
    """The WHO of the app a job with this app name got."""
    r = c.post("/api/v1/jobs", json={"command": ["true"], "app": app})
    assert r.status_code == 201, r.text
    return str(c.get(f"/api/v1/jobs/{r.json()['id']}").json()["env"]["WHO"])


def test_app_names_are_per_owner(two: ServerProc) -> None:
    """A private app's name was a 403 "belongs to alice" for anyone: now each owner has
    their own, and another user's private app is as missing as one never loaded."""
    with two.api("alice") as c:
        assert c.post("/api/v1/apps/secret", json={"shared": False, "env": {"WHO": "alice"}}).status_code == 201
        assert c.post("/api/v1/apps/tool", json={"env": {"WHO": "alice"}}).status_code == 201  # shared
    with two.api("bob") as c:
        mine = c.post("/api/v1/apps/secret", json={"shared": False, "env": {"WHO": "bob"}})
        assert mine.status_code == 201 and mine.json()["owner"] == "bob", mine.text
        assert c.get("/api/v1/apps/secret").json()["defaults"]["env"] == {"WHO": "bob"}
        theirs = c.get("/api/v1/apps/secret", params={"owner": "alice"})
        missing = c.get("/api/v1/apps/nosuch", params={"owner": "alice"})
        assert theirs.status_code == 404 and _same(theirs, missing, "secret", "nosuch")
        for verb in ("enable", "disable"):
            r = c.post(f"/api/v1/apps/secret/{verb}", params={"owner": "alice"})
            assert _same(r, c.post(f"/api/v1/apps/nosuch/{verb}", params={"owner": "alice"}), "secret", "nosuch")
        r = c.post("/api/v1/apps/secret", params={"owner": "alice"}, json={"shared": False})
        assert r.status_code == 404  # nor load a version of it
        assert _who(c, "secret") == "bob"
        other = c.post("/api/v1/jobs", json={"command": ["true"], "app": "alice/secret"})
        missing = c.post("/api/v1/jobs", json={"command": ["true"], "app": "alice/nosuch"})
        assert other.status_code == 422 and _same(other, missing, "alice/secret", "alice/nosuch")
        # a shared app is everyone's to run, by its name or OWNER/NAME; one's own comes first
        assert _who(c, "tool") == "alice"
        assert c.post("/api/v1/jobs", json={"command": ["true"], "app": "alice/tool"}).status_code == 201
        assert c.get("/api/v1/apps/tool", params={"owner": "alice"}).status_code == 200
        shared = c.post("/api/v1/apps/tool", json={"env": {"WHO": "bob"}})
        assert shared.status_code == 409 and "a shared app 'tool' exists already" in shared.json()["error"]
        assert c.post("/api/v1/apps/tool", json={"shared": False, "env": {"WHO": "bob"}}).status_code == 201
        assert _who(c, "tool") == "bob"
        assert sorted((a["name"], a["owner"]) for a in c.get("/api/v1/apps").json()["apps"]) == [
            ("secret", "bob"),
            ("tool", "alice"),
            ("tool", "bob"),
        ]
    with two.api("alice") as c:
        assert _who(c, "secret") == "alice"
    with two.api() as c:  # an admin may run anyone's, by OWNER/NAME
        assert _who(c, "alice/secret") == "alice"
        for nobody in ("ghost", "a/b", "..", "x" * 100):  # nor make apps of nobody's, holding the name
            r = c.post("/api/v1/apps/vx", params={"owner": nobody}, json={})
            assert r.status_code == 404 and "not found" in r.json()["error"], (nobody, r.text)
        assert c.post("/api/v1/apps/vx", params={"owner": "bob"}, json={}).json()["owner"] == "bob"


@pytest.mark.parametrize(
    "trigger",
    [
        {"cron": "0 0 30 2 *"},
        {"cron": "0 0 31 4 *"},
        {"every": "R99999999999999999999/PT1H"},
        {"every": "R/0001-01-01T00:00:00Z/PT1S"},
    ],
)
def test_schedules_that_cannot_fire_are_422(shared: ServerProc, trigger: dict[str, str]) -> None:
    with shared.api("alice") as c:
        r = c.post("/api/v1/schedules", json={"name": "s", **trigger, "job": {"command": ["true"]}})
        assert r.status_code == 422, r.text
        assert c.get("/api/v1/schedules").json()["schedules"] == []


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
def test_upload_destinations_the_file_system_cannot_hold_are_422(shared: ServerProc, dests: list[str]) -> None:
    files = [("input", (d, b"data", "application/octet-stream")) for d in dests]
    with shared.api("alice") as c:
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
def test_types_are_strict(shared: ServerProc, extra: dict[str, Any]) -> None:
    """Issue 18.8: `cpus: true` and `network: "yes"` were accepted. (bob: alice's jobs stay none)"""
    with shared.api("bob") as c:
        r = c.post("/api/v1/jobs", json={"command": ["true"], **extra})
        assert r.status_code == 422, r.text
        assert (
            c.post("/api/v1/jobs", json={"command": ["true"], "cpus": 0.5, "mem": 64, "timeout": 30}).status_code == 201
        )
