"""Slurm's dependency types with a real server (issue 20.5)."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import ServerProc


def test_afternotok_and_the_slurm_form(server: ServerProc, kran: Any) -> None:
    with server.api() as c:
        bad = c.post("/api/v1/jobs", json={"command": ["false"]}).json()["id"]
        good = c.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
        cleanup = c.post("/api/v1/jobs", json={"command": ["true"], "after_notok": [bad]}).json()["id"]
        skipped = c.post("/api/v1/jobs", json={"command": ["true"], "after_notok": [good]}).json()["id"]
    assert server.wait_state(cleanup, {"succeeded", "dependency_failed"})["state"] == "succeeded"
    got = server.wait_state(skipped, {"succeeded", "dependency_failed"})
    assert got["state"] == "dependency_failed" and f"job {good} succeeded" in got["reason"]
    r = kran("submit", "--dependency", f"afterok:{good},afterany:{bad}", "--", "true")
    assert r.exit_code == 0, r.output
    got = server.wait_state(int(r.output.strip()), {"succeeded", "dependency_failed"})
    assert got["state"] == "succeeded" and got["after"] == [good] and got["after_any"] == [bad]
    r = kran("submit", "--dependency", "afterok:1?afterany:2", "--", "true")
    assert r.exit_code != 0 and "not supported" in r.output
    # another user's job is unknown, whichever way it is named
    server.add_user("bob")
    with server.api("bob") as b:
        r = b.post("/api/v1/jobs", json={"command": ["true"], "dependency": f"afternotok:{bad}"})
        assert r.status_code == 422 and r.json()["error"] == f"after: unknown job {bad}"


def test_singleton_runs_one_of_a_name_at_a_time(server: ServerProc, shared_dir: Any) -> None:
    log = shared_dir / "log"
    sh = f"echo start >> {log}; sleep 0.7; echo end >> {log}"
    with server.api() as c:
        ids = [
            c.post("/api/v1/jobs", json={"sh": sh, "name": "nightly", "dependency": "singleton"}).json()["id"]
            for _ in range(3)
        ]
        other = c.post("/api/v1/jobs", json={"sh": "sleep 0.5", "name": "other", "dependency": "singleton"}).json()
        deadline = time.monotonic() + 10
        while True:  # one of the three runs; the others say why they wait
            views = [c.get(f"/api/v1/jobs/{i}").json() for i in ids]
            running = [v for v in views if v["state"] == "running"]
            if running and any(v["state"] == "queued" for v in views):
                break
            assert time.monotonic() < deadline, views
            time.sleep(0.05)
        waiting = next(v for v in views if v["state"] == "queued")
        assert waiting["waiting_because"] == (
            f"singleton: job {running[0]['id']} of the same name (nightly) is running"
        ), waiting
    for i in [*ids, other["id"]]:
        assert server.wait_state(i, {"succeeded"}, timeout=30)["state"] == "succeeded"
    # never two at once: starts and ends alternate
    assert log.read_text().split() == ["start", "end"] * 3
