"""Job arrays with a real server and real jobs (issue 20.4)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc

TASK = "echo s >> {log}; echo $KRAN_ARRAY_TASK_ID >> {idx}; echo e >> {log}"


def _most_at_once(log: Path) -> int:
    running = most = 0
    for line in log.read_text().split():
        running += 1 if line == "s" else -1
        most = max(most, running)
    return most


def _wait_done(server: ServerProc, array_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with server.api() as c:
        while True:
            a: dict[str, Any] = c.get(f"/api/v1/arrays/{array_id}").json()
            if a["state"] == "done":
                return a
            assert time.monotonic() < deadline, a
            time.sleep(0.2)


@pytest.mark.timeout(900)
def test_ten_thousand_tasks_twenty_at_once_through_a_kill_9(server: ServerProc, shared_dir: Path) -> None:
    """Every index runs exactly once, never more than 20 at once, a kill -9 of the server
    halfway changes neither; 10,000 tasks are one row at submit."""
    log, idx = shared_dir / "log", shared_dir / "idx"
    job = {"sh": TASK.format(log=log, idx=idx), "cpus": "0.1", "mem": "16"}
    with server.api() as c:
        t = time.perf_counter()
        r = c.post("/api/v1/arrays", json={"array": "0-9999%20", "job": job})
        took = time.perf_counter() - t
        assert r.status_code == 201, r.text
        a = r.json()
        assert (a["count"], a["throttle"], a["indices"]) == (10_000, 20, "0-9999%20") and took < 1.0
        jobs_now = len(c.get("/api/v1/jobs", params={"limit": 10_000}).json()["jobs"])
        assert jobs_now <= 20  # tasks become jobs as they may start, not at submit
    start = time.monotonic()
    deadline = start + 600
    while not idx.exists() or len(idx.read_text().split()) < 5000:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    halfway = time.monotonic()
    server.kill9()
    server.start()
    done = _wait_done(server, a["id"], 600)
    print(f"10,000 tasks %20: half in {halfway - start:.0f} s, all in {time.monotonic() - start:.0f} s")
    assert done["tasks"] == {"succeeded": 10_000} and done["pending"] == 0, done
    assert sorted(int(i) for i in idx.read_text().split()) == list(range(10_000))
    assert _most_at_once(log) <= 20


def test_indices_env_kill_and_listing(server: ServerProc, kran: Any, shared_dir: Path) -> None:
    out = shared_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    r = kran(
        "submit", "--array", "1-9:4,20%2", "--name", "sweep", "--env", "INPUT=part-$KRAN_ARRAY_TASK_ID.txt",
        "--sh", f'echo "$INPUT $KRAN_ARRAY_JOB_ID $KRAN_ARRAY_TASK_COUNT" > {out}/$KRAN_ARRAY_TASK_ID',
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    array_id = int(r.output.strip())
    done = _wait_done(server, array_id, 60)
    assert done["tasks"] == {"succeeded": 4} and done["indices"] == "1-9:4,20%2"
    for i in (1, 5, 9, 20):
        assert (out / str(i)).read_text() == f"part-{i}.txt {array_id} 4\n"
    # a task is a job that knows its array
    with server.api() as c:
        full = c.get(f"/api/v1/arrays/{array_id}", params={"tasks": True}).json()
        assert [t["index"] for t in full["task_jobs"]] == [1, 5, 9, 20]
        job = c.get(f"/api/v1/jobs/{full['task_jobs'][0]['job_id']}").json()
        assert job["array"] == {"id": array_id, "index": 1, "count": 4} and job["name"] == "sweep"
        # kill one task not yet made, then the whole array: nothing more starts
        slow = c.post("/api/v1/arrays", json={"array": "0-5%1", "job": {"sh": "sleep 30"}}).json()
        assert c.post(f"/api/v1/arrays/{slow['id']}/tasks/3/kill").status_code == 200
        assert c.post(f"/api/v1/arrays/{slow['id']}/tasks/77/kill").status_code == 404
        deadline = time.monotonic() + 20
        while c.get(f"/api/v1/arrays/{slow['id']}").json()["tasks"].get("running") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        got = kran("array", "kill", str(slow["id"]))
        assert got.exit_code == 0, got.output
    done = _wait_done(server, slow["id"], 30)
    assert done["tasks"] == {"killed": 2} and done["pending"] == 0, done  # task 0 and task 3
    table = kran("jobs")
    assert table.exit_code == 0 and "sweep" in table.output and "succeeded 4" in table.output
    assert "1-9:4,20%2" in table.output
    # another user sees neither array
    server.add_user("bob")
    with server.api("bob") as b:
        assert b.get(f"/api/v1/arrays/{array_id}").status_code == 404
        assert b.post(f"/api/v1/arrays/{array_id}/kill").status_code == 404
        assert b.get("/api/v1/arrays").json()["arrays"] == []
    bad = kran("submit", "--array", "5-1", "--", "true")
    assert bad.exit_code != 0 and "the range ends before it starts" in bad.output


def test_dependencies_on_arrays_aftercorr_and_usage(server: ServerProc, kran: Any, shared_dir: Path) -> None:
    log = shared_dir / "order"
    with server.api() as c:
        a = c.post(
            "/api/v1/arrays",
            json={
                "array": "0-3",
                "job": {"sh": f"sleep 0.$((4 - KRAN_ARRAY_TASK_ID)); echo A$KRAN_ARRAY_TASK_ID >> {log}"},
            },
        ).json()
        b = c.post(
            "/api/v1/arrays",
            json={
                "array": "0-3",
                "job": {"sh": f"echo B$KRAN_ARRAY_TASK_ID >> {log}", "dependency": f"aftercorr:a{a['id']}"},
            },
        ).json()
        after_all = c.post("/api/v1/jobs", json={"sh": f"echo J >> {log}", "dependency": f"afterok:a{a['id']}"})
        assert after_all.status_code == 201, after_all.text
        f = c.post("/api/v1/arrays", json={"array": "0-1", "job": {"sh": "exit $KRAN_ARRAY_TASK_ID"}}).json()
        ok = c.post("/api/v1/jobs", json={"command": ["true"], "dependency": f"afterok:a{f['id']}"}).json()["id"]
        notok = c.post("/api/v1/jobs", json={"command": ["true"], "dependency": f"afternotok:a{f['id']}"}).json()
        # aftercorr is for arrays; an unknown array is refused
        r = c.post("/api/v1/jobs", json={"command": ["true"], "dependency": f"aftercorr:a{a['id']}"})
        assert r.status_code == 422 and "aftercorr is for arrays" in r.json()["error"]
        r = c.post("/api/v1/jobs", json={"command": ["true"], "dependency": "afterok:a999"})
        assert r.status_code == 422 and r.json()["error"] == "dependency: unknown array 999"
    for arr in (a, b, f):
        _wait_done(server, arr["id"], 60)
    assert server.wait_state(after_all.json()["id"], {"succeeded"})["state"] == "succeeded"
    got = server.wait_state(ok, {"dependency_failed", "succeeded"})
    assert got["state"] == "dependency_failed" and got["reason"] == f"dependency array {f['id']} ended failed"
    assert server.wait_state(notok["id"], {"succeeded"})["state"] == "succeeded"
    lines = log.read_text().split()
    for i in range(4):  # task i of B after task i of A; J after every A
        assert lines.index(f"B{i}") > lines.index(f"A{i}"), lines
    assert lines.index("J") > max(lines.index(f"A{i}") for i in range(4)), lines
    with server.api() as c:
        assert c.get(f"/api/v1/arrays/{a['id']}").json()["tasks"] == {"succeeded": 4}
    usage = kran("usage", "--by", "array", "-o", "json")
    assert usage.exit_code == 0, usage.output
    import json

    rows = {r["key"]: r for r in json.loads(usage.output)}
    assert rows[str(a["id"])]["jobs"] == {"succeeded": 4} and rows[str(f["id"])]["jobs"] == {
        "succeeded": 1,
        "failed": 1,
    }
    by_account = kran("usage", "--by", "account", "-o", "json")
    assert by_account.exit_code == 0 and [r["key"] for r in json.loads(by_account.output)] == ["default"]


def test_an_array_counts_its_tasks_against_the_queued_limit(server: ServerProc, kran: Any) -> None:
    """Each task counts (as in Slurm); the queue bound holds tasks back instead of being passed."""
    assert kran("limit", "set", "default", "--max-queued-jobs", "100").exit_code == 0
    with server.api() as c:
        r = c.post("/api/v1/arrays", json={"array": "0-100", "job": {"command": ["true"]}})
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "user admin: 0 of 100 queued jobs; 101 more refused, nothing stored"
        assert c.get("/api/v1/arrays").json()["arrays"] == []
        assert c.post("/api/v1/arrays", json={"array": "1-100", "job": {"command": ["true"]}}).status_code == 201
