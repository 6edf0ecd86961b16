"""Preemption with a real server and real jobs (issue 20.6): off by default; with
queue.preemption = priority a high-priority job on a full machine starts within a
dispatch round of a preempted job stopping, and the preempted job runs again, for free."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import ServerProc


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _fill(server: ServerProc, shared: Path, seconds: float) -> list[int]:
    sh = f'echo "$KRAN_ATTEMPT ${{KRAN_PREEMPTED:-0}}" >> {shared}/low-$KRAN_JOB_ID; sleep {seconds}'
    with server.api() as c:
        ids: list[int] = c.post(
            "/api/v1/jobs/batch", json={"jobs": [{"sh": sh, "cpus": "1", "preemptible": True}] * 4}
        ).json()["ids"]
        deadline = time.monotonic() + 20
        while sum(c.get(f"/api/v1/jobs/{i}").json()["state"] == "running" for i in ids) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    return ids


def test_a_high_priority_job_preempts_and_the_preempted_runs_again(make_server: Any, shared_dir: Path) -> None:
    server: ServerProc = make_server(KRAN_QUEUE_PREEMPTION="priority")
    lows = _fill(server, shared_dir, 3)
    with server.api() as c:
        high = c.post("/api/v1/jobs", json={"command": ["true"], "cpus": "1", "priority": 10}).json()["id"]
    got = server.wait_state(high, {"succeeded"}, timeout=30)
    views = [server.wait_state(i, {"succeeded", "failed", "killed"}, timeout=60) for i in lows]
    assert all(v["state"] == "succeeded" for v in views), views
    preempted = [v for v in views if len(v["attempts"]) == 2]
    assert len(preempted) == 1, [v["attempts"] for v in views]  # one was enough
    first, second = preempted[0]["attempts"]
    assert first["state"] == "preempted" and "re-queued without using a retry" in first["reason"]
    assert second["state"] == "succeeded" and preempted[0]["retries"] == 0
    # the high job started as soon as the preempted one had stopped
    assert 0 <= _t(got["started_at"]) - _t(first["finished_at"]) < 1.5, (got["started_at"], first["finished_at"])
    # the next attempt knew
    assert (shared_dir / f"low-{preempted[0]['id']}").read_text().split("\n")[:2] == ["1 0", "2 1"]


def test_off_by_default_a_high_priority_job_waits(server: ServerProc, shared_dir: Path) -> None:
    lows = _fill(server, shared_dir, 1.5)
    with server.api() as c:
        high = c.post("/api/v1/jobs", json={"command": ["true"], "cpus": "1", "priority": 10}).json()["id"]
        time.sleep(0.5)
        assert c.get(f"/api/v1/jobs/{high}").json()["state"] == "queued"
    server.wait_state(high, {"succeeded"}, timeout=30)
    for i in lows:
        assert len(server.wait_state(i, {"succeeded"}, timeout=30)["attempts"]) == 1


def _fill_containers(server: ServerProc, image: str, sh: str) -> list[int]:
    """The 4 cpus taken by preemptible containers running `sh`, each with its trap set."""
    job = {"image": image, "sh": sh, "cpus": "1", "mem": "32", "preemptible": True}
    with server.api() as c:
        ids: list[int] = c.post("/api/v1/jobs/batch", json={"jobs": [job] * 4}).json()["ids"]
    for i in ids:
        server.wait_state(i, {"running"}, timeout=60)
    time.sleep(1.0)  # (a shell sets its trap a moment after it starts)
    return ids


def test_a_preempted_container_that_exits_0_on_sigterm_runs_again(make_server: Any, test_image: str) -> None:
    """A docker job that saves its work on SIGTERM and exits 0 was stopped, not done: it is
    re-queued like any preempted job. (Its exit code is the job's own, where a host job's is
    the root wrapper's 143: it counted as succeeded, and never ran again.)"""
    server: ServerProc = make_server(KRAN_QUEUE_PREEMPTION="priority")
    lows = _fill_containers(server, test_image, "trap 'echo saved; exit 0' TERM; echo started; sleep 4 & wait")
    with server.api() as c:
        high = c.post("/api/v1/jobs", json={"command": ["true"], "cpus": "1", "priority": 10}).json()["id"]
        server.wait_state(high, {"succeeded"}, timeout=60)
        views = [server.wait_state(i, {"succeeded", "failed", "killed"}, timeout=90) for i in lows]
        assert all(v["state"] == "succeeded" for v in views), views
        preempted = [v for v in views if len(v["attempts"]) == 2]
        assert len(preempted) == 1, [v["attempts"] for v in views]
        first, second = preempted[0]["attempts"]
        assert first["state"] == "preempted" and second["state"] == "succeeded", preempted[0]["attempts"]
        assert c.get(f"/api/v1/jobs/{preempted[0]['id']}/logs").text == "started\n"  # the second attempt's


def test_a_container_stopped_for_a_preemption_is_known_stopped_after_a_restart(
    make_server: Any, test_image: str
) -> None:
    """The server dies while a victim saves its work (after the stop's SIGTERM, within its
    grace), and the victim ends before it is back: the server started again still knows
    kran stopped it (the attempt dir keeps when), so its exit 0 does not count as done. And
    while it saves, no other job is stopped: one preemption at a time (every pass stopped
    one more, before)."""
    server: ServerProc = make_server(KRAN_QUEUE_PREEMPTION="priority")
    sh = (
        'if [ -n "$KRAN_PREEMPTED" ]; then echo resumed; exit 0; fi; '
        "trap 'touch term; sleep 1; echo saved; exit 0' TERM; echo started; sleep 10 & wait"
    )
    lows = _fill_containers(server, test_image, sh)
    with server.api() as c:
        c.post("/api/v1/jobs", json={"command": ["true"], "cpus": "1", "priority": 10})
        deadline = time.monotonic() + 30
        while not any((server.data_dir / "jobs" / str(i) / "1" / "work" / "term").exists() for i in lows):
            assert time.monotonic() < deadline, "no victim got its SIGTERM"
            time.sleep(0.05)
    server.kill9()  # while the victim saves its work, which it ends while no server runs
    time.sleep(2)
    server.start()
    views = [server.wait_state(i, {"succeeded", "failed", "killed"}, timeout=90) for i in lows]
    preempted = [v for v in views if v["attempts"][0]["state"] == "preempted"]
    assert len(preempted) == 1 and len(preempted[0]["attempts"]) == 2, [v["attempts"] for v in views]
    with server.api() as c:
        assert c.get(f"/api/v1/jobs/{preempted[0]['id']}/logs").text == "resumed\n"


def test_a_victim_that_ignores_sigterm_holds_only_its_own_room(make_server: Any, test_image: str) -> None:
    """A container that ignores SIGTERM with a grace of an hour, chosen first (the lowest
    priority): the job it was stopped for waits for its room at most
    queue.preemption_grace_s (2 s here; 300 by default), and a second waiting job has
    another job stopped meanwhile (one such victim held every preemption, for its grace)."""
    server: ServerProc = make_server(KRAN_QUEUE_PREEMPTION="priority", KRAN_QUEUE_PREEMPTION_GRACE_S="2")
    stubborn = {
        "image": test_image, "sh": "trap '' TERM; sleep 600", "cpus": "1", "mem": "32",
        "preemptible": True, "priority": -1000, "grace": "1h",
    }  # fmt: skip
    with server.api() as c:
        first = c.post("/api/v1/jobs", json=stubborn).json()["id"]
        server.wait_state(first, {"running"}, timeout=60)
    with server.api() as c:
        low = {"sh": "sleep 60", "cpus": "1", "preemptible": True}
        others: list[int] = c.post("/api/v1/jobs/batch", json={"jobs": [low] * 3}).json()["ids"]
        for i in others:
            server.wait_state(i, {"running"}, timeout=30)
        highs = [
            c.post("/api/v1/jobs", json={"command": ["true"], "cpus": "1", "priority": 10}).json()["id"]
            for _ in range(2)
        ]
        for h in highs:
            assert server.wait_state(h, {"succeeded"}, timeout=30)["state"] == "succeeded"
        deadline = time.monotonic() + 30  # (the highs may have taken other rooms first)
        while c.get(f"/api/v1/jobs/{first}").json()["attempts"][0]["state"] != "preempted":
            assert time.monotonic() < deadline, c.get(f"/api/v1/jobs/{first}").json()["attempts"]
            time.sleep(0.2)
        assert sum(c.get(f"/api/v1/jobs/{i}").json()["attempts"][0]["state"] == "preempted" for i in others) == 1
        for i in [first, *others]:
            c.post(f"/api/v1/jobs/{i}/kill")
