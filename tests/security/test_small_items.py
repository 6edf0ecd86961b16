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
