"""/api/v1/web/links: a one-time sign-in link to the web dashboard (`kran ui-link`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from kran.api.deps import Caller, key_id_of
from kran.api.responses import Out
from kran.api.schemas import Body

router = APIRouter(prefix="/api/v1/web", tags=["web"])


class LinkAsk(Body):
    user: str | None = Field(None, max_length=100, description="for whom (admins only; default: the caller)")


class Link(Out):
    url: str = Field(description="open it in a browser: it signs in once, within expires_in_s")
    user: str
    expires_in_s: float


@router.post("/links", status_code=201, response_model=Link, summary="A one-time sign-in link to the dashboard")
async def make_link(body: LinkAsk, request: Request, who: Caller) -> dict[str, Any]:
    sessions = request.app.state.services.web_sessions
    token, ttl = await run_in_threadpool(sessions.make_link, who, body.user, key_id_of(request))
    base = str(request.base_url).rstrip("/")
    return {"url": f"{base}/ui/link/{token}", "user": body.user or who.user, "expires_in_s": ttl}
