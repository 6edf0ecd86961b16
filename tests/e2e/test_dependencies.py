"""kran submit --after / --after-any, end to end."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ServerProc


def submit(kran: Any, *args: str) -> int:
    r = kran("submit", *args)
    assert r.exit_code == 0, r.output
    return int(r.stdout)


def test_chain_runs_in_order_and_waits_with_reason(kran: Any, server: ServerProc) -> None:
    first = submit(kran, "--sh", "sleep 1; echo one")
    second = submit(kran, "--after", str(first), "--", "echo", "two")
    job = json.loads(kran("job", str(second), "-o", "json").stdout)
    assert job["state"] == "queued" and job["waiting_because"] == f"waiting for job {first}"
    assert job["after"] == [first]
    a = server.wait_state(first, {"succeeded"})
    b = server.wait_state(second, {"succeeded"})
    assert b["started_at"] >= a["finished_at"]


def test_failure_cascades_as_dependency_failed(kran: Any, server: ServerProc) -> None:
    bad = submit(kran, "--sh", "sleep 0.5; exit 3")
    child = submit(kran, "--after", str(bad), "--", "echo", "never")
    grandchild = submit(kran, "--after", str(child), "--", "echo", "never")
    tolerant = submit(kran, "--after-any", str(bad), "--", "echo", "cleanup")
    c = server.wait_state(child, {"dependency_failed"})
    assert c["reason"] == f"dependency job {bad} ended failed" and c["attempts"] == []
    g = server.wait_state(grandchild, {"dependency_failed"})
    assert g["reason"] == f"dependency job {child} ended dependency_failed"
    assert server.wait_state(tolerant, {"succeeded"})["attempt"] == 1


def test_dependency_already_ended_at_submit(kran: Any, server: ServerProc) -> None:
    ok = submit(kran, "--", "true")
    bad = submit(kran, "--", "false")
    server.wait_state(ok, {"succeeded"})
    server.wait_state(bad, {"failed"})
    assert server.wait_state(submit(kran, "--after", f"{ok}", "--", "true"), {"succeeded"})
    j = server.wait_state(submit(kran, "--after", f"{ok},{bad}", "--", "true"), {"dependency_failed"})
    assert j["finished_at"] is not None


def test_killing_a_queued_dependency_fails_dependents(kran: Any, server: ServerProc) -> None:
    blocker = submit(kran, "--cpus", "4", "--", "sleep", "30")
    server.wait_state(blocker, {"running"})
    waiting = submit(kran, "--cpus", "4", "--", "true")
    dependent = submit(kran, "--after", str(waiting), "--", "true")
    assert kran("kill", str(waiting), str(blocker)).exit_code == 0
    assert server.wait_state(dependent, {"dependency_failed"})["reason"] == f"dependency job {waiting} ended killed"


def test_unknown_dependency_is_refused(kran: Any, server: ServerProc) -> None:
    r = kran("submit", "--after", "424242", "--", "true")
    assert r.exit_code == 1 and "unknown job 424242" in r.stderr
    assert kran("submit", "--after", "x", "--", "true").exit_code == 2
    with server.api() as c:
        r = c.post("/api/v1/jobs/batch", json={"jobs": [{"command": ["true"]}, {"command": ["true"], "after": [99]}]})
        assert r.status_code == 422 and c.get("/api/v1/jobs").json()["jobs"] == []


def test_blocked_jobs_survive_kill9(kran: Any, server: ServerProc) -> None:
    first = submit(kran, "--sh", "sleep 2")
    second = submit(kran, "--after", str(first), "--", "echo", "after restart")
    server.wait_state(first, {"running"})
    server.kill9()
    server.start()
    server.wait_state(second, {"succeeded"}, timeout=30)
    with server.api() as c:
        assert c.get(f"/api/v1/jobs/{second}/logs").content == b"after restart\n"
