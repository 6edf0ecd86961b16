"""The OpenAPI document describes every answer, well enough to generate a client from it.

The first test walks the live document: every 2xx of every operation has a schema (a JSON
body a model, a stream its media type). The second generates models from the same document
with datamodel-code-generator (strict types, unknown keys refused) and parses with them the
real answers of the main endpoints, each by the model the document names for it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProc

pytestmark = pytest.mark.docker

ECHO = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: echo
inputs: {{word: {{type: string, inputBinding: {{position: 1}}}}}}
stdout: said.txt
outputs: {{out: {{type: stdout}}}}
"""


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    methods = ("get", "put", "post", "delete", "patch", "head", "options")
    return [(m.upper(), path, op) for path, item in doc["paths"].items() for m, op in item.items() if m in methods]


def _undescribed(doc: dict[str, Any], schema: dict[str, Any], media_type: str) -> str | None:
    """Why `schema` says nothing of a body, or None when it describes one."""
    if media_type != "application/json":
        return None if schema.get("type") == "string" else f"{media_type} body without a string schema"
    ref = schema.get("$ref", "")
    if not ref.startswith("#/components/schemas/"):
        return f"not a model: {schema}"
    model = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return None if model.get("properties") else f"{ref} has no properties"


# answers a standard defines as an empty object (TES 1.1's CancelTaskResponse)
EMPTY_BY_SPEC = {"POST /ga4gh/tes/v1/tasks/{id}:cancel"}


def test_every_2xx_answer_has_a_schema(server: ServerProc) -> None:
    doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    operations = _operations(doc)
    problems = []
    for method, path, op in operations:
        ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        if not ok:
            problems.append(f"{method} {path}: no 2xx answer")
        for code, answer in ok.items():
            content = answer.get("content") or {}
            if not content:
                problems.append(f"{method} {path} {code}: no content")
            for media_type, body in content.items():
                why = _undescribed(doc, body.get("schema") or {}, media_type)
                if why and f"{method} {path}" not in EMPTY_BY_SPEC:
                    problems.append(f"{method} {path} {code}: {why}")
    assert len(operations) >= 60 and problems == []


def _generated_models(doc_url: str, tmp_path: Path) -> ModuleType:
    exe = Path(sys.executable).parent / "datamodel-codegen"
    if not exe.exists() and not shutil.which("datamodel-codegen"):
        pytest.fail("datamodel-code-generator is not installed (pip install -e .[test])")
    doc = tmp_path / "openapi.json"
    doc.write_bytes(httpx.get(doc_url).content)
    out = tmp_path / "kran_models.py"
    # strict: a number where the document says string (or 1 for true) fails; so does a
    # key the document does not declare
    options = ["--extra-fields", "forbid", "--strict-types", "str", "int", "bool", "--use-annotated"]
    r = subprocess.run(
        [str(exe) if exe.exists() else "datamodel-codegen", "--input", str(doc), "--input-file-type", "openapi"]
        + ["--output-model-type", "pydantic_v2.BaseModel", "--output", str(out), "--formatters", "builtin"]
        + ["--disable-timestamp", "--target-python-version", "3.11", *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("kran_models", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kran_models"] = module  # pydantic resolves the models' forward references through it
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["kran_models"]
    return module


class Client:
    """Calls the server and parses each answer by the model the document names for it."""

    def __init__(self, http: httpx.Client, doc: dict[str, Any], models: ModuleType) -> None:
        self.http = http
        self.doc = doc
        self.models = models
        self.parsed: set[str] = set()

    def call(self, method: str, template: str, at: dict[str, Any] | None = None, expect: int = 200, **kw: Any) -> Any:
        """`at` fills the template's path parameters; `kw` goes to httpx; `expect` may be an error."""
        r = self.http.request(method, template.format(**(at or {})), **kw)
        assert r.is_success or r.status_code == expect, f"{method} {template}: {r.status_code} {r.text}"
        answers = self.doc["paths"][template][method.lower()]["responses"]
        answer = answers.get(str(r.status_code)) or answers[f"{r.status_code // 100}XX"]
        ref = answer["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[-1]
        self.parsed.add(name)
        return getattr(self.models, name).model_validate_json(r.content)

    def until(self, template: str, at: dict[str, Any], states: set[str], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = self.call("GET", template, at)
            if got.state in states:
                return got
            assert time.monotonic() < deadline, f"{template} {at}: still {got.state}"
            time.sleep(0.1)


def test_a_generated_client_parses_the_real_answers(make_server: Any, tmp_path: Path, test_image: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "echo.cwl").write_text(ECHO.format(image=test_image))
    server: ServerProc = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
    doc_url = f"{server.url}/api/v1/openapi.json"
    with server.api() as http:
        _parse_the_main_answers(
            Client(http, httpx.get(doc_url).json(), _generated_models(doc_url, tmp_path)), shared, test_image
        )


def _parse_the_main_answers(c: Client, shared: Path, test_image: str) -> None:

    job = {"sh": "echo hi > out.txt", "labels": {"k": "v"}, "env": {"A": "1"}, "timeout": 30}
    submitted = c.call("POST", "/api/v1/jobs", json=job)
    done = c.until("/api/v1/jobs/{job_id}", {"job_id": submitted.id}, {"succeeded"})
    assert done.id == submitted.id and done.attempts[0].usage.wall_seconds is not None
    assert done.request.cpus and done.labels == {"k": "v"} and done.timeout_s == 30
    batch = c.call("POST", "/api/v1/jobs/batch", json={"jobs": [{"command": ["sleep", "30"], "image": test_image}]})
    c.until("/api/v1/jobs/{job_id}", {"job_id": batch.ids[0]}, {"running"})
    assert c.call("POST", "/api/v1/jobs/{job_id}/kill", {"job_id": batch.ids[0]}).id == batch.ids[0]
    listed = c.call("GET", "/api/v1/jobs")
    assert {j.id for j in listed.jobs} == {submitted.id, batch.ids[0]}
    assert "out.txt" in {e.name for e in c.call("GET", "/api/v1/jobs/{job_id}/files", {"job_id": submitted.id}).entries}
    assert c.call("GET", "/api/v1/events", params={"job": submitted.id}).events[-1].to == "succeeded"

    app = c.call("POST", "/api/v1/apps/{name}", {"name": "tool"}, json={"image": test_image, "env": {"B": "2"}})
    assert app.version == 1 and c.call("GET", "/api/v1/apps/{name}", {"name": "tool"}).versions == [1]
    assert [a.name for a in c.call("GET", "/api/v1/apps").apps] == ["tool"]

    schedule = {"name": "nightly", "cron": "0 2 * * *", "job": {"command": ["true"]}}
    assert c.call("POST", "/api/v1/schedules", json=schedule).next_fire_time
    c.call("POST", "/api/v1/schedules/{name}/run-now", {"name": "nightly"})
    assert c.call("GET", "/api/v1/schedules/{name}", {"name": "nightly"}).runs[0].run == "started"
    assert len(c.call("GET", "/api/v1/schedules/{name}/next", {"name": "nightly"}, params={"n": 3}).next) == 3
    assert [s.name for s in c.call("GET", "/api/v1/schedules").schedules] == ["nightly"]

    wf = {"workflow": str(shared / "echo.cwl"), "inputs": {"word": "hello"}, "labels": {"p": "x"}}
    run = c.call("POST", "/api/v1/workflows", json=wf)
    shown = c.until("/api/v1/workflows/{run_id}", {"run_id": run.id}, {"succeeded", "failed"})
    assert shown.state == "succeeded" and shown.steps and shown.steps[0].duration_s is not None
    assert c.call("GET", "/api/v1/workflows/{run_id}/outputs", {"run_id": run.id}).outputs
    assert [r.id for r in c.call("GET", "/api/v1/workflows").runs] == [run.id]

    assert c.call("GET", "/api/v1/whoami").role == "admin"
    status = c.call("GET", "/status")
    assert status.ready and status.capacity.total.cpus == 4
    assert c.call("GET", "/api/v1/usage").rows
    assert c.call("GET", "/api/v1/nodes").nodes
    assert c.call("GET", "/api/v1/admin/users").users
    assert c.call("GET", "/api/v1/admin/keys").keys
    assert c.call("GET", "/api/v1/images/pins").pins == []
    assert c.call("GET", "/ping").ping == "pong"
    missing = c.call("GET", "/api/v1/jobs/{job_id}", {"job_id": 10**9}, expect=404)
    assert missing.error and missing.field is None
    refused = c.call("POST", "/api/v1/jobs", expect=422, json={"command": ["true"], "cpus": True})
    assert refused.field and refused.field.startswith("cpus")  # "cpus.str": the union member is named too
    main = {"JobSubmitted", "Job", "JobList", "App", "Schedule", "WorkflowRunDetail", "ServerStatus", "Identity"}
    assert main | {"UsageReport", "Error"} <= c.parsed
