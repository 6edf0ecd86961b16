"""Roles as one policy: who may act for whom, who may give an app a user, whose jobs may
use a privileged app (issue 18.1: a service acted as admin and ran admin's app loaded
with --user 0:0: the job ran as root). And input that cannot be stored is refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ServerProc
from tests.security.conftest import logs, wait_job

USERS = (("alice", "user"), ("bob", "user"), ("svc", "service"), ("svc2", "service"), ("root2", "admin"))


@pytest.fixture
def world(make_server: Any) -> ServerProc:
    server: ServerProc = make_server()
    for name, role in USERS:
        server.add_user(name, role)
    return server


@pytest.fixture(scope="module")
def one_world(module_server: ServerProc) -> ServerProc:
    """The same users, one server for the parametrized cases (each its own job or app)."""
    for name, role in USERS:
        module_server.add_user(name, role)
    return module_server


# caller -> on_behalf_of -> expected status of the submit
ON_BEHALF = [
    ("svc", "alice", 201),
    ("svc", "admin", 403),
    ("svc", "root2", 403),
    ("svc", "svc2", 403),
    ("svc", "nobody", 404),
    ("alice", "bob", 403),
    ("alice", "admin", 403),
    (None, "alice", 201),  # the admin may act for a user
]


@pytest.mark.parametrize(("caller", "target", "status"), ON_BEHALF)
def test_who_may_act_for_whom(one_world: ServerProc, caller: str | None, target: str, status: int) -> None:
    with one_world.api(caller) as c:
        r = c.post("/api/v1/jobs", json={"command": ["true"], "on_behalf_of": target})
    assert r.status_code == status, r.text
    if status == 201:
        with one_world.api() as c:
            assert c.get(f"/api/v1/jobs/{r.json()['id']}").json()["owner"] == target


# who loads an app with which --user -> expected status
APP_USERS = [
    ("alice", "0:0", 422),
    ("alice", "5000", 422),  # a uid is someone's files on the host: not a user's to pick
    ("alice", "1100000003", 422),  # another kran user's job uid
    ("svc", "5000", 422),
    (None, "0:0", 201),
    (None, "5000", 201),
]


@pytest.mark.parametrize(("caller", "user", "status"), APP_USERS)
def test_only_admins_give_apps_a_user(one_world: ServerProc, caller: str | None, user: str, status: int) -> None:
    with one_world.api(caller) as c:
        r = c.post(f"/api/v1/apps/tool-{user.replace(':', '-')}", json={"user": user})  # a new app each case
    assert r.status_code == status, r.text


def test_a_privileged_app_runs_only_jobs_an_admin_submits(world: ServerProc) -> None:
    with world.api() as c:
        assert c.post("/api/v1/apps/rootly", json={"user": "0:0"}).status_code == 201  # shared
        mine = c.post("/api/v1/jobs", json={"app": "rootly", "command": ["id", "-u"]}).json()["id"]
    assert wait_job(world, mine)["state"] == "succeeded" and logs(world, mine).strip() == "0"
    for caller, body in (
        ("alice", {"app": "rootly", "command": ["id", "-u"]}),
        ("svc", {"app": "rootly", "command": ["id", "-u"], "on_behalf_of": "alice"}),
    ):
        with world.api(caller) as c:
            r = c.post("/api/v1/jobs", json=body)
        assert r.status_code == 403 and "admin" in r.json()["error"], r.text
    with world.api("svc") as c:  # nor by a schedule
        r = c.post(
            "/api/v1/schedules", json={"name": "s", "every": "R/PT1H", "job": {"app": "rootly", "command": ["id"]}}
        )
    assert r.status_code in (403, 422), r.text


BAD_STRINGS = ["\ud800", "a\ud800b", "nul\u0000byte"]


@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_strings_that_cannot_be_stored_are_refused(world: ServerProc, bad: str) -> None:
    """A lone surrogate was stored with 201; from then on listing jobs answered 500."""
    import json

    with world.api("alice") as c:
        for body in (
            {"command": [bad]},
            {"command": ["true"], "name": bad},
            {"command": ["true"], "labels": {"k": bad}},
            {"command": ["true"], "env": {"K": bad}},
            {"jobs": [{"command": [bad]}]},
        ):
            path = "/api/v1/jobs/batch" if "jobs" in body else "/api/v1/jobs"
            r = c.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
            assert r.status_code == 422, (body, r.text)
        assert c.get("/api/v1/jobs").status_code == 200 and c.get("/api/v1/jobs").json()["jobs"] == []
    emoji = "\U0001f600"  # a valid pair, escaped by json.dumps: still fine
    with world.api("alice") as c:
        r = c.post(
            "/api/v1/jobs",
            content=json.dumps({"command": ["echo", emoji]}),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 201, r.text


def _raw(server: ServerProc, head: str, body: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send a request's head (and the start of its body) on a socket; the answer's bytes."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        try:
            return s.recv(65536)
        except TimeoutError:
            return b""


def test_credentials_are_checked_before_the_body_is_read(world: ServerProc) -> None:
    """Issue 18.5: an unauthenticated 300 MB upload was spooled to disk in full before the
    401; malformed JSON without credentials got a 422 before the 401."""
    big = 300 << 20
    head = (
        "POST /api/v1/jobs/upload HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {big}"
    )
    answer = _raw(world, head, b"--b\r\n")  # the other 300 MB never come
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    answer = _raw(
        world, "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5", b"{nope"
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    forged = "X-Kran-Key: nosuchkey\r\nX-Kran-Timestamp: 1\r\nX-Kran-Nonce: 0123456789abcdef\r\nX-Kran-Signature: x"
    answer = _raw(world, f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n{forged}\r\nContent-Length: {big}", b"{")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    with world.api("alice") as c:  # and with credentials, as before
        assert c.post("/api/v1/jobs", json={"command": ["true"]}).status_code == 201


def test_on_behalf_of_in_a_schedules_job_is_refused_not_ignored(world: ServerProc) -> None:
    """It was stored with 201 and ignored: every run was the service's own job."""
    job = {"command": ["true"], "on_behalf_of": "alice"}
    with world.api("svc") as c:
        r = c.post("/api/v1/schedules", json={"name": "for-alice", "every": "PT1H", "job": job})
        assert r.status_code == 422 and "on_behalf_of" in r.json()["error"], r.text
        assert c.get("/api/v1/schedules").json()["schedules"] == []
        own = {"command": ["true"], "on_behalf_of": "svc"}  # acting for oneself is just oneself
        assert c.post("/api/v1/schedules", json={"name": "mine", "every": "PT1H", "job": own}).status_code == 201
