"""/ga4gh/tes/v1: the GA4GH Task Execution Service 1.1 (issue 21), over kran's jobs.

The same authentication as the rest of the API (a bearer token, a signed request, HTTP
basic with a key id and secret over TLS or loopback) and the same isolation: another
user's task is "not found". A bad task is a 400 naming the field; nothing is stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kran import __version__
from kran.api.deps import Caller
from kran.api.filesend import file_response
from kran.api.schemas import StorableText
from kran.api.views import iso, shown_name
from kran.domain import tes
from kran.errors import InvalidInput
from kran.services.tes import TesService, task_from_document

PREFIX = "/ga4gh/tes/v1"
router = APIRouter(prefix=PREFIX, tags=["TES"])
TaskId = Annotated[str, Path(max_length=40, description="a task id")]
View = Literal["MINIMAL", "BASIC", "FULL"]
State = tes.TesState
FileType = Literal["FILE", "DIRECTORY"]


async def _service(request: Request) -> TesService:
    svc: TesService = request.app.state.services.tes
    return svc


Tes = Annotated[TesService, Depends(_service)]


class TesIn(StorableText):
    """TES documents as clients send them: fields the server sets (id, state, logs,
    creation_time) and unknown ones are ignored; text must be storable."""

    model_config = ConfigDict(extra="ignore")


class TesInput(TesIn):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str = Field(max_length=4096)
    type: FileType = "FILE"
    content: str | None = None
    streamable: bool | None = None


class TesOutput(TesIn):
    name: str | None = None
    description: str | None = None
    url: str = Field(max_length=4096)
    path: str = Field(max_length=4096)
    path_prefix: str | None = None
    type: FileType = "FILE"


class TesExecutor(TesIn):
    image: str = Field(min_length=1, max_length=1000)
    command: list[str] = Field(min_length=1)
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class TesResources(TesIn):
    cpu_cores: int | None = Field(None, ge=1, le=100_000)
    preemptible: bool | None = None
    ram_gb: float | None = Field(None, gt=0)
    disk_gb: float | None = Field(None, ge=0)
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = False


class TesTask(TesIn):
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    inputs: list[TesInput] | None = None
    outputs: list[TesOutput] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor]
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None


# ---- responses (fields left out where they have no value)


class TesOut(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecutorLog(TesOut):
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int


class OutputFileLog(TesOut):
    url: str
    path: str
    size_bytes: str


class TaskLog(TesOut):
    logs: list[ExecutorLog]
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    outputs: list[OutputFileLog]
    system_logs: list[str] | None = None


class InputOut(TesOut):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: FileType = "FILE"
    content: str | None = None
    streamable: bool | None = None


class TaskOut(TesOut):
    id: str
    state: State
    name: str | None = None
    description: str | None = None
    inputs: list[InputOut] | None = None
    outputs: list[TesOutput] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor] | None = None
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
    logs: list[TaskLog] | None = None
    creation_time: str | None = None


class ListTasksResponse(TesOut):
    tasks: list[TaskOut]
    next_page_token: str | None = None


class CreateTaskResponse(TesOut):
    id: str


class CancelTaskResponse(TesOut):
    pass


class ServiceType(TesOut):
    group: str
    artifact: str
    version: str


class Organization(TesOut):
    name: str
    url: str


class ServiceInfo(TesOut):
    id: str
    name: str
    type: ServiceType
    description: str | None = None
    organization: Organization
    version: str
    storage: list[str] | None = None
    tesResources_backend_parameters: list[str] | None = None


# ---- routes


@router.get("/service-info", response_model=ServiceInfo, response_model_exclude_none=True)
async def service_info() -> dict[str, Any]:
    return {
        "id": "org.kran.tes",
        "name": "kran",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": "kran runs each task as one job per executor (docs/tes.md)",
        "organization": {"name": "kran", "url": "urn:kran"},
        "version": __version__,
        "storage": ["file://", "http://", "https://"],
        "tesResources_backend_parameters": list(tes.BACKEND_PARAMETERS),
    }


@router.post("/tasks", response_model=CreateTaskResponse)
async def create_task(who: Caller, svc: Tes, body: TesTask) -> dict[str, str]:
    document = body.model_dump(exclude_none=True)
    task = task_from_document(document)
    try:
        task_id = await run_in_threadpool(svc.create, who, task, document)
    except tes.TaskError as e:
        raise InvalidInput(e.reason, e.field) from None
    return {"id": task_id}


@router.get("/tasks", response_model=ListTasksResponse, response_model_exclude_none=True)
async def list_tasks(
    request: Request,
    who: Caller,
    svc: Tes,
    name_prefix: str | None = Query(None, max_length=200),
    state: State | None = None,
    tag_key: list[str] = Query([]),
    tag_value: list[str] = Query([]),
    page_size: int = Query(256, ge=1, le=2047),
    page_token: str | None = Query(None, max_length=40),
    view: View = "MINIMAL",
) -> dict[str, Any]:
    if len(tag_value) > len(tag_key):
        raise InvalidInput("more tag_value than tag_key parameters", "tag_value")
    tags = {k: (tag_value[i] if i < len(tag_value) else "") for i, k in enumerate(tag_key)}

    def page() -> dict[str, Any]:
        recs, token = svc.find(who, name_prefix, state, tags, page_size, page_token, documents=view != "MINIMAL")
        return {"tasks": [task_json(svc, r, view, _base(request)) for r in recs], "next_page_token": token}

    return await run_in_threadpool(page)


@router.get("/tasks/{id}", response_model=TaskOut, response_model_exclude_none=True)
async def get_task(request: Request, who: Caller, svc: Tes, id: TaskId, view: View = "MINIMAL") -> dict[str, Any]:
    return await run_in_threadpool(lambda: task_json(svc, svc.get(who, id), view, _base(request)))


@router.post("/tasks/{id}:cancel", response_model=CancelTaskResponse)
async def cancel_task(who: Caller, svc: Tes, id: TaskId) -> dict[str, Any]:
    await run_in_threadpool(svc.cancel, who, id)
    return {}


@router.get("/tasks/{id}/outputs/{path:path}", include_in_schema=False)
async def output(request: Request, who: Caller, svc: Tes, id: TaskId, path: str) -> Response:
    """A task's output that kran keeps (each listed in the task's logs with this URL)."""
    f = await run_in_threadpool(svc.output_file, who, id, path)
    return file_response(f, request.headers.get("range"))


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _escaped(out: dict[str, Any]) -> dict[str, Any]:
    """An output stored before names that are not UTF-8 were left out: shown escaped
    (`\\xff`), not a 500 for its owner and every admin listing."""
    return {k: shown_name(v) if isinstance(v, str) else v for k, v in out.items()}


def task_json(svc: TesService, rec: tes.TaskRecord, view: str, base: str) -> dict[str, Any]:
    """The task in a view: MINIMAL id and state; BASIC all but the executors' stdout and
    stderr, inline inputs' content and system_logs; FULL everything. The outputs kran
    keeps are at URLs of this server (`base`, as the client reached it)."""
    views = svc.job_views(rec)
    state = tes.task_state(rec.phase, [v for v, _ in views], rec.cancel_requested)
    if view == "MINIMAL":
        return {"id": rec.task_id, "state": state}
    full = view == "FULL"
    doc = dict(rec.document)
    if not full and doc.get("inputs"):
        doc["inputs"] = [{k: v for k, v in i.items() if k != "content"} for i in doc["inputs"]]
    executor_logs = []
    system_logs = list(rec.system_logs)
    for n, (v, job) in enumerate(views):
        if job is None:
            continue
        for a in job.attempt_list:
            if a.state.is_final and a.reason and a.number < job.attempts:
                system_logs.append(f"executor {n}: attempt {a.number} {a.state}: {a.reason}")
        if v.started_at is None:
            continue
        entry: dict[str, Any] = {
            "start_time": iso(v.started_at),
            "end_time": iso(v.finished_at) if v.state.is_final else None,
            "exit_code": v.exit_code if v.exit_code is not None else -1,
        }
        if full:
            entry["stdout"] = svc.tail(job.id, "stdout")
            entry["stderr"] = svc.tail(job.id, "stderr")
        executor_logs.append(entry)
        if v.state.is_final and v.state.value != "succeeded" and v.exit_code is None and v.reason:
            system_logs.append(f"executor {n}: {v.state}: {v.reason}")
    started = [v.started_at for v, _ in views if v.started_at is not None]
    log: dict[str, Any] = {
        "logs": executor_logs,
        "metadata": {"kran_jobs": ",".join(str(j) for j in rec.jobs)} if rec.jobs else None,
        "start_time": iso(min(started)) if started else None,
        "end_time": iso(rec.ended_at),
        "outputs": [_escaped({**o, "url": base + o["url"]} if o["url"].startswith(PREFIX) else o) for o in rec.outputs],
    }
    if full:
        log["system_logs"] = system_logs
    return {**doc, "id": rec.task_id, "state": state, "logs": [log], "creation_time": iso(rec.created_at)}
