"""What a server takes into its queue, the same by every way in (issue 19.2, 19.5)."""

from __future__ import annotations

import json
import time
from typing import Any

BIG_TOOL = b"""cwlVersion: v1.2
class: CommandLineTool
requirements: {ResourceRequirement: {coresMin: 48}}  # below cwltool's own limit (64)
baseCommand: 'true'
inputs: []
outputs: []
"""


def test_no_host_processes_refuses_host_jobs_only(make_server: Any, test_image: str) -> None:
    """With local.allow_host_processes = false every job was refused, image jobs too."""
    server = make_server(KRAN_LOCAL_ALLOW_HOST_PROCESSES="false")
    host, image = {"command": ["true"]}, {"command": ["true"], "image": test_image}
    with server.api() as c:
        ok = c.post("/api/v1/jobs", json=image)
        assert ok.status_code == 201, ok.text
        assert server.wait_state(ok.json()["id"], {"succeeded", "failed"})["state"] == "succeeded"
        refused = [
            c.post("/api/v1/jobs", json=host),
            c.post("/api/v1/jobs/batch", json={"jobs": [image, host]}),
            c.post("/api/v1/schedules", json={"name": "h", "every": "PT1H", "job": host}),
        ]
        for r in refused:
            assert r.status_code == 422 and "without --image are not allowed" in r.json()["error"], r.text
        assert c.post("/api/v1/schedules", json={"name": "i", "every": "PT1H", "job": image}).status_code == 201
        assert [s["name"] for s in c.get("/api/v1/schedules").json()["schedules"]] == ["i"]


def test_a_schedule_takes_only_jobs_a_submit_takes(server: Any) -> None:
    """A schedule's job was checked at no point: one asking for more than any node has was
    added, and every fire made a job that could never start."""
    big = {"command": ["true"], "cpus": "1000"}
    with server.api() as c:
        job = c.post("/api/v1/jobs", json=big)
        sched = c.post("/api/v1/schedules", json={"name": "big", "every": "PT1H", "job": big})
    assert job.status_code == sched.status_code == 422
    assert job.json()["error"] == sched.json()["error"] and "more than the largest node" in job.json()["error"]
    # a workflow step asking for as much: refused by the same check, and the run says why
    with server.api() as c:
        files = [("file", ("t.cwl", BIG_TOOL))]
        run = c.post("/api/v1/workflows", data={"run": json.dumps({"workflow": "t.cwl"})}, files=files)
        assert run.status_code == 201, run.text
    got = server.poll(f"/api/v1/workflows/{run.json()['id']}", {"failed", "succeeded"}, timeout=60)
    assert got["state"] == "failed" and "more than the largest node" in got["reason"], got["reason"]


def _runs(c: Any, name: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        runs: list[dict[str, Any]] = c.get(f"/api/v1/schedules/{name}").json()["runs"]
        if runs:
            return runs
        time.sleep(0.2)
    raise AssertionError(f"schedule {name} did not fire")


def _submitted(c: Any) -> float:
    (line,) = [x for x in c.get("/metrics").text.splitlines() if x.startswith("kran_job_submissions_total")]
    return float(line.split()[1])


def test_the_queue_bound_and_the_count_hold_for_schedule_fires(make_server: Any) -> None:
    """A fire skipped the queue bound and the submission metric: a schedule could fill the
    queue past queue.max, and its jobs were not counted."""
    server = make_server(KRAN_QUEUE_MAX="2")
    with server.api() as c:
        blocker = c.post("/api/v1/jobs", json={"command": ["sleep", "60"]}).json()["id"]
        server.wait_state(blocker, {"running"})
        one_shot = {"every": "R1/PT1H", "job": {"command": ["true"], "after": [blocker]}}
        assert c.post("/api/v1/schedules", json={"name": "counted", **one_shot}).status_code == 201
        assert _runs(c, "counted")[0]["run"] == "started" and _submitted(c) == 2  # the blocker and the fire
        assert c.post("/api/v1/jobs", json={"command": ["true"], "after": [blocker]}).status_code == 201
        assert c.post("/api/v1/jobs", json={"command": ["true"]}).status_code == 429  # 2 waiting: full
        assert c.post("/api/v1/schedules", json={"name": "full", **one_shot}).status_code == 201
        runs = _runs(c, "full")
        assert runs[0]["run"] == "skipped" and "queue is full" in runs[0]["reason"], runs
        assert c.post("/api/v1/schedules/full/run-now").status_code == 429
        assert len(c.get("/api/v1/jobs", params={"state": "queued"}).json()["jobs"]) == 2
        assert _submitted(c) == 3
        c.post(f"/api/v1/jobs/{blocker}/kill")
