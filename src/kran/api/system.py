"""/ping, /status and the event stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from kran.api.deps import MAX_ID, Caller, Queries
from kran.api.responses import Event, Out, Resources, stream
from kran.api.views import event_json
from kran.domain.records import EventRecord
from kran.services.live import BACKLOG, LiveFeed

router = APIRouter(tags=["system"])


class Ping(Out):
    ping: str


class Capacity(Out):
    total: Resources
    free: Resources


class ServerStatus(Out):
    version: str
    instance: str
    ready: bool = Field(description="false: the store is unreachable (answered with 503)")
    state: str = Field(description="ok | degraded | not ready")
    degraded: list[str] = Field(description="why it is degraded, e.g. a full data dir")
    store: str
    data_dir: str
    engines: dict[str, str] = Field(description="engine: ok, or why it cannot be used and since when")
    warnings: list[str] = Field(description="what the operator should change, e.g. Docker's live-restore off")
    queued: int
    running: int
    jobs_by_state: dict[str, int]
    capacity: Capacity


class EventList(Out):
    events: list[Event]


@router.get("/ping", response_model=Ping, summary="Liveness")
def ping() -> dict[str, str]:
    return {"ping": "pong"}


@router.get(
    "/status",
    response_model=ServerStatus,  # documents it: FastAPI does not check a JSONResponse (test_openapi.py does)
    responses={503: {"model": ServerStatus, "description": "not ready: the store is unreachable"}},
    summary="Readiness: store and engines, queue, capacity",
)
@router.get("/api/v1/status", include_in_schema=False)
def status(queries: Queries) -> JSONResponse:
    body = queries.server_status()
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/api/v1/events", response_model=EventList, summary="Job state changes after an event id")
def events(
    queries: Queries,
    who: Caller,
    after: int = Query(0, ge=0, le=MAX_ID),
    job: int | None = Query(None, ge=1, le=MAX_ID),
    limit: int = Query(500, ge=1, le=10_000),
) -> dict[str, Any]:
    return {"events": [event_json(e) for e in queries.events_after(who, after, limit, job)]}


@router.get(
    "/api/v1/events/stream",
    response_class=Response,
    responses=stream("text/event-stream", "`job` events, each `data` an Event as JSON; a comment every 15 s idle"),
    summary="Job state changes as Server-Sent Events",
)
async def event_stream(
    request: Request,
    queries: Queries,
    who: Caller,
    after: int | None = Query(None, ge=0, le=MAX_ID),
    job: int | None = Query(None, ge=1, le=MAX_ID),
) -> StreamingResponse:
    """From the server's one reader of the events (services/live.py), after the stored
    events since `after` (each event once, in order)."""
    feed: LiveFeed = request.app.state.services.live
    start = await run_in_threadpool(queries.last_event_id) if after is None else after

    def backlog(last: int) -> list[EventRecord]:
        return queries.events_after(who, last, BACKLOG, job)

    events = feed.follow(who, start, backlog)  # 429 over the caps, before the stream starts

    async def body() -> AsyncIterator[str]:
        async for e in events:
            if isinstance(e, str):  # keep proxies from closing a quiet stream
                yield ": keep-alive\n\n"
            elif e is not None and (job is None or e.job_id == job):
                yield f"id: {e.id}\nevent: job\ndata: {json.dumps(event_json(e))}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")
