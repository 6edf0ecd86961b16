"""Admin (admins only, refused as the API refuses anyone else): users and their roles, API
keys (a new secret shown once, in the answer to the form that made it), accounts with their
shares and members, the fair-share report, and limits per scope as `kran limit set` sets them.
Every change calls what the JSON API calls (kran.services.auth, AccountService)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from kran.api.accounts import AccountAdd, AccountChange, LimitSet, MemberSet
from kran.api.schemas import validated
from kran.domain.auth import Role
from kran.domain.durations import parse_duration
from kran.domain.limits import LIMIT_NAMES, SCOPES
from kran.errors import InvalidInput, KranError, http_status
from kran.services import auth as auth_service
from kran.services.suite import Services
from kran.web.render import page
from kran.web.session import Act, Look, Viewer, services

router = APIRouter()
INT_LIMITS = ("max_running_jobs", "max_running_mem_mb", "max_running_gpus", "max_queued_jobs", "max_priority")
LIMIT_TITLES = {
    "max_running_jobs": "running jobs",
    "max_running_cpus": "running CPUs",
    "max_running_mem_mb": "running memory (MiB)",
    "max_running_gpus": "running GPUs",
    "max_queued_jobs": "queued jobs",
    "max_wall_s": "wall time (e.g. 2h, 1d)",
    "max_priority": "highest priority",
}
DONE = {  # what a change that went through says on the page it leads back to (fixed texts only)
    "user-added": "User added.",
    "user-disabled": "User disabled: their keys and sessions stop working at once.",
    "user-enabled": "User enabled again.",
    "key-revoked": "Key revoked.",
    "account-added": "Account added.",
    "account-changed": "Account changed.",
    "member-added": "Member added (or their shares set).",
    "member-removed": "Member removed; their usage stays on record.",
    "limits-set": "Limits set.",
    "limits-cleared": "Limits cleared.",
}
SECTION = {"user": "users", "key": "keys", "account": "accounts", "member": "accounts", "limits": "limits"}


def text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def whole(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{field}: {value!r} is not a whole number", field) from None


def real(value: str, field: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{field}: {value!r} is not a number", field) from None


def limit_values(form: Mapping[str, Any], cleared: list[str]) -> dict[str, int | float | None]:
    """The limit form as the API's LimitSet fields: a value given is set, a limit ticked
    'clear' is null (cleared), one left empty stays as it is."""
    values: dict[str, int | float | None] = {}
    for name in LIMIT_NAMES:
        given = text(form, name)
        if name in cleared:
            if given:
                raise InvalidInput(f"{name}: give a value or clear it, not both", name)
            values[name] = None
        elif not given:
            continue
        elif name in INT_LIMITS:
            values[name] = whole(given, name)
        elif name == "max_wall_s":
            try:
                values[name] = parse_duration(given)
            except ValueError as e:
                raise InvalidInput(f"{name}: {e}", name) from None
        else:
            values[name] = real(given, name)
    unknown = sorted(set(cleared) - set(LIMIT_NAMES))
    if unknown:
        raise InvalidInput(f"unknown limit {unknown[0]}", unknown[0])
    if not values:
        raise InvalidInput("give a limit to set or tick one to clear", "limits")
    return values


async def admin_page(request: Request, viewer: Viewer, status: int = 200, **extra: Any) -> Response:
    """The whole page: users, keys, accounts, shares and limits, as an admin sees them."""
    auth_service.require_admin(viewer.who)
    suite = services(request)

    def load() -> dict[str, Any]:
        accounts = suite.accounts
        return {
            "users": suite.auth.identities.users(),
            "keys": suite.auth.identities.keys(None),
            "accounts": accounts.list_accounts(),
            "shares": accounts.share_report(None),
            "limits": accounts.limits(),
        }

    data = await run_in_threadpool(load)
    return page(
        request,
        "admin.html",
        viewer,
        status,
        **data,
        roles=[r.value for r in Role],
        scopes=SCOPES,
        limit_names=LIMIT_NAMES,
        limit_titles=LIMIT_TITLES,
        **extra,
    )


async def change(
    request: Request,
    viewer: Viewer,
    act: Callable[[Services, FormData], Awaitable[str]],
) -> Response:
    """One admin change from a form: refused whole for a non-admin; then back to the page
    (303) with what was done, or the page again with the reason and its 4xx status."""
    auth_service.require_admin(viewer.who)
    form = await request.form()
    try:
        done = await act(services(request), form)
    except KranError as e:
        return await admin_page(request, viewer, http_status(e), error=str(e))
    return RedirectResponse(f"/ui/admin?done={done}#{SECTION[done.split('-')[0]]}", status_code=303)


@router.get("/admin")
async def admin_home(request: Request, viewer: Look, done: str = Query("", max_length=40)) -> Response:
    return await admin_page(request, viewer, notice=DONE.get(done))


@router.post("/admin/users")
async def add_user(request: Request, viewer: Act) -> Response:
    auth_service.require_admin(viewer.who)
    form = await request.form()
    suite = services(request)
    name, role = text(form, "name"), text(form, "role") or "user"
    try:
        await run_in_threadpool(auth_service.add_user, suite.auth, viewer.who, name, role, time.time())
        if text(form, "with_key") != "on":
            return RedirectResponse("/ui/admin?done=user-added#users", status_code=303)
        key_id, secret = await run_in_threadpool(auth_service.create_key, suite.auth, viewer.who, name, time.time())
    except KranError as e:
        return await admin_page(request, viewer, http_status(e), error=str(e))
    return await admin_page(request, viewer, new_key={"key_id": key_id, "secret": secret, "user": name})


@router.post("/admin/keys")
async def create_key(request: Request, viewer: Act) -> Response:
    """A new key: its secret is in this answer only (not stored in the clear, never shown again)."""
    auth_service.require_admin(viewer.who)
    form = await request.form()
    user = text(form, "user")
    try:
        key_id, secret = await run_in_threadpool(
            auth_service.create_key, services(request).auth, viewer.who, user, time.time()
        )
    except KranError as e:
        return await admin_page(request, viewer, http_status(e), error=str(e))
    return await admin_page(request, viewer, new_key={"key_id": key_id, "secret": secret, "user": user})


@router.post("/admin/users/disable")
async def disable_user(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        await run_in_threadpool(auth_service.set_disabled, suite.auth, viewer.who, text(form, "name"), True)
        return "user-disabled"

    return await change(request, viewer, act)


@router.post("/admin/users/enable")
async def enable_user(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        await run_in_threadpool(auth_service.set_disabled, suite.auth, viewer.who, text(form, "name"), False)
        return "user-enabled"

    return await change(request, viewer, act)


@router.post("/admin/keys/revoke")
async def revoke_key(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        await run_in_threadpool(auth_service.revoke_key, suite.auth, viewer.who, text(form, "key_id"))
        return "key-revoked"

    return await change(request, viewer, act)


@router.post("/admin/accounts")
async def add_account(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        shares = whole(text(form, "shares") or "1", "shares")
        body = validated(
            AccountAdd, {"name": text(form, "name"), "shares": shares, "description": text(form, "description")}
        )
        await run_in_threadpool(suite.accounts.add_account, body.name, body.shares, body.description)
        return "account-added"

    return await change(request, viewer, act)


@router.post("/admin/accounts/change")
async def change_account(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        shares = whole(text(form, "shares"), "shares")
        body = validated(AccountChange, {"shares": shares})
        await run_in_threadpool(suite.accounts.set_account, text(form, "name"), body.shares, None)
        return "account-changed"

    return await change(request, viewer, act)


@router.post("/admin/accounts/members")
async def add_member(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        given = text(form, "shares")
        body = validated(MemberSet, {"shares": whole(given, "shares") if given else None})
        await run_in_threadpool(suite.accounts.add_member, text(form, "account"), text(form, "user"), body.shares)
        return "member-added"

    return await change(request, viewer, act)


@router.post("/admin/accounts/members/remove")
async def remove_member(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        await run_in_threadpool(suite.accounts.remove_member, text(form, "account"), text(form, "user"))
        return "member-removed"

    return await change(request, viewer, act)


@router.post("/admin/limits")
async def set_limits(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        cleared = [v for v in form.getlist("clear") if isinstance(v, str)]
        values = limit_values(form, cleared)
        body = validated(LimitSet, {"scope": text(form, "scope"), "name": text(form, "name"), **values})
        await run_in_threadpool(suite.accounts.set_limits, body.scope, body.name, values)
        return "limits-set"

    return await change(request, viewer, act)


@router.post("/admin/limits/clear")
async def clear_limits(request: Request, viewer: Act) -> Response:
    async def act(suite: Services, form: FormData) -> str:
        none: dict[str, int | float | None] = dict.fromkeys(LIMIT_NAMES)
        await run_in_threadpool(suite.accounts.set_limits, text(form, "scope"), text(form, "name"), none)
        return "limits-cleared"

    return await change(request, viewer, act)
