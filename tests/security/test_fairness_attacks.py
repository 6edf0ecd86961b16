"""Attacks on fair share, limits, arrays and dependencies (issue 20), from the outside
review of their first version: each failed before its fix."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import ServerProc

pytestmark = pytest.mark.timeout(300)


def _state(c: Any, job_id: int) -> str:
    return str(c.get(f"/api/v1/jobs/{job_id}").json()["state"])


def _until(pred: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_held_jobs_do_not_keep_others_from_starting(server: ServerProc) -> None:
    """1001 singleton jobs of one name (all held but one) filled the 1000-job window of every
    pass: another user's job never started on an idle machine. The same with a limit."""
    server.add_user("mallory")
    server.add_user("bob")
    held = {"command": ["sleep", "600"], "name": "x", "dependency": "singleton", "priority": 1000, "cpus": "0.1"}
    with server.api("mallory") as m, server.api("bob") as b, server.api() as admin:
        ids = m.post("/api/v1/jobs/batch", json={"jobs": [{**held, "mem": "16"}] * 1001}).json()["ids"]
        mine = b.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
        _until(lambda: _state(b, mine) == "succeeded")
        # a running-jobs limit holding all of a user's jobs: the same
        admin.put("/api/v1/limits", json={"scope": "user", "name": "mallory", "max_running_jobs": 1})
        more = [{"command": ["sleep", "600"], "priority": 1000, "cpus": "0.1", "mem": "16"}] * 1001
        ids += m.post("/api/v1/jobs/batch", json={"jobs": more}).json()["ids"]
        mine = b.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
        _until(lambda: _state(b, mine) == "succeeded")
        for i in ids[:2]:
            m.post(f"/api/v1/jobs/{i}/kill")


def test_schedules_take_the_queued_limit_and_the_dependency_checks(server: ServerProc) -> None:
    """A schedule's fires were stored past max_queued_jobs (8 queued under a limit of 2), and
    its job could wait on another user's job or array (their outcome became its reason)."""
    server.add_user("erin")
    server.add_user("bob")
    with server.api("erin") as e, server.api("bob") as b, server.api() as admin:
        admin.put("/api/v1/limits", json={"scope": "user", "name": "erin", "max_running_jobs": 0, "max_queued_jobs": 2})
        for _ in range(2):
            assert e.post("/api/v1/jobs", json={"command": ["true"]}).status_code == 201
        assert e.post("/api/v1/jobs", json={"command": ["true"]}).status_code == 429
        r = e.post("/api/v1/schedules", json={"name": "q", "every": "PT1S", "job": {"command": ["true"]}})
        assert r.status_code == 201, r.text
        time.sleep(3)
        queued = e.get("/api/v1/jobs", params={"state": "queued"}).json()["jobs"]
        assert len(queued) == 2
        runs = e.get("/api/v1/schedules/q").json()["runs"]
        assert runs and all(x["state"] == "skipped" for x in runs)
        assert runs[0]["reason"] == "user erin: 2 of 2 queued jobs; 1 more refused, nothing stored"
        theirs = b.post("/api/v1/jobs", json={"command": ["false"]}).json()["id"]
        array = b.post("/api/v1/arrays", json={"array": "0-1", "job": {"command": ["true"]}}).json()["id"]
        for job in ({"command": ["true"], "after": [theirs]}, {"command": ["true"], "dependency": f"afterok:a{array}"}):
            r = e.post("/api/v1/schedules", json={"name": "d", "every": "PT1H", "job": job})
            assert r.status_code == 422, r.text
        nosuch = e.post(
            "/api/v1/schedules",
            json={"name": "d", "every": "PT1H", "job": {"command": ["true"], "dependency": "afterok:a999999"}},
        )
        assert nosuch.status_code == 422 and nosuch.json()["error"] == "dependency: unknown array 999999"


def test_pending_array_tasks_count_against_the_queued_limit(server: ServerProc) -> None:
    """Arrays of 9 tasks %1 were each accepted under a limit of 10: 59 tasks queued or pending."""
    server.add_user("alice")
    with server.api("alice") as a, server.api() as admin:
        admin.put("/api/v1/limits", json={"scope": "user", "name": "alice", "max_queued_jobs": 10})
        body = {"array": "0-8%1", "job": {"command": ["sleep", "60"]}}
        assert a.post("/api/v1/arrays", json=body).status_code == 201
        r = a.post("/api/v1/arrays", json=body)
        assert r.status_code == 429 and "9 more refused" in r.json()["error"], r.text
        first = a.get("/api/v1/arrays").json()["arrays"][0]["id"]
        a.post(f"/api/v1/arrays/{first}/kill")


def test_an_aftercorr_array_ends_when_the_one_it_follows_is_killed(server: ServerProc) -> None:
    """B's tasks waited forever for tasks A would never make (and every pass paid for B)."""
    with server.api() as c:
        a = c.post("/api/v1/arrays", json={"array": "0-99%1", "job": {"command": ["sleep", "600"]}}).json()["id"]
        b = c.post(
            "/api/v1/arrays", json={"array": "0-99", "job": {"command": ["true"], "dependency": f"aftercorr:a{a}"}}
        ).json()["id"]
        waiter = c.post("/api/v1/jobs", json={"command": ["true"], "dependency": f"afterany:a{b}"}).json()["id"]
        _until(lambda: c.get(f"/api/v1/arrays/{a}").json()["tasks"].get("running") == 1)
        view = c.get(f"/api/v1/jobs/{waiter}").json()
        assert view["waiting_because"] == f"waiting for array {b}", view  # said "about to start"
        c.post(f"/api/v1/arrays/{a}/kill")
        _until(lambda: c.get(f"/api/v1/arrays/{b}").json()["state"] == "done", 60)
        got = c.get(f"/api/v1/arrays/{b}").json()
        assert got["tasks"] == {"dependency_failed": 100} and got["pending"] == 0, got
        _until(lambda: _state(c, waiter) == "succeeded")


def test_out_of_range_numbers_are_refused_not_500(server: ServerProc) -> None:
    big = "9223372036854775808"
    with server.api() as c:
        for method, path, body in (
            ("POST", "/api/v1/jobs", {"command": ["true"], "dependency": f"afterok:{big}"}),
            ("POST", "/api/v1/jobs", {"command": ["true"], "dependency": "afterok:a99999999999999999999"}),
            ("POST", "/api/v1/arrays", {"array": f"0-3%{big}", "job": {"command": ["true"]}}),
            ("GET", f"/api/v1/arrays/{big}", None),
            ("POST", f"/api/v1/arrays/{big}/kill", None),
            ("GET", f"/api/v1/arrays/1?tasks=true&after={big}", None),
            ("PUT", "/api/v1/limits", {"scope": "user", "name": "x", "max_running_jobs": 2**63}),
        ):
            r = c.request(method, path, json=body) if body is not None else c.request(method, path)
            assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        for raw in (
            b'{"scope": "user", "name": "x", "max_running_cpus": Infinity}',
            b'{"scope": "user", "name": "x", "max_wall_s": 1e999}',
        ):
            r = c.put("/api/v1/limits", content=raw, headers={"Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, r.text


def test_a_user_cannot_work_out_others_usage(server: ServerProc) -> None:
    """/share gave a user the normalized and effective usage: with their own usage, the
    cluster's total and a co-member's usage followed."""
    server.add_user("carol")
    with server.api("carol") as c:
        c.post("/api/v1/jobs", json={"command": ["true"]})
        rows = c.get("/api/v1/share").json()["associations"]
        assert rows and all(r["norm_usage"] is None and r["effective_usage"] is None for r in rows)
        assert all(r["user"] == "carol" for r in rows)
