"""Workflow runs: the list, and one run (state, inputs, outputs to download, its steps as
a graph whose boxes follow their jobs' states, the steps' jobs). A user sees their own
runs, an admin everyone's; another user's run is not found, like a missing one."""

from __future__ import annotations

import json
from pathlib import Path as FsPath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from kran.api.deps import MAX_ID
from kran.api.filesend import file_response
from kran.api.workflows import run_json, step_json
from kran.domain.workflows import RunState, WorkflowRecord, run_relative, without_run_dir
from kran.errors import InvalidInput
from kran.services.files import tar_dir
from kran.services.suite import Services
from kran.services.workflows import STEP_LABEL, open_output, outputs_dir
from kran.web.dag import CycleError, Layout, layout
from kran.web.render import page
from kran.web.session import Act, Look, services
from kran.web.workflow_graph import StepGraph, StepJob, graph_steps, read_cwl, step_graph

router = APIRouter()
RunId = Annotated[int, Path(ge=1, le=MAX_ID)]
LIST_LIMIT = 200
MAX_INPUTS_SHOWN = 100_000  # characters of the job order on the page
POLL = "every 3s"


def _attachment(name: str) -> str:
    safe = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_") or "download"
    return f'attachment; filename="{safe}"'


@router.get("/workflows")
async def run_table(request: Request, viewer: Look, state: str = Query("", max_length=20)) -> Response:
    try:
        states = [RunState(state)] if state else []
    except ValueError:
        raise InvalidInput(f"state must be among {', '.join(s.value for s in RunState)}", "state") from None
    found = await run_in_threadpool(services(request).workflows.list_runs, viewer.who, states, LIST_LIMIT)
    return page(
        request,
        "workflows.html",
        viewer,
        runs=[run_json(r) for r in found],
        state=state,
        states=[s.value for s in RunState],
        limit=LIST_LIMIT,
    )


def document_graph(suite: Services, run: WorkflowRecord) -> StepGraph:
    """The steps and their edges as the run's document has them (empty when unreadable)."""
    if not run.dir or not run.document:  # not placed yet: nothing of it to read
        return StepGraph()
    read = read_cwl(suite.workflows.roots(FsPath(run.dir)))
    path, _, fragment = run.document.partition("#")
    doc = read(FsPath(path))
    return StepGraph() if doc is None else step_graph(doc, fragment, FsPath(path), read)


def run_graph(suite: Services, run: WorkflowRecord) -> tuple[Layout, str | None]:
    """The run's steps laid out (`run` with its steps), and why the edges are left out when
    they are."""
    graph = document_graph(suite, run)
    jobs = [StepJob(j.spec.labels.get(STEP_LABEL, j.name or ""), j.id, str(j.state)) for j in run.steps]

    def jobs_link(step: str) -> str:
        return "/ui/jobs?" + urlencode({"label": f"kran.workflow={run.id}", "name": f"{run.name}/{step}"[:200]})

    steps = graph_steps(graph, jobs, not run.state.is_final, jobs_link)
    try:
        return layout(steps, graph.edges), None
    except CycleError as e:
        return layout(steps, []), str(e)


def inputs_text(suite: Services, run: WorkflowRecord) -> str | None:
    """The run's job order as indented JSON (paths in the run's dir relative to it)."""
    if not run.job_order or not run.dir:
        return None
    data = read_cwl(suite.workflows.roots(FsPath(run.dir)))(FsPath(run.job_order))
    if data is None:
        return "(not shown: larger than 1 MiB, or not readable here)"
    text = json.dumps(data, indent=2, default=str)[:MAX_INPUTS_SHOWN]
    return without_run_dir(text, run.dir)


def output_files(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The files of a CWL output object, each with its output's name (locations relative:
    names under the outputs dir, as in the archive)."""
    return [{"output": name, **f} for name, value in outputs.items() for f in _files(value)]


def _files(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [f for v in value for f in _files(v)]
    if not isinstance(value, dict):
        return []
    if value.get("class") == "File":
        loc = value.get("location")
        mine = []
        if isinstance(loc, str) and not loc.startswith(("/", "_:")) and ":" not in loc.split("/", 1)[0]:
            mine.append({"path": loc, "size": value.get("size")})
        return mine + _files(value.get("secondaryFiles"))
    if value.get("class") == "Directory":
        return _files(value.get("listing"))
    return _files(list(value.values()))  # a record


def run_view(suite: Services, run: WorkflowRecord) -> dict[str, Any]:
    """Everything a run's page shows (blocking: store, documents)."""
    run = suite.workflows.with_steps(run)
    hostnames = suite.nodes.hostnames()
    drawn, graph_problem = run_graph(suite, run)
    outputs = run_relative(run.outputs, str(outputs_dir(run))) if run.outputs is not None else None
    return {
        "run": run_json(run),
        "steps": [step_json(j, hostnames, run.dir) for j in run.steps],
        "graph": drawn,
        "graph_problem": graph_problem,
        "active": not run.state.is_final,
        "outputs": outputs,
        "outputs_json": json.dumps(outputs, indent=2) if outputs is not None else None,
        "files": output_files(outputs) if outputs is not None else [],
    }


@router.get("/workflows/{run_id}")
async def run_page(request: Request, run_id: RunId, viewer: Look) -> Response:
    suite = services(request)

    def load() -> dict[str, Any]:
        after = suite.queries.last_event_id()  # before the read: the graph's live feed starts here
        run = suite.workflows.visible_run(run_id, viewer.who)
        return {**run_view(suite, run), "inputs": inputs_text(suite, run), "live_after": after}

    return page(request, "workflow.html", viewer, **await run_in_threadpool(load))


@router.get("/workflows/{run_id}/graph")
async def run_graph_fragment(request: Request, run_id: RunId, viewer: Look) -> Response:
    """The graph, the steps and the state again (htmx, every few seconds while it runs);
    once the run has ended the page loads again, with its outputs."""
    suite = services(request)

    def load() -> dict[str, Any]:
        return run_view(suite, suite.workflows.visible_run(run_id, viewer.who))

    view = await run_in_threadpool(load)
    response = page(request, "_workflow_live.html", viewer, **view)
    if not view["active"]:
        response.headers["hx-refresh"] = "true"
    return response


@router.post("/workflows/{run_id}/cancel")
async def cancel(request: Request, run_id: RunId, viewer: Act) -> Response:
    await run_in_threadpool(services(request).workflows.cancel_run, run_id, viewer.who)
    return RedirectResponse(f"/ui/workflows/{run_id}", status_code=303)


@router.get("/workflows/{run_id}/outputs.tar")
async def outputs_archive(request: Request, run_id: RunId, viewer: Look) -> Response:
    suite = services(request)

    def chunks() -> Any:
        run = suite.workflows.visible_run(run_id, viewer.who)
        return tar_dir(outputs_dir(run), f"workflow run {run_id}")

    body = await run_in_threadpool(chunks)
    headers = {"content-disposition": _attachment(f"workflow-{run_id}-outputs.tar")}
    return StreamingResponse(body, media_type="application/x-tar", headers=headers)


@router.get("/workflows/{run_id}/outputs/{path:path}")
async def output_file(request: Request, run_id: RunId, path: str, viewer: Look) -> Response:
    suite = services(request)
    run = await run_in_threadpool(suite.workflows.visible_run, run_id, viewer.who)
    opened = await run_in_threadpool(open_output, run, path)
    response = file_response(opened, request.headers.get("range"))
    # a download, never rendered: a step's HTML must not run as the dashboard's page
    response.headers["content-disposition"] = _attachment(path.rsplit("/", 1)[-1])
    response.headers["content-type"] = "application/octet-stream"
    return response


@router.get("/workflows/{run_id}/log")
async def run_log(request: Request, run_id: RunId, viewer: Look) -> Response:
    """The workflow engine's log of the run, as the API gives it."""
    suite = services(request)

    def read() -> str:
        run = suite.workflows.visible_run(run_id, viewer.who)
        try:
            text = (outputs_dir(run).parent / "run.log").read_text(errors="replace")
        except OSError:
            text = ""
        return without_run_dir(text, run.dir)

    return PlainTextResponse(await run_in_threadpool(read))
