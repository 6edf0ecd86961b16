"""The FastAPI application: routers, error mapping, body size limit."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kran import __version__
from kran.adapters.metrics import PrometheusMetrics
from kran.api import (
    accounts,
    admin,
    apps,
    arrays,
    images,
    jobs,
    nodes,
    notify,
    schedules,
    system,
    tes,
    usage,
    web_links,
    workflows,
)
from kran.api.deps import OPEN_PATHS, STORING_PATHS, UPLOAD_PATHS, WEB_PREFIX, authenticate, is_web, private_channel
from kran.api.logstream import Follows
from kran.api.responses import ERRORS
from kran.errors import KranError, Unauthorized, http_status
from kran.services.auth import Authenticator
from kran.services.disk import DiskWatch
from kran.services.suite import Services

log = logging.getLogger("kran")


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": _printable(message)}
    if field:
        body["field"] = _printable(field)
    return JSONResponse(body, status_code=status)


def _json_problem(error: dict[str, Any], doc: Any) -> str:
    """What json.loads said, with the line and column of its offset in the body."""
    msg = str(error.get("ctx", {}).get("error", "JSON decode error"))
    pos = error.get("loc", ("body", None))[-1]
    if not isinstance(pos, int) or not isinstance(doc, str | bytes):
        return msg
    text = doc if isinstance(doc, str) else doc.decode("utf-8", "replace")
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)  # rfind is -1 on the first line: column pos + 1
    return f"{msg} at line {line} column {column}"


def _printable(text: str) -> str:
    """An error may quote the input: a lone surrogate in it is shown escaped, not a 500."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


WEB_FORM_MB = 1  # a dashboard form (every one but the submit form's files)


def body_limit_mb(path: str, content_type: bytes, limit_mb: int, upload_limit_mb: int) -> int:
    """The largest body a request may send: uploads (multipart) to their paths, the
    dashboard's other forms 1 MiB, the rest the API's limit."""
    multipart = content_type.startswith(b"multipart/form-data")
    if path in UPLOAD_PATHS and (multipart or not is_web(path)):
        return upload_limit_mb
    return WEB_FORM_MB if is_web(path) else limit_mb


class BodyLimit:
    """413 for bodies over the limit: by Content-Length up front, and while reading a
    chunked body. Plain ASGI (BaseHTTPMiddleware costs a task per request)."""

    def __init__(self, app: ASGIApp, limit_mb: int, upload_limit_mb: int) -> None:
        self.app = app
        self.limit_mb = limit_mb
        self.upload_limit_mb = upload_limit_mb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        limit_mb = body_limit_mb(scope["path"], headers.get(b"content-type", b""), self.limit_mb, self.upload_limit_mb)
        limit = limit_mb * 1024 * 1024
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _error(413, f"request body larger than {limit_mb} MiB")(scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # rendered by the HTTPException handler below
                raise StarletteHTTPException(413, f"request body larger than {limit_mb} MiB")
            return message

        await self.app(scope, limited, send)


class AuthFirst:
    """Credentials are checked before the body is read or parsed: an unauthenticated
    upload is not spooled, malformed JSON without credentials is a 401, not a 422. (The
    signature, which covers the body, is checked once it is read: deps.authenticate.)"""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not is_web(scope["path"]):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                self.auth.precheck(headers, private_channel(scope))
            except Unauthorized as e:
                return await _error(401, str(e))(scope, receive, send)
        await self.app(scope, receive, send)


class DiskGate:
    """507 for new work while the data dir is full, before its body is read: a job, a
    batch, an upload, a workflow, a schedule's run-now (reads, kills and deletes go on)."""

    def __init__(self, app: ASGIApp, disk: DiskWatch) -> None:
        self.app = app
        self.disk = disk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and STORING_PATHS.fullmatch(scope["path"]):
            full = self.disk.full()
            if full:
                return await _error(507, f"{full}: nothing was stored; try again once space is freed")(
                    scope, receive, send
                )
        await self.app(scope, receive, send)


class RequestMetrics:
    """API latency by route template, method and status (bounded labels: no ids)."""

    def __init__(self, app: ASGIApp, metrics: PrometheusMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = scope.get("route")
                self.metrics.request(
                    getattr(route, "path", "unmatched"), scope["method"], status, time.perf_counter() - started
                )
            await send(message)

        await self.app(scope, receive, send_status)


def end_streams(app: FastAPI) -> None:
    """The server stops: its event streams and followed logs end now, its long-polls are
    answered (on the loop's thread)."""
    app.state.services.live.close()
    app.state.follows.close()
    workflows.answer_waits()


def create_app(
    services: Services, metrics: PrometheusMetrics | None = None, max_body_mb: int = 64, max_upload_mb: int = 1024
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # once the server (and its logging) is up: unfinished workflow runs go on
        resumed = services.workflows.resume_all()
        if resumed:
            log.info("resumed %d workflow runs", resumed)
        yield

    app = FastAPI(
        title="kran",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
        dependencies=[Depends(authenticate)],
        responses=ERRORS,  # in place of FastAPI's own 422 body, which kran never sends
    )
    app.state.services = services
    app.state.follows = Follows()  # followed logs: the API's and the dashboard's, capped together
    app.state.max_upload_mb = max_upload_mb  # told to clients before they upload (workflows/roots)
    app.add_middleware(BodyLimit, limit_mb=max_body_mb, upload_limit_mb=max_upload_mb)
    app.add_middleware(DiskGate, disk=services.disk)
    app.add_middleware(AuthFirst, auth=services.auth)
    if metrics is not None:
        app.add_middleware(RequestMetrics, metrics=metrics)

        @app.get("/metrics", include_in_schema=False)
        def prometheus_metrics() -> Response:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(KranError)
    async def kran_error(request: Request, exc: KranError) -> JSONResponse:
        return _error(_tes_status(request, http_status(exc)), str(exc), getattr(exc, "field", None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        status = _tes_status(request, 422)
        if first.get("type") == "json_invalid":  # its loc is the offset, not a field named "28"
            return _error(status, f"body is not valid JSON: {_json_problem(first, exc.body)}", "body")
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = first.get("msg", "invalid request")
        return _error(status, f"{loc}: {msg}" if loc else msg, loc or None)

    app.include_router(jobs.router)
    app.include_router(schedules.router)
    app.include_router(apps.router)
    app.include_router(nodes.router)
    app.include_router(images.router)
    app.include_router(usage.router)
    app.include_router(admin.router)
    app.include_router(arrays.router)
    app.include_router(notify.router)
    app.include_router(accounts.router)
    app.include_router(system.router)
    app.include_router(workflows.router)
    app.include_router(tes.router)
    app.include_router(web_links.router)
    from kran.web.app import create_web  # the dashboard: its own sign-in (a session cookie)

    app.mount(WEB_PREFIX, create_web(services, app.state.follows))

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse(WEB_PREFIX + "/", status_code=303)

    return app


def _tes_status(request: Request, status: int) -> int:
    """TES answers a bad request with 400 (kran's own API with 422)."""
    return 400 if status == 422 and request.url.path.startswith(tes.PREFIX + "/") else status
