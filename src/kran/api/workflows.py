"""/api/v1/workflows: CWL workflow runs, every tool step a kran job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from kran.api.caps import UserCaps
from kran.api.deps import MAX_ID, Caller, Nodes, Workflows, parse_multipart, spooled_body
from kran.api.logstream import Follows
from kran.api.responses import NodeRef, Out, stream
from kran.api.schemas import Body, validated
from kran.api.views import iso
from kran.domain.records import JobRecord
from kran.domain.workflows import RunState, WorkflowRecord, run_relative, without_run_dir
from kran.errors import InvalidInput
from kran.services.files import tar_dir
from kran.services.workflows import STEP_LABEL, RunRequest, WorkflowService, outputs_dir

router = APIRouter(prefix="/api/v1/workflows", tags=["workflows"])
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="a workflow run id")]

KEEPALIVE_S = 15.0  # an event stream with no change sends a comment this often
LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$"


class RunSubmit(Body):
    """A run: the workflow and job order by path (absolute on a shared root, or relative:
    one of the uploaded `file` parts), or the job order inline as `inputs`."""

    model_config = {"extra": "forbid"}
    workflow: str = Field(min_length=1, max_length=4096)
    job_order: str | None = Field(None, max_length=4096)
    inputs: dict[str, Any] | None = None
    name: str | None = Field(None, max_length=200)
    labels: dict[Annotated[str, Field(pattern=LABEL_KEY)], Annotated[str, Field(max_length=500)]] = {}
    notify: str | None = Field(None, max_length=2000, description="a URL told when the run ends (signed POST)")


class WorkflowStep(Out):
    step: str | None = Field(description="the step's name in the workflow")
    job: int = Field(description="its job's id")
    state: str
    node: NodeRef | None
    exit_code: int | None
    reason: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None


class WorkflowRun(Out):
    id: int
    name: str
    owner: str
    state: str
    labels: dict[str, str]
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    exit_code: int | None = Field(description="as kran-cwl-runner exits: 0, 1 or 33")
    reason: str | None
    cancel_requested: bool


class WorkflowRunDetail(WorkflowRun):
    steps: list[WorkflowStep]


class WorkflowRunList(Out):
    runs: list[WorkflowRun]


class SharedRoots(Out):
    roots: list[str]
    max_upload_mb: int = Field(description="the largest upload (a workflow's files together) the server takes")


class WorkflowOutputs(Out):
    state: str
    outputs: dict[str, Any] | None = Field(description="the CWL output object (null until the run succeeded)")
    archive: str = Field(description="where to download the output files")


def step_json(job: JobRecord, hostnames: dict[str, str], run_dir: str) -> dict[str, Any]:
    end = job.finished_at or (time.time() if job.started_at else None)
    return {
        "step": job.spec.labels.get(STEP_LABEL, job.name),
        "job": job.id,
        "state": str(job.state),
        "node": None if job.node is None else {"id": job.node, "hostname": hostnames.get(job.node)},
        "exit_code": job.exit_code,
        "reason": job.reason and without_run_dir(job.reason, run_dir),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "duration_s": None if job.started_at is None or end is None else round(end - job.started_at, 3),
    }


def run_json(run: WorkflowRecord, hostnames: dict[str, str] | None = None, full: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": run.id,
        "name": run.name,
        "owner": run.owner,
        "state": str(run.state),
        "labels": run.labels,
        "submitted_at": iso(run.submitted_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "exit_code": run.exit_code,
        "reason": run.reason and without_run_dir(run.reason, run.dir),
        "cancel_requested": run.cancel_requested,
    }
    if full:
        d["steps"] = [step_json(j, hostnames or {}, run.dir) for j in run.steps]
    return d


@router.post(
    "",
    status_code=201,
    response_model=WorkflowRun,
    summary="Start a workflow run (JSON, or multipart: `run` JSON + `file` parts)",
)
async def submit_run(request: Request, workflows: Workflows, who: Caller) -> dict[str, Any]:
    spool = await spooled_body(request)
    try:
        uploads: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            raw: Any = await run_in_threadpool(spool.read)
        else:
            form = await parse_multipart(
                request, spool, "send JSON, or multipart/form-data with a `run` field and `file` parts"
            )
            raw = form.get("run")
            if not isinstance(raw, str):
                raise InvalidInput("a multipart field `run` with the run as JSON is required", "run")
            for part in form.getlist("file"):
                if isinstance(part, str) or not part.filename:
                    raise InvalidInput("each `file` part needs a filename (its path in the bundle)", "file")
                uploads[part.filename] = part.file
        body = validated(RunSubmit, raw, "run.")
        req = RunRequest(
            name=body.name or body.workflow.rsplit("/", 1)[-1][:200],
            labels=body.labels,
            document=body.workflow,
            job_order=body.job_order,
            job_order_object=body.inputs,
            notify=body.notify,
        )
        run = await run_in_threadpool(workflows.submit_run, who, req, uploads)
        return run_json(run)
    finally:
        spool.close()


@router.get("", response_model=WorkflowRunList, summary="List workflow runs, newest first")
def list_runs(
    workflows: Workflows, who: Caller, state: list[str] = Query([]), limit: int = Query(100, ge=1, le=10_000)
) -> dict[str, Any]:
    try:
        states = [RunState(s) for s in state]
    except ValueError:
        raise InvalidInput(f"state must be among {', '.join(s.value for s in RunState)}", "state") from None
    return {"runs": [run_json(r) for r in workflows.list_runs(who, states, limit)]}


@router.get(
    "/roots",
    response_model=SharedRoots,
    summary="Where the server reads workflows and inputs by path (else: upload them)",
)
def shared_roots(request: Request, workflows: Workflows, who: Caller) -> dict[str, Any]:
    return {"roots": [str(r) for r in workflows.file_roots], "max_upload_mb": request.app.state.max_upload_mb}


@router.get(
    "/{run_id}", response_model=WorkflowRunDetail, summary="One run with its steps (state, job, node, duration)"
)
async def show_run(
    run_id: RunId,
    workflows: Workflows,
    nodes: Nodes,
    who: Caller,
    wait_s: Annotated[
        float,
        Query(ge=0, le=30, description="wait up to this long for the run to end (answered at once when it has)"),
    ] = 0,
) -> dict[str, Any]:
    if wait_s:
        run = await run_in_threadpool(workflows.visible_run, run_id, who)
        if not run.state.is_final:
            await _until_ended(workflows, run_id, wait_s, who.user)

    def detail() -> dict[str, Any]:
        run = workflows.with_steps(workflows.visible_run(run_id, who))
        return run_json(run, nodes.hostnames(), full=True)

    return await run_in_threadpool(detail)


WAITS = UserCaps(per_user=32, in_all=512)  # long-polls held at once; past them answered at once
_WAITING: set[asyncio.Event] = set()  # (on the loop's thread) the long-polls now held: a stop answers them
_STOPPING = asyncio.Event()  # set at a stop: later long-polls are answered at once too


def answer_waits() -> None:
    """The server stops: every long-poll is answered now, with the run as it is."""
    _STOPPING.set()
    for ended in _WAITING:
        ended.set()


async def _until_ended(workflows: WorkflowService, run_id: int, wait_s: float, user: str) -> None:
    """Until the run executing on this server has ended, or `wait_s`; at once when it is
    not executing here (the caller sees its stored state) or the user holds many waits."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def wake() -> None:  # on the run's thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server is stopping
            loop.call_soon_threadsafe(ended.set)

    if _STOPPING.is_set() or WAITS.take(user) is not None:
        return
    try:
        if workflows.on_end(run_id, wake):
            _WAITING.add(ended)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), wait_s)
            finally:
                _WAITING.discard(ended)
                workflows.forget_on_end(run_id, wake)
    finally:
        WAITS.give(user)


@router.post("/{run_id}/cancel", response_model=WorkflowRun, summary="Cancel a run: its running steps are killed")
def cancel_run(run_id: RunId, workflows: Workflows, who: Caller) -> dict[str, Any]:
    return run_json(workflows.cancel_run(run_id, who))


@router.get(
    "/{run_id}/outputs",
    response_model=WorkflowOutputs,
    summary="The run's CWL output object (locations relative: names in the archive)",
)
def run_outputs(run_id: RunId, workflows: Workflows, who: Caller) -> dict[str, Any]:
    run = workflows.visible_run(run_id, who)
    outputs = run_relative(run.outputs, str(outputs_dir(run)))
    return {"state": str(run.state), "outputs": outputs, "archive": f"{router.prefix}/{run_id}/outputs/archive"}


@router.get(
    "/{run_id}/outputs/archive",
    response_class=Response,
    responses=stream("application/x-tar", "an uncompressed tar of the output files"),
    summary="The run's output files as a tar stream",
)
def run_outputs_archive(run_id: RunId, workflows: Workflows, who: Caller) -> StreamingResponse:
    run = workflows.visible_run(run_id, who)
    chunks = tar_dir(outputs_dir(run), f"workflow run {run_id}")
    return StreamingResponse(chunks, media_type="application/x-tar")


@router.get("/{run_id}/log", summary="The workflow engine's log of the run", response_class=PlainTextResponse)
def run_log(run_id: RunId, workflows: Workflows, who: Caller) -> PlainTextResponse:
    run = workflows.visible_run(run_id, who)
    try:
        text = (outputs_dir(run).parent / "run.log").read_text(errors="replace")
    except OSError:
        text = ""
    return PlainTextResponse(without_run_dir(text, run.dir))


@router.get(
    "/{run_id}/events",
    response_class=Response,
    responses=stream("text/event-stream", "`workflow` events, each `data` a WorkflowRunDetail as JSON"),
    summary="The run and its steps as Server-Sent Events, on each change, until it ends",
)
async def run_events(
    request: Request, run_id: RunId, workflows: Workflows, nodes: Nodes, who: Caller
) -> StreamingResponse:
    await run_in_threadpool(workflows.visible_run, run_id, who)

    def body() -> Iterator[bytes]:
        last, quiet = None, 0.0
        while True:
            run = workflows.with_steps(workflows.visible_run(run_id, who))
            doc = json.dumps(run_json(run, nodes.hostnames(), full=True))
            if doc != last:
                last, quiet = doc, 0.0
                yield f"event: workflow\ndata: {doc}\n\n".encode()
            elif quiet >= KEEPALIVE_S:  # a comment: a client that has gone is noticed
                quiet = 0.0
                yield b": keep-alive\n\n"
            if run.state.is_final:
                return
            time.sleep(0.5)
            quiet += 0.5

    # a thread of its own, capped with the followed logs: a sleeping generator in the
    # request pool held one of its threads per open stream (40 streams stopped the API)
    follows: Follows = request.app.state.follows
    return StreamingResponse(follows.stream(body(), who.user), media_type="text/event-stream")
