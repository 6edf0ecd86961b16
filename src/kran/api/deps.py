"""Request-scoped helpers shared by the routers (async: no thread hop per request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request

from kran.domain.auth import Principal
from kran.errors import Unauthorized
from kran.services.auth import Authenticator
from kran.services.runtime import Runtime

MAX_ID = 2**63 - 1  # the store's integers are 64-bit: larger ids are refused, not overflowed
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="a job id")]

# reachable without credentials: liveness, readiness, metrics, the API description
OPEN_PATHS = frozenset({"/ping", "/status", "/api/v1/status", "/metrics", "/api/v1/openapi.json"})


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt


async def authenticate(request: Request) -> None:
    """Every route but the open ones: a signed request, a bearer token or a trusted proxy."""
    if request.url.path in OPEN_PATHS:
        return
    auth: Authenticator = request.app.state.auth
    headers = {k.lower(): v for k, v in request.headers.items()}
    body = await request.body() if "x-kran-signature" in headers else b""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    request.state.principal = auth.authenticate(
        headers, request.method, raw_path.decode("latin-1"), request.scope["query_string"].decode("latin-1"), body
    )


async def caller(request: Request) -> Principal:
    who: Principal | None = getattr(request.state, "principal", None)
    if who is None:
        raise Unauthorized("authentication required")
    return who


async def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth
