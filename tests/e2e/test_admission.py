"""What a server takes into its queue, the same by every way in (issue 19.2, 19.5)."""

from __future__ import annotations

from typing import Any


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
