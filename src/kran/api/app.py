"""The FastAPI application: routers, error mapping, body size limit."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from kran import __version__
from kran.api import jobs, system
from kran.errors import Conflict, InvalidInput, KranError, NotFound, QueueFull, Unavailable
from kran.services.runtime import Runtime

STATUS = {InvalidInput: 422, NotFound: 404, Conflict: 409, QueueFull: 429, Unavailable: 503}


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="kran", version=__version__, docs_url="/api/docs", openapi_url="/api/v1/openapi.json")
    app.state.rt = rt
    limit = rt.settings.max_body_mb * 1024 * 1024

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return _error(413, f"request body larger than {rt.settings.max_body_mb} MiB")
        return await call_next(request)

    @app.exception_handler(KranError)
    async def kran_error(_: Request, exc: KranError) -> JSONResponse:
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 500)
        return _error(status, str(exc), getattr(exc, "field", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = first.get("msg", "invalid request")
        return _error(422, f"{loc}: {msg}" if loc else msg, loc or None)

    app.include_router(jobs.router)
    app.include_router(system.router)
    return app
