"""/ping, /status and the event stream."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, StreamingResponse

from kran.api.deps import MAX_ID, caller, runtime
from kran.api.views import event_json
from kran.domain.auth import Principal
from kran.services import queries
from kran.services.runtime import Runtime

router = APIRouter(tags=["system"])
Rt = Annotated[Runtime, Depends(runtime)]
Caller = Annotated[Principal, Depends(caller)]


@router.get("/ping", summary="Liveness")
def ping() -> dict[str, str]:
    return {"ping": "pong"}


@router.get("/status", summary="Readiness: store and engines, queue, capacity")
@router.get("/api/v1/status", include_in_schema=False)
def status(rt: Rt) -> JSONResponse:
    body = queries.server_status(rt)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/api/v1/events", summary="Job state changes after an event id")
def events(
    rt: Rt,
    who: Caller,
    after: int = Query(0, ge=0, le=MAX_ID),
    job: int | None = Query(None, ge=1, le=MAX_ID),
    limit: int = Query(500, ge=1, le=10_000),
) -> dict[str, Any]:
    return {"events": [event_json(e) for e in rt.store.events_after(after, limit, job, who)]}


@router.get("/api/v1/events/stream", summary="Job state changes as Server-Sent Events")
def event_stream(
    rt: Rt,
    who: Caller,
    after: int | None = Query(None, ge=0, le=MAX_ID),
    job: int | None = Query(None, ge=1, le=MAX_ID),
) -> StreamingResponse:
    start = rt.store.last_event_id() if after is None else after

    def body() -> Any:
        last = start
        idle = 0.0
        while True:
            batch = rt.store.events_after(last, 500, job, who)
            for e in batch:
                last = e.id
                yield f"id: {e.id}\nevent: job\ndata: {json.dumps(event_json(e))}\n\n"
            if not batch:
                time.sleep(0.2)
                idle += 0.2
                if idle >= 15:  # keep proxies from closing a quiet stream
                    idle = 0.0
                    yield ": keep-alive\n\n"
            else:
                idle = 0.0

    return StreamingResponse(body(), media_type="text/event-stream")
