"""Small items of issue 18.8: what a refused request leaves behind, and what its error
says."""

from __future__ import annotations

import json
from typing import Any

import pytest

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


WRITES = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sh, -c, "mkdir -p d; echo hi > d/x; echo out > o.txt"]
inputs: []
outputs:
  o: {{type: File, outputBinding: {{glob: o.txt}}}}
  d: {{type: Directory, outputBinding: {{glob: d}}}}
"""


@pytest.mark.docker
def test_a_run_shows_no_server_paths(open_server: Any, test_image: str) -> None:
    """outputs_dir and every output's location and path named the server's data dir."""
    server = open_server(KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
    server.add_user("eve")
    ids = []
    with server.api("eve") as c:
        for doc in (WRITES.format(image=test_image), "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: 3\n"):
            r = c.post(
                "/api/v1/workflows",
                data={"run": json.dumps({"workflow": "wf.cwl"})},
                files=[("file", ("wf.cwl", doc.encode()))],
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    ok = server.poll(f"/api/v1/workflows/{ids[0]}", {"succeeded", "failed"}, 90, every=0.2)
    bad = server.poll(f"/api/v1/workflows/{ids[1]}", {"succeeded", "failed"}, 90, every=0.2)
    assert ok["state"] == "succeeded" and bad["state"] == "failed", (ok, bad)
    with server.api("eve") as c:
        shown = {
            "list": c.get("/api/v1/workflows").text,
            "ok": c.get(f"/api/v1/workflows/{ids[0]}").text,
            "bad": c.get(f"/api/v1/workflows/{ids[1]}").text,
            "outputs": c.get(f"/api/v1/workflows/{ids[0]}/outputs").text,
            "log": c.get(f"/api/v1/workflows/{ids[1]}/log").text,
        }
    for what, text in shown.items():
        assert str(server.data_dir) not in text, (what, text)
    outputs = json.loads(shown["outputs"])["outputs"]
    assert outputs["o"]["location"] == "o.txt" and outputs["o"]["path"] == "o.txt", outputs
    assert outputs["d"]["listing"][0]["location"] == "d/x", outputs
    assert "wf.cwl" in json.loads(shown["bad"])["reason"]
