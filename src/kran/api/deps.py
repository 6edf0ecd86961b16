"""Request-scoped helpers shared by the routers (async: no thread hop per request)."""

from __future__ import annotations

import re

from fastapi import Request

from kran.errors import InvalidInput
from kran.services.runtime import Runtime

_USER = re.compile(r"[A-Za-z0-9_.@\-]{1,100}")


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt


async def caller(request: Request) -> str:
    """Who is asking. Until authentication exists, the client names itself (X-Kran-User)."""
    name = request.headers.get("x-kran-user", "anonymous")
    if not _USER.fullmatch(name):
        raise InvalidInput("X-Kran-User must be 1-100 of A-Z a-z 0-9 _ . @ -", "X-Kran-User")
    return name
