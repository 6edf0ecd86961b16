"""Sign in (a key id and secret, or a one-time link) and sign out."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kran.errors import Unauthorized
from kran.web.render import page
from kran.web.session import (
    Act,
    clear_session,
    pre_token,
    safe_next,
    same_origin,
    sessions,
    set_pre,
    set_session,
)

router = APIRouter()
LINK_GONE = "this sign-in link is unknown, used or expired: ask for a new one (kran ui-link)"


def _form(request: Request, name: str, status: int = 200, **ctx: object) -> Response:
    token = pre_token(request)
    response = page(request, name, None, status, pre=token, **ctx)
    set_pre(response, request, token)
    return response


def _pre_ok(request: Request, given: str) -> bool:
    same_origin(request)
    expected = request.cookies.get("kran_pre", "")
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


def _signed_in(request: Request, token: str, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    set_session(response, request, token, int(sessions(request).ttl_s))
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "") -> Response:
    return _form(request, "login.html", next=safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    key_id: str = Form("", max_length=200),
    secret: str = Form("", max_length=500),
    pre: str = Form("", max_length=200),
    next: str = Form("", max_length=2000),
) -> Response:
    target = safe_next(next)
    if not _pre_ok(request, pre):
        return _form(request, "login.html", 403, next=target, error="the form had expired: try again")
    try:
        token, _ = await run_in_threadpool(sessions(request).sign_in, key_id, secret)
    except Unauthorized as e:
        return _form(request, "login.html", 401, next=target, error=str(e), key_id=key_id)
    return _signed_in(request, token, target)


@router.get("/link/{token}")
async def link_form(request: Request, token: str) -> Response:
    """Says whom the link signs in (someone's own link sent to another would sign them in
    as its maker), without using it up."""
    user = await run_in_threadpool(sessions(request).link_user, token)
    if user is None:
        return _form(request, "link.html", 401, token=token, error=LINK_GONE)
    return _form(request, "link.html", token=token, user=user)


@router.post("/link/{token}")
async def link(request: Request, token: str, pre: str = Form("", max_length=200)) -> Response:
    if not _pre_ok(request, pre):
        return _form(request, "link.html", 403, token=token, error="the form had expired: try again")
    try:
        session, _ = await run_in_threadpool(sessions(request).sign_in_with_link, token)
    except Unauthorized:
        return _form(request, "link.html", 401, token=token, error=LINK_GONE)
    return _signed_in(request, session, "/ui/jobs")


@router.post("/logout")
async def logout(request: Request, _: Act) -> Response:
    await run_in_threadpool(sessions(request).sign_out, request.cookies.get("kran_session", ""))
    response = RedirectResponse("/ui/login", status_code=303)
    clear_session(response)
    return response
