"""Jobs: the table (filters, sort, pages, live states, kill several), one job (spec,
attempts, why it waits, live log, files, usage over time), and the live feed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from kran.api.deps import MAX_ID, JobId, label_filters
from kran.api.filesend import file_response
from kran.api.logstream import Follows
from kran.api.views import entry_json, event_json, job_json
from kran.domain.records import COUNT_CAP, SORTABLE, EventRecord, JobFind
from kran.domain.states import JobState, parse_states
from kran.errors import InvalidInput, KranError
from kran.services.live import BACKLOG
from kran.web.render import page
from kran.web.session import COOKIE, Act, Look, services

router = APIRouter()
PAGE = 50
KEEPALIVE_S = 15.0
MAX_LISTED = 1000  # entries of a dir shown on a job's page (the rest: the archive)
RECHECK_S = 5.0  # how often a live stream checks its session is still good
STOPPED = b"\n(kran: the server is stopping: reload the page to follow the log again)\n"


@router.get("/jobs")
async def job_table(
    request: Request,
    viewer: Look,
    state: str = Query("", max_length=200),
    user: str = Query("", max_length=200),
    label: str = Query("", max_length=500),
    app: str = Query("", max_length=200),
    name: str = Query("", max_length=200),
    sort: str = Query("id", max_length=20),
    dir: str = Query("desc", pattern="^(asc|desc)$"),
    page_no: int = Query(1, alias="page", ge=1, le=COUNT_CAP // PAGE + 1),
    killed: int | None = Query(None, ge=0, le=MAX_ID),
) -> Response:
    try:
        states = tuple(parse_states(state)) if state else ()
    except ValueError as e:
        raise InvalidInput(str(e), "state") from None
    if sort not in SORTABLE:
        raise InvalidInput(f"sort by one of {', '.join(SORTABLE)}", "sort")
    find = JobFind(
        states=states,
        owner=user or None,
        app=app or None,
        name=name or None,
        labels=label_filters(i.strip() for i in label.split(",") if i.strip()),
        sort=sort,
        descending=dir == "desc",
        offset=(page_no - 1) * PAGE,
        limit=PAGE,
    )
    suite = services(request)
    after = await run_in_threadpool(suite.queries.last_event_id)  # before the read: the page's live feed starts here
    found, total = await run_in_threadpool(suite.queries.page, viewer.who, find)
    hostnames = await run_in_threadpool(suite.nodes.hostnames)
    filters = {"state": state, "user": user, "label": label, "app": app, "name": name}
    kept = {k: v for k, v in filters.items() if v}

    def link(**changes: Any) -> str:
        args = {**kept, "sort": sort, "dir": dir, "page": page_no, **changes}
        return "/ui/jobs?" + urlencode({k: v for k, v in args.items() if v not in ("", None)})

    return page(
        request,
        "jobs.html",
        viewer,
        jobs=[job_json(j, hostnames=hostnames) for j in found],
        total=total,
        capped=total > COUNT_CAP,
        page_no=page_no,
        pages=max(1, -(-min(total, COUNT_CAP) // PAGE)),
        filters=filters,
        sort=sort,
        dir=dir,
        link=link,
        states=[s.value for s in JobState if s != JobState.PREEMPTED],
        final=[s.value for s in JobState if s.is_final],
        sortable=list(SORTABLE),
        killed=killed,
        live_after=after,
    )


@router.post("/jobs/kill")
async def kill_several(request: Request, viewer: Act) -> Response:
    form = await request.form()
    ids = [int(v) for v in form.getlist("id") if isinstance(v, str) and v.isdigit() and 0 < int(v) <= MAX_ID]
    suite = services(request)
    done = 0
    for job_id in ids[:1000]:
        try:
            await run_in_threadpool(suite.jobs.kill, job_id, viewer.who)
            done += 1
        except KranError:  # ended meanwhile, or not the viewer's: the others go on
            pass
    back = form.get("back")
    target = back if isinstance(back, str) and back.startswith("/ui/jobs") else "/ui/jobs"
    sep = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{sep}killed={done}", status_code=303)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: JobId, viewer: Look, path: str = Query("", max_length=4096)) -> Response:
    suite = services(request)
    after = await run_in_threadpool(suite.queries.last_event_id)  # before the read (see job_table)
    view = await run_in_threadpool(suite.queries.get_job, job_id, viewer.who)
    hostnames = await run_in_threadpool(suite.nodes.hostnames)
    job = job_json(view.job, view, hostnames)
    entries: list[dict[str, Any]] = []
    files_problem = None
    unlisted = 0
    if view.job.state != JobState.QUEUED or view.job.spec.inputs:
        try:
            listed = await run_in_threadpool(suite.files.list_files, job_id, path, None, MAX_LISTED)
            entries = [entry_json(e) for e in listed]
            if len(listed) == MAX_LISTED:  # (counted as the names stream: none is kept)
                unlisted = max(0, await run_in_threadpool(suite.files.count, job_id, path) - MAX_LISTED)
        except KranError as e:
            files_problem = str(e)
    return page(
        request,
        "job.html",
        viewer,
        job=job,
        active=not view.job.state.is_final,
        entries=entries,
        path=path.strip("/"),
        files_problem=files_problem,
        unlisted=unlisted,
        series=await run_in_threadpool(suite.sampler.points, job_id, view.job.attempts) if view.job.attempts else [],
        live_after=after,
    )


@router.post("/jobs/{job_id}/kill")
async def kill_one(request: Request, job_id: JobId, viewer: Act) -> Response:
    await run_in_threadpool(services(request).jobs.kill, job_id, viewer.who)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}/log")
async def job_log(
    request: Request,
    job_id: JobId,
    viewer: Look,
    stream: str = Query("stdout", pattern="^(stdout|stderr)$"),
    follow: bool = False,
) -> Response:
    suite = services(request)
    await run_in_threadpool(suite.queries.visible_job, job_id, viewer.who)  # 404 before the stream
    chunks = suite.logs.log_chunks(job_id, stream, follow)
    if not follow:
        return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")
    # a thread of its own (it held one of the request threads), capped with the API's
    # follows, and ended by a stop, with a line that says so (it held the stop)
    follows: Follows = request.app.state.follows
    return StreamingResponse(follows.stream(chunks, viewer.who.user, STOPPED), media_type="text/plain; charset=utf-8")


@router.get("/jobs/{job_id}/files/{path:path}")
async def job_file(request: Request, job_id: JobId, path: str, viewer: Look) -> Response:
    suite = services(request)
    await run_in_threadpool(suite.queries.visible_job, job_id, viewer.who)
    opened = await run_in_threadpool(suite.files.open_file, job_id, path)
    response = file_response(opened, request.headers.get("range"))
    name = path.rsplit("/", 1)[-1].encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    # a download, never rendered: a job's HTML must not run as the dashboard's page
    response.headers["content-disposition"] = f'attachment; filename="{name}"'
    response.headers["content-type"] = "application/octet-stream"
    return response


@router.get("/jobs/{job_id}/archive")
async def job_archive(request: Request, job_id: JobId, viewer: Look) -> Response:
    """The whole working dir as a tar (as `kran get ID --all`)."""
    suite = services(request)
    await run_in_threadpool(suite.queries.visible_job, job_id, viewer.who)
    chunks = await run_in_threadpool(suite.files.tar_chunks, job_id)
    return StreamingResponse(
        chunks,
        media_type="application/x-tar",
        headers={"content-disposition": f'attachment; filename="job-{job_id}.tar"'},
    )


@router.get("/events")
async def live_events(
    request: Request,
    viewer: Look,
    job: int | None = Query(None, ge=1, le=MAX_ID),
    after: int | None = Query(None, ge=0, le=MAX_ID),
) -> Response:
    """Job state changes the viewer may see, as Server-Sent Events, from the one feed: those
    stored after `after` (the last event id when the page was read, so a change between the
    page and the stream is not missed) or after the browser's Last-Event-ID when it
    reconnects, then live. The session is checked again every few seconds: signing out, a
    disabled user or a revoked key ends the stream too."""
    suite = services(request)
    token = request.cookies.get(COOKIE, "")
    resumed = request.headers.get("last-event-id", "")
    if resumed.isascii() and resumed.isdigit() and len(resumed) <= 19 and int(resumed) <= MAX_ID:  # else ignored
        after = max(after or 0, int(resumed))

    def backlog(last: int) -> list[EventRecord]:
        return suite.queries.events_after(viewer.who, last, BACKLOG, job)

    # refused (429) over the cap
    stream = suite.live.follow(viewer.who, after, backlog if after is not None else None, keepalive_s=RECHECK_S)

    async def body() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        checked = quiet = time.monotonic()
        async for event in stream:
            now = time.monotonic()
            if now - checked >= RECHECK_S:
                checked = now
                if await run_in_threadpool(suite.web_sessions.session, token) is None:
                    yield "event: signed-out\ndata: {}\n\n"
                    return
            if event is None:
                yield "event: reload\ndata: {}\n\n"
            elif isinstance(event, str):
                if now - quiet >= KEEPALIVE_S:
                    quiet = now
                    yield ": keep-alive\n\n"
            elif job is None or event.job_id == job:
                quiet = now
                yield f"id: {event.id}\nevent: job\ndata: {json.dumps(event_json(event))}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})
