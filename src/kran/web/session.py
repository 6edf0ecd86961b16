"""Who is looking: the session cookie, sign-in redirects and CSRF checks."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from kran.domain.auth import Principal
from kran.errors import Forbidden
from kran.services.suite import Services
from kran.services.web_sessions import WebSessions

COOKIE = "kran_session"
PRE_COOKIE = "kran_pre"  # the sign-in form's own CSRF token, before there is a session
PATH = "/ui"
MAX_FILES = 100  # input files of one submitted job
MAX_FIELDS = 100
MAX_PART = 1 << 20  # a text field (a command, an environment) of a form


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class Viewer:
    who: Principal
    csrf: str


def services(request: Request) -> Services:
    """The services bundle the pages call (the API's, on the mounted app's state)."""
    found: Services = request.app.state.services
    return found


def sessions(request: Request) -> WebSessions:
    return services(request).web_sessions


async def current(request: Request) -> Viewer:
    """The signed-in viewer; a request without a live session goes to the sign-in page."""
    token = request.cookies.get(COOKIE, "")
    found = await run_in_threadpool(sessions(request).session, token) if token else None
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target if request.method == "GET" else PATH + "/")
    return Viewer(*found)


async def acting(request: Request) -> Viewer:
    """A viewer changing something: the session plus its CSRF token (form field `csrf` or
    header X-CSRF-Token) and, when the browser says where the request came from, this site."""
    viewer = await current(request)
    same_origin(request)
    given = request.headers.get("x-csrf-token")
    if given is None:  # parsed once, with the strictest limits any form of the dashboard allows
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_PART)
        value = form.get("csrf")
        given = value if isinstance(value, str) else ""
    if not hmac.compare_digest(given.encode(), viewer.csrf.encode()):
        raise Forbidden("the form is out of date or came from another site (CSRF check): reload the page")
    return viewer


def same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None or origin == "null" and request.headers.get("sec-fetch-site") == "same-origin":
        return
    parts = urlsplit(origin)
    if parts.netloc != request.headers.get("host", ""):
        raise Forbidden("the request came from another site")


Look = Annotated[Viewer, Depends(current)]
Act = Annotated[Viewer, Depends(acting)]


def set_session(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def pre_token(request: Request) -> str:
    return request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)


def set_pre(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        PRE_COOKIE, token, path=PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the dashboard only (no other site)."""
    if target and target.startswith(PATH + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PATH + "/jobs"


def login_url(next_path: str) -> str:
    return f"{PATH}/login?next={quote(next_path, safe='')}"
