"""Workflow runs of different users share one server process (and cwltool's caches in it):
what one run loads must not change what another run sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc

pytestmark = pytest.mark.docker

ONTOLOGY = "<http://example.org/A> <http://www.w3.org/2000/01/rdf-schema#subClassOf> <http://example.org/B> .\n"


def _tool(image: str, schemas: list[str] | None) -> str:
    doc: dict[str, Any] = {
        "cwlVersion": "v1.2",
        "class": "CommandLineTool",
        "$namespaces": {"ex": "http://example.org/"},
        "requirements": [{"class": "DockerRequirement", "dockerPull": image}],
        "baseCommand": ["true"],
        "inputs": {"f": {"type": "File", "format": "ex:B"}},
        "outputs": {},
    }
    if schemas:
        doc["$schemas"] = schemas
    return json.dumps(doc)


def _state(server: ServerProc, user: str, document: Path, inputs: dict[str, Any]) -> str:
    with server.api(user) as c:
        r = c.post("/api/v1/workflows", json={"workflow": str(document), "inputs": inputs})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
    with server.api(user) as c:
        run = c.get(f"/api/v1/workflows/{run_id}", params={"wait_s": 30}, timeout=60).json()
    assert run["state"] in ("succeeded", "failed"), run
    return str(run["state"])


def test_an_ontology_one_run_loads_is_not_another_runs(make_server: Any, tmp_path: Path, test_image: str) -> None:
    """cwltool parses a document's `$schemas` into its schema's RDF graph, which it keeps
    for the process: alice's ontology (A is a B) made bob's later run accept an A where
    his tool asks for a B (found by review, when the parsed schema began to be kept)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("x\n")
    (shared / "onto.ttl").write_text(ONTOLOGY)
    (shared / "with.cwl").write_text(_tool(test_image, ["onto.ttl"]))
    (shared / "without.cwl").write_text(_tool(test_image, None))
    server = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
    server.add_user("alice")
    server.add_user("bob")
    inputs = {"f": {"class": "File", "location": (shared / "in.txt").as_uri(), "format": "http://example.org/A"}}
    assert _state(server, "bob", shared / "without.cwl", inputs) == "failed"  # an A is not a B to him
    assert _state(server, "alice", shared / "with.cwl", inputs) == "succeeded"  # her ontology says it is
    assert _state(server, "alice", shared / "with.cwl", inputs) == "succeeded"  # every time she loads it
    assert _state(server, "bob", shared / "without.cwl", inputs) == "failed"  # still not to him
