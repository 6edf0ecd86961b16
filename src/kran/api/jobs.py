"""/api/v1/jobs: submit, list, show, kill, logs, files."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from kran.api.deps import (
    Auth,
    Caller,
    Files,
    JobId,
    Jobs,
    Logs,
    Nodes,
    Queries,
    UploadsDep,
    label_filters,
    parse_multipart,
    spooled_body,
)
from kran.api.filesend import file_response
from kran.api.logstream import Follows
from kran.api.responses import FileEntry, Job, Out, stream
from kran.api.schemas import BatchSubmit, JobSubmit, classified, spec_for, validated
from kran.api.views import entry_json, job_json
from kran.domain.states import parse_states
from kran.errors import InvalidInput
from kran.services.auth import on_behalf
from kran.services.files import LIST_MAX

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


class JobList(Out):
    jobs: list[Job]


class JobSubmitted(Out):
    id: int


class JobUploaded(Out):
    id: int
    inputs: list[str] = Field(description="where each input file went in the working dir")


class BatchSubmitted(Out):
    ids: list[int]


class JobKilled(Out):
    id: int
    state: str = Field(description="`killed`, or the active state while the job stops")


class FileList(Out):
    path: str
    entries: list[FileEntry]
    next_cursor: str | None = Field(description="more entries: pass it as `cursor` for the next page")


# Submissions are async: checking is cheap and storing is a group commit awaited without
# holding a worker thread, which keeps latency flat with many concurrent clients.
def idempotency(
    request: Request, body: Any, files: list[tuple[str, int | None]] | None = None
) -> tuple[str | None, str]:
    """The request's Idempotency-Key (checked) and the digest of what it asks for (with an
    upload's files: their destinations and sizes)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None, ""
    if not (1 <= len(key) <= 200 and key.isascii() and key.isprintable()):
        raise InvalidInput("Idempotency-Key is 1-200 printable ASCII characters", "Idempotency-Key")
    text = json.dumps([body.model_dump(mode="json"), files or []], sort_keys=True)
    return key, hashlib.sha256(f"{request.url.path}\0{text}".encode()).hexdigest()


@router.post(
    "", status_code=201, response_model=JobSubmitted, summary="Submit one job (an Idempotency-Key makes a retry safe)"
)
async def submit_job(body: JobSubmit, request: Request, jobs: Jobs, who: Caller, auth: Auth) -> dict[str, Any]:
    owner, by = on_behalf(auth, who, body.on_behalf_of)
    key, digest = idempotency(request, body)
    specs = await classified(jobs, [spec_for(jobs, who, owner, body)], owner)
    (job_id,) = await asyncio.wrap_future(jobs.submit(specs, owner, by, who.is_admin, key, digest))
    return {"id": job_id}


@router.post(
    "/upload",
    status_code=201,
    response_model=JobUploaded,
    summary="Submit one job with input files (multipart: `job` JSON + `input` files named by their DEST)",
)
async def submit_with_inputs(
    request: Request, jobs: Jobs, queries: Queries, uploads: UploadsDep, who: Caller, auth: Auth
) -> dict[str, Any]:
    """Each `input` part's filename is where it goes in the working dir (a relative path).
    The body is spooled to disk while it arrives (server.max_upload_mb caps it)."""
    spool = await spooled_body(request)
    try:
        form = await parse_multipart(request, spool, "send multipart/form-data with a `job` field and `input` files")
        raw = form.get("job")
        if not isinstance(raw, str):
            raise InvalidInput("a multipart field `job` with the job as JSON is required", "job")
        body = validated(JobSubmit, raw, "job.")
        owner, by = on_behalf(auth, who, body.on_behalf_of)
        (spec,) = await classified(jobs, [spec_for(jobs, who, owner, body)], owner)
        inputs = [f for f in form.getlist("input") if not isinstance(f, str)]
        key, digest = idempotency(request, body, [(f.filename or "", f.size) for f in inputs])
        upload_id = await run_in_threadpool(uploads.save_inputs, [(f.filename or "", f.file) for f in inputs])
        try:
            future = jobs.submit([replace(spec, inputs=upload_id)], owner, by, who.is_admin, key, digest)
            (job_id,) = await asyncio.wrap_future(future)
        except BaseException:
            uploads.discard(upload_id)
            raise
        if key is not None:  # a retry gets the job stored the first time, with the files sent then
            stored = await run_in_threadpool(queries.stored, job_id)
            if stored is None or stored.spec.inputs != upload_id:
                uploads.discard(upload_id)
        return {"id": job_id, "inputs": [f.filename for f in inputs]}
    finally:
        spool.close()


@router.post(
    "/batch",
    status_code=201,
    response_model=BatchSubmitted,
    summary="Submit many jobs, all or nothing (Idempotency-Key: as one)",
)
async def submit_batch(body: BatchSubmit, request: Request, jobs: Jobs, who: Caller, auth: Auth) -> dict[str, Any]:
    """Every job of a batch is for the same user: `on_behalf_of` of the batch."""
    owner, by = on_behalf(auth, who, body.on_behalf_of)
    if any(j.on_behalf_of not in (None, body.on_behalf_of) for j in body.jobs):
        raise InvalidInput("on_behalf_of goes on the batch, not on its jobs", "on_behalf_of")
    key, digest = idempotency(request, body)
    specs = await classified(jobs, [spec_for(jobs, who, owner, j, i) for i, j in enumerate(body.jobs)], owner)
    return {"ids": await asyncio.wrap_future(jobs.submit(specs, owner, by, who.is_admin, key, digest))}


@router.get("", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    queries: Queries,
    nodes: Nodes,
    who: Caller,
    state: str | None = Query(None, description="comma-separated states"),
    label: list[str] = Query([], description="K=V; repeat for several"),
    mine: bool = Query(False, description="only the caller's jobs"),
    limit: int = Query(100, ge=1, le=10_000),
    tasks: bool = Query(True, description="include the tasks of job arrays (false: GET /api/v1/arrays has them)"),
) -> dict[str, Any]:
    try:
        states = parse_states(state) if state else []
    except ValueError as e:
        raise InvalidInput(str(e), "state") from None
    found = queries.list_jobs(who, states, label_filters(label), mine, limit, tasks)
    hostnames = nodes.hostnames()
    return {"jobs": [job_json(j, hostnames=hostnames) for j in found]}


@router.get("/{job_id}", response_model=Job, summary="One job: spec, allocation, times, attempts, why it waits")
def show_job(job_id: JobId, queries: Queries, nodes: Nodes, who: Caller) -> dict[str, Any]:
    view = queries.get_job(job_id, who)
    return job_json(view.job, view, nodes.hostnames())


@router.post("/{job_id}/kill", response_model=JobKilled, summary="Kill a job")
def kill_job(job_id: JobId, jobs: Jobs, who: Caller) -> dict[str, Any]:
    state = jobs.kill(job_id, who)
    return {"id": job_id, "state": state.value}


@router.get(
    "/{job_id}/logs",
    response_class=Response,
    responses=stream("application/octet-stream", "the output's bytes"),
    summary="stdout or stderr of the latest attempt",
)
async def job_logs(
    request: Request,
    job_id: JobId,
    queries: Queries,
    logs: Logs,
    who: Caller,
    stream: str = Query("stdout", pattern="^(stdout|stderr)$"),
    follow: bool = False,
    tail: int | None = Query(None, ge=0, le=1_000_000),
) -> Response:
    await run_in_threadpool(queries.visible_job, job_id, who)  # 404 before the stream starts
    skip = 0
    head = b""
    if tail is not None:
        head, skip = await run_in_threadpool(logs.tail_lines, job_id, stream, tail)
        if not follow:
            return Response(head, media_type="application/octet-stream")

    def body() -> Any:
        if head:
            yield head
        yield from logs.log_chunks(job_id, stream, follow, skip)

    if not follow:
        return StreamingResponse(body(), media_type="application/octet-stream")
    follows: Follows = request.app.state.follows  # a thread of its own, not one of the request pool's
    return StreamingResponse(follows.stream(body(), who.user), media_type="application/octet-stream")


@router.get("/{job_id}/files", response_model=FileList, summary="List the job's working dir (or a subdir)")
def list_files(
    job_id: JobId,
    queries: Queries,
    files: Files,
    who: Caller,
    path: str = "",
    limit: int = Query(LIST_MAX, ge=1, le=LIST_MAX, description="entries in one page, by name"),
    cursor: str | None = Query(None, max_length=1024, description="the `next_cursor` of the page before"),
) -> dict[str, Any]:
    queries.visible_job(job_id, who)
    after = None
    if cursor is not None:
        try:
            after = os.fsdecode(base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True))
        except (ValueError, UnicodeError):
            raise InvalidInput("not a cursor this listing gave", "cursor") from None
    listed = files.list_files(job_id, path, after, limit + 1)
    more = len(listed) > limit
    listed = listed[:limit]
    # the next page's cursor names the last entry by its bytes (a name need not be UTF-8)
    nxt = base64.urlsafe_b64encode(os.fsencode(listed[-1].name)).decode() if more else None
    return {"path": path, "entries": [entry_json(e) for e in listed], "next_cursor": nxt}


@router.get(
    "/{job_id}/archive",
    response_class=Response,
    responses=stream("application/x-tar", "an uncompressed tar of the working dir"),
    summary="The whole working dir as a tar stream",
)
def get_archive(job_id: JobId, queries: Queries, files: Files, who: Caller) -> StreamingResponse:
    queries.visible_job(job_id, who)
    chunks = files.tar_chunks(job_id)  # checks before the response starts
    return StreamingResponse(
        chunks,
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}.tar"'},
    )


@router.get(
    "/{job_id}/files/{path:path}",
    response_class=Response,
    responses={
        **stream("application/octet-stream", "the file's bytes"),
        **stream("application/octet-stream", "the bytes of the range asked for", 206),
        416: {"description": "the range is outside the file"},
    },
    summary="Download a file (HTTP range requests supported)",
)
def get_file(job_id: JobId, path: str, request: Request, queries: Queries, files: Files, who: Caller) -> Response:
    queries.visible_job(job_id, who)
    return file_response(files.open_file(job_id, path), request.headers.get("range"))
