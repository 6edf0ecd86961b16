"""/api/v1/arrays (issue 20.4): submit a job array, list and show arrays with their tasks'
counts per state, kill an array or one task. A task is a job (GET /api/v1/jobs/{id})."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from kran.api.deps import MAX_ID, Auth, Caller, Jobs
from kran.api.responses import Out
from kran.api.schemas import Body, JobSubmit, classified, spec_for
from kran.api.views import iso
from kran.domain.arrays import ArrayRecord
from kran.services.arrays import ArrayService
from kran.services.auth import on_behalf

router = APIRouter(prefix="/api/v1/arrays", tags=["arrays"])
ArrayId = Annotated[int, Path(ge=1, le=MAX_ID, description="an array id")]
Index = Annotated[int, Path(ge=0, le=10**9, description="a task's index")]


async def _arrays(request: Request) -> ArrayService:
    return request.app.state.services.arrays  # type: ignore[no-any-return]


ArraysDep = Annotated[ArrayService, Depends(_arrays)]


class ArraySubmit(Body):
    array: str = Field(max_length=10_000, description="Slurm's --array: 0-9999%50, 0-99:5, 1,5,9")
    job: JobSubmit


class ArrayTask(Out):
    index: int
    job_id: int


class Array(Out):
    id: int
    name: str | None
    owner: str
    indices: str = Field(description="the --array text, as parsed")
    count: int
    throttle: int | None
    state: str = Field(description="active | done")
    kill_requested: bool
    tasks: dict[str, int] = Field(description="tasks made jobs so far, per job state")
    pending: int = Field(description="tasks not yet made jobs (behind the %N cap or the buffer)")
    submitted_at: str | None
    finished_at: str | None
    task_jobs: list[ArrayTask] | None = None


class ArrayList(Out):
    arrays: list[Array]


def array_json(a: ArrayRecord, task_jobs: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": a.id,
        "name": a.name,
        "owner": a.owner,
        "indices": a.indices.text(),
        "count": a.count,
        "throttle": a.indices.throttle,
        "state": a.state,
        "kill_requested": a.kill_requested,
        "tasks": a.tasks,
        "pending": a.pending,
        "submitted_at": iso(a.submitted_at),
        "finished_at": iso(a.finished_at),
    }
    if task_jobs is not None:
        out["task_jobs"] = [{"index": i, "job_id": j} for i, j in task_jobs]
    return out


@router.post(
    "", status_code=201, response_model=Array, summary="Submit a job array (one record; tasks made as they may start)"
)
async def submit_array(body: ArraySubmit, jobs: Jobs, arrays: ArraysDep, who: Caller, auth: Auth) -> dict[str, Any]:
    owner, by = on_behalf(auth, who, body.job.on_behalf_of)
    spec = spec_for(jobs, who, owner, body.job)
    (spec,) = await classified(jobs, [spec], owner)
    a = await run_in_threadpool(arrays.submit, spec, body.array, owner, by, who.is_admin)
    return array_json(a)


@router.get("", response_model=ArrayList, summary="Arrays, newest first")
def list_arrays(
    arrays: ArraysDep,
    who: Caller,
    mine: bool = Query(False, description="only the caller's"),
    limit: int = Query(100, ge=1, le=10_000),
) -> dict[str, Any]:
    return {"arrays": [array_json(a) for a in arrays.list(who, mine, limit)]}


@router.get("/{array_id}", response_model=Array, summary="One array: tasks per state; ?tasks=true lists their jobs")
def show_array(
    array_id: ArrayId,
    arrays: ArraysDep,
    who: Caller,
    tasks: bool = Query(False, description="list (index, job id) of the tasks made so far"),
    limit: int = Query(1000, ge=1, le=100_000),
    after: int | None = Query(None, ge=-1, le=10**9, description="tasks after this index (paging)"),
) -> dict[str, Any]:
    a = arrays.visible(array_id, who)
    return array_json(a, list(arrays.arrays.task_jobs(array_id, limit, after)) if tasks else None)


@router.post(
    "/{array_id}/kill", response_model=Array, summary="Kill an array: no more tasks start, running ones are killed"
)
def kill_array(array_id: ArrayId, arrays: ArraysDep, who: Caller) -> dict[str, Any]:
    return array_json(arrays.kill(array_id, who))


@router.post("/{array_id}/tasks/{index}/kill", response_model=Array, summary="Kill one task of an array")
def kill_task(array_id: ArrayId, index: Index, arrays: ArraysDep, who: Caller) -> dict[str, Any]:
    return array_json(arrays.kill(array_id, who, index))
