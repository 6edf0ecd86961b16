"""Bad input gets a clear 4xx naming the problem, and leaves the store unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ServerProc


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"command": ["true"], "cpus": "-1"}, 422, "cpus"),
        ({"command": ["true"], "cpus": 1e30}, 422, "cpus"),
        ({"command": ["true"], "cpus": "4-1"}, 422, "below min"),
        ({"command": ["true"], "mem": -1}, 422, "mem"),
        ({"command": ["true"], "mem": "lots"}, 422, "mem"),
        ({"command": ["true"], "gpus": "1.5"}, 422, "gpus"),
        ({"command": ["true"], "bogus": 1}, 422, "bogus"),
        ({"command": "true"}, 422, "command"),
        ({}, 422, "command"),
        ({"command": ["true"], "sh": "true"}, 422, "command"),
        ({"command": ["true"], "timeout": "soon"}, 422, "timeout"),
        ({"command": ["true"], "priority": "high"}, 422, "priority"),
        ({"command": ["true"], "priority": 10**6}, 422, "priority"),
        ({"command": ["true"], "retries": 1000}, 422, "retries"),
        ({"command": ["true"], "env": {"A": "x" * (10 * 1024 * 1024)}}, 422, "env"),
        ({"command": ["true"], "env": {"BAD NAME": "x"}}, 422, "env"),
        ({"command": ["true"], "cpus": "64"}, 422, "more than the largest node"),
    ],
)
def test_bad_job_fields(module_server: ServerProc, body: dict[str, Any], status: int, fragment: str) -> None:
    with module_server.api() as c:
        r = c.post("/api/v1/jobs", json=body)
        assert r.status_code == status, r.text
        assert fragment in r.json()["error"]
        assert c.get("/api/v1/jobs").json()["jobs"] == []


def test_malformed_and_oversized_bodies(server: ServerProc) -> None:
    with server.api() as c:
        r = c.post("/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "error" in r.json()
        r = c.post("/api/v1/jobs", content=b"x" * (65 * 1024 * 1024), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = c.post("/api/v1/jobs/batch", json={"jobs": [{"command": ["true"]}, {"command": ["true"], "cpus": "x"}]})
        assert r.status_code == 422 and "jobs[1].cpus" in r.json()["error"]
        assert c.get("/api/v1/jobs").json()["jobs"] == []
        assert c.get("/api/v1/jobs/abc").status_code == 422
        assert c.get("/api/v1/jobs/12345").status_code == 404
        assert c.get("/api/v1/jobs", params={"limit": 0}).status_code == 422
        assert c.get("/api/v1/jobs", params={"label": "novalue"}).status_code == 422
        assert c.get("/api/v1/jobs/1/logs", params={"stream": "both"}).status_code == 422


def test_path_traversal_is_refused(server: ServerProc) -> None:
    with server.api() as c:
        job = c.post("/api/v1/jobs", json={"sh": "echo x > ok.txt; ln -s /etc/passwd leak; ln -s / root"}).json()["id"]
        server.wait_state(job, {"succeeded"})
        assert c.get(f"/api/v1/jobs/{job}/files/ok.txt").content == b"x\n"
        for attack in [
            "../../../../etc/passwd",
            "..%2F..%2Fetc%2Fpasswd",
            "%2e%2e/%2e%2e/etc/passwd",
            "leak",
            "root/etc/passwd",
            "/etc/passwd",
            "sub/../../x",
        ]:
            r = c.get(f"/api/v1/jobs/{job}/files/{attack}")
            assert r.status_code in (404, 422), (attack, r.status_code)
            assert b"root:" not in r.content
        for attack in ["..", "../..", "/", "root", "leak"]:
            r = c.get(f"/api/v1/jobs/{job}/files", params={"path": attack})
            assert r.status_code in (404, 422) or all(e["name"] != "passwd" for e in r.json()["entries"]), attack


def test_cli_bad_input_messages(kran: Any) -> None:
    r = kran("submit", "--cpus", "1-x", "--", "true")
    assert r.exit_code == 1 and "cpus" in r.stderr and "Traceback" not in r.output
    r = kran("submit", "--unknown-option", "--", "true")
    assert r.exit_code == 2 and "No such option" in r.stderr
    r = kran("submit")
    assert r.exit_code == 2 and "give a command" in r.stderr
    r = kran("submit", "--env", "NOEQUALS", "--", "true")
    assert r.exit_code == 2 and "K=V" in r.stderr
    r = kran("job", "notanumber")
    assert r.exit_code == 2
