"""Request-scoped helpers shared by the routers (async: no thread hop per request)."""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
from collections.abc import AsyncGenerator, Iterable
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser

from kran.domain.auth import Principal
from kran.errors import InvalidInput, Unauthorized
from kran.services.apps import AppService
from kran.services.auth import Authenticator
from kran.services.files import JobFiles
from kran.services.images import ImageManager
from kran.services.jobs import JobService
from kran.services.logs import JobLogs
from kran.services.nodes import NodeAdmin, NodeDirectory
from kran.services.queries import JobQueries
from kran.services.schedules import ScheduleService
from kran.services.uploads import Uploads
from kran.services.workflows import WorkflowService

MAX_ID = 2**63 - 1  # the store's integers are 64-bit: larger ids are refused, not overflowed
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="a job id")]
# schedule and app names are per owner: a bare name is the caller's own; ?owner= names
# another user's (an admin's, or anyone's shared app)
Owner = Annotated[str | None, Query(max_length=100, description="whose (default: the caller's own)")]

# reachable without credentials: liveness, readiness, metrics, the API description
OPEN_PATHS = frozenset({"/", "/ping", "/status", "/api/v1/status", "/metrics", "/api/v1/openapi.json"})
# the web dashboard: signed in by its own session cookie (kran.web.session), not here
WEB_PREFIX = "/ui"
# multipart uploads: bigger bodies (server.max_upload_mb), streamed to disk
UPLOAD_PATHS = frozenset({"/api/v1/jobs/upload", "/api/v1/workflows", "/ui/submit"})
# POSTs that store new work (refused while the data dir is full: api.app.DiskGate)
STORING_PATHS = re.compile(r"/api/v1/(jobs|jobs/batch|jobs/upload|workflows|schedules/[^/]+/run-now)/?|/ui/submit")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _service(name: str) -> Any:
    """A dependency giving one service of the bundle on `app.state` (async: no thread hop)."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state.services, name)

    get.__name__ = f"{name}_service"
    return Depends(get)


# what a handler uses, named in its signature
Jobs = Annotated[JobService, _service("jobs")]
Queries = Annotated[JobQueries, _service("queries")]
Files = Annotated[JobFiles, _service("files")]
Logs = Annotated[JobLogs, _service("logs")]
UploadsDep = Annotated[Uploads, _service("uploads")]
Apps = Annotated[AppService, _service("apps")]
Schedules = Annotated[ScheduleService, _service("schedules")]
Images = Annotated[ImageManager, _service("images")]
Workflows = Annotated[WorkflowService, _service("workflows")]
Nodes = Annotated[NodeDirectory, _service("nodes")]
NodeAdminDep = Annotated[NodeAdmin, _service("node_admin")]
Auth = Annotated[Authenticator, _service("auth")]


async def authenticate(request: Request) -> None:
    """Every route but the open ones: a signed request, a bearer token or a trusted proxy."""
    if request.url.path in OPEN_PATHS:
        return
    auth: Authenticator = request.app.state.services.auth
    headers = {k.lower(): v for k, v in request.headers.items()}
    digest = EMPTY_SHA256
    if request.url.path in UPLOAD_PATHS and request.method == "POST":
        # spooled to disk while hashed: an upload never sits in memory whole
        spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        request.state.upload = spool
        h = hashlib.sha256()
        async for chunk in request.stream():
            h.update(chunk)
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
        digest = h.hexdigest()
    elif "x-kran-signature" in headers:
        digest = hashlib.sha256(await request.body()).hexdigest()
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    request.state.principal = auth.authenticate(
        headers,
        request.method,
        raw_path.decode("latin-1"),
        request.scope["query_string"].decode("latin-1"),
        digest,
        private_channel(request.scope),
    )


def label_filters(items: Iterable[str]) -> dict[str, str]:
    """`K=V` filters on jobs' labels; InvalidInput names the one that is not."""
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InvalidInput(f"label filter {item!r} must be K=V", "label")
        out[k] = v
    return out


def key_id_of(request: Request) -> str | None:
    """The API key a request was authenticated with (None: a trusted proxy's)."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip().partition(".")[0] or None
    if auth[:6].lower() == "basic ":
        try:
            return base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")[0] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return request.headers.get("x-kran-key") or None


def is_web(path: str) -> bool:
    return path == WEB_PREFIX or path.startswith(WEB_PREFIX + "/")


def private_channel(scope: Any) -> bool:
    """Whether a request came over TLS or from this machine (loopback)."""
    client = scope.get("client") or ("", 0)
    host = str(client[0]).removeprefix("::ffff:")
    return scope.get("scheme") == "https" or host == "::1" or host.startswith("127.")


async def caller(request: Request) -> Principal:
    who: Principal | None = getattr(request.state, "principal", None)
    if who is None:
        raise Unauthorized("authentication required")
    return who


Caller = Annotated[Principal, Depends(caller)]


async def spooled_body(request: Request) -> Any:
    """The upload's body on disk: spooled by `authenticate` while it hashed it, or now."""
    spool = getattr(request.state, "upload", None)
    if spool is None:  # a proxy- or token-authenticated request
        spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        async for chunk in request.stream():
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
    return spool


async def parse_multipart(request: Request, spool: Any, expected: str) -> Any:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput(expected, "content-type")

    async def chunks() -> AsyncGenerator[bytes, None]:
        while chunk := await run_in_threadpool(spool.read, 1 << 20):
            yield chunk

    try:
        return await MultiPartParser(request.headers, chunks(), max_files=10_000, max_part_size=1 << 20).parse()
    except MultiPartException as e:
        raise InvalidInput(f"bad multipart body: {e.message}", "body") from None
