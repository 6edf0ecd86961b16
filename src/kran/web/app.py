"""The dashboard's application, mounted at /ui by the API's: its own security headers,
sign-in redirects and error pages; every page calls the services the API calls."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kran.api.logstream import Follows
from kran.errors import KranError, http_status
from kran.services.suite import Services
from kran.web.pages import admin, auth, images, jobs, nodes, schedules, submit, usage, workflows
from kran.web.render import page
from kran.web.session import SignInRequired, login_url

# no inline script or style anywhere: scripts and styles come from /ui/static only
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),  # a sign-in link's token never leaves in a Referer
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = "/static/" in scope["path"]  # the path is the whole one, /ui included

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                headers += HEADERS
                headers.append((b"cache-control", b"max-age=3600" if static else b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_web(services: Services, follows: Follows) -> FastAPI:
    web = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    web.state.services = services
    web.state.follows = follows
    web.add_middleware(SecurityHeaders)
    web.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @web.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        if request.headers.get("hx-request") == "true":  # a fragment's refresh: the whole page goes
            return Response(status_code=401, headers={"HX-Redirect": login_url("/ui/jobs")})
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    @web.exception_handler(KranError)
    async def refused(request: Request, exc: KranError) -> Response:
        return page(request, "error.html", None, http_status(exc), message=str(exc))

    @web.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return page(request, "error.html", None, exc.status_code, message=str(exc.detail))

    @web.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return page(request, "error.html", None, 422, message=f"{loc}: {first.get('msg', 'invalid request')}")

    @web.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/ui/jobs", status_code=303)

    for module in (auth, jobs, submit, nodes, images, schedules, workflows, usage, admin):
        web.include_router(module.router)
    return web
