"""Small items of issue 18.8: what a refused request leaves behind, and what its error
says."""

from __future__ import annotations

import json
from typing import Any

ECHO_CWL = """
cwlVersion: v1.2
class: CommandLineTool
baseCommand: cat
inputs: {f: {type: File, inputBinding: {position: 1}}}
outputs: []
"""


def test_a_refused_workflow_submit_stores_no_run(open_server: Any) -> None:
    server = open_server()
    server.add_user("eve")
    run = {"workflow": "tool.cwl", "inputs": {"f": {"class": "File", "location": "/etc/shadow"}}}
    with server.api("eve") as c:
        r = c.post(
            "/api/v1/workflows",
            data={"run": json.dumps(run)},
            files=[("file", ("tool.cwl", ECHO_CWL.encode()))],
        )
        assert r.status_code == 422 and "/etc/shadow" in r.json()["error"], r.text
        assert c.get("/api/v1/workflows").json()["runs"] == []
    with server.api() as c:
        assert c.get("/api/v1/workflows").json()["runs"] == []
    left = server.data_dir / "workflows"
    assert not left.exists() or list(left.iterdir()) == []


def test_malformed_json_is_reported_as_such_not_as_a_field(open_server: Any) -> None:
    server = open_server()
    with server.api() as c:
        r = c.post(
            "/api/v1/jobs", content=b'{"command": ["true"],\n "x": }', headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert r.json()["error"] == "body is not valid JSON: Expecting value at line 2 column 7", r.text
        assert r.json().get("field") in (None, "body")
        # a field really named "1" is still named as one
        r = c.post("/api/v1/jobs", json={"command": ["true"], "1": "x"})
        assert r.status_code == 422 and r.json()["field"] == "1" and r.json()["error"].startswith("1: "), r.text
        r = c.post("/api/v1/workflows", data={"run": '{"workflow":\n  tru'}, files=[("file", ("a.cwl", b"x"))])
        assert r.status_code == 422
        assert r.json()["error"].startswith("run is not valid JSON: ") and "line 2 column" in r.json()["error"], r.text
        assert r.json()["field"] == "run"


NUL_STEP = """
cwlVersion: v1.2
class: Workflow
inputs: []
outputs: []
steps:
  "a\\0b":
    run: {class: CommandLineTool, baseCommand: ["true"], inputs: [], outputs: []}
    in: []
    out: []
"""


def test_a_name_with_a_nul_byte_is_refused_for_the_nul_not_its_length(open_server: Any) -> None:
    """A CWL step named with a NUL (its job's name) reached the job checks past the API's."""
    server = open_server()
    with server.api() as c:
        r = c.post(
            "/api/v1/workflows",
            data={"run": json.dumps({"workflow": "wf.cwl"})},
            files=[("file", ("wf.cwl", NUL_STEP.encode()))],
        )
        assert r.status_code == 201, r.text
    run = server.poll(f"/api/v1/workflows/{r.json()['id']}", {"succeeded", "failed"}, 60, every=0.2)
    assert run["state"] == "failed"
    assert "NUL" in run["reason"] and "200 characters" not in run["reason"], run["reason"]
    assert "\0" not in run["reason"]  # the reason is stored: PostgreSQL refuses a NUL in text
