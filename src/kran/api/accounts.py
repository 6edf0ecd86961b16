"""/api/v1/accounts, /api/v1/share, /api/v1/limits (issue 20): accounts and their users
(admins), the fair-share report, limits (admins set them; users read their own)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from kran.api.deps import Caller
from kran.api.responses import Out
from kran.api.schemas import Body
from kran.errors import NotFound
from kran.services import auth as auth_service
from kran.services.accounts import MAX_SHARES, AccountService

router = APIRouter(prefix="/api/v1", tags=["accounts"])
INT32 = 2**31 - 1  # the limits' columns are 32-bit on PostgreSQL


async def _accounts(request: Request) -> AccountService:
    return request.app.state.services.accounts  # type: ignore[no-any-return]


AccountsDep = Annotated[AccountService, Depends(_accounts)]
Shares = Annotated[int, Field(ge=0, le=MAX_SHARES)]


class AccountAdd(Body):
    name: str = Field(max_length=64)
    shares: Shares = 1
    description: str = Field("", max_length=1000)


class AccountChange(Body):
    shares: Shares | None = None
    description: str | None = Field(None, max_length=1000)


class MemberSet(Body):
    shares: Shares | None = Field(None, description="the user's shares within the account (default 1)")


class LimitSet(Body):
    """Fields given are set (null clears one); fields left out stay as they are."""

    scope: str = Field(description="default | account | user | app")
    name: str = Field("", max_length=200, description="the account, user or app (not for default)")
    max_running_jobs: int | None = Field(None, ge=0, le=INT32)
    max_running_cpus: float | None = Field(None, ge=0, le=1_000_000, allow_inf_nan=False)
    max_running_mem_mb: int | None = Field(None, ge=0, le=INT32)
    max_running_gpus: int | None = Field(None, ge=0, le=1_000_000)
    max_queued_jobs: int | None = Field(None, ge=0, le=INT32)
    max_wall_s: float | None = Field(None, ge=1, le=10 * 365 * 86400, allow_inf_nan=False)
    max_priority: int | None = Field(None, ge=-1000, le=1000, description="the highest --priority a job may ask")


class Account(Out):
    name: str
    shares: int
    description: str
    users: list[str]


class AccountList(Out):
    accounts: list[Account]


class Done(Out):
    ok: bool


class ShareRow(Out):
    account: str
    user: str
    member: bool
    account_shares: int
    shares: int
    norm_shares: float
    usage: float = Field(description="decayed billing seconds, running attempts included")
    norm_usage: float | None = Field(description="share of everyone's usage (admins only)")
    effective_usage: float | None = Field(description="with part of the account's usage (admins only)")
    fair_share: float


class ShareReport(Out):
    associations: list[ShareRow]


class Limit(Out):
    scope: str
    name: str
    max_running_jobs: int | None
    max_running_cpus: float | None
    max_running_mem_mb: int | None
    max_running_gpus: int | None
    max_queued_jobs: int | None
    max_wall_s: float | None
    max_priority: int | None


class LimitList(Out):
    limits: list[Limit]


@router.get("/accounts", response_model=AccountList, summary="Accounts (a user sees their own)")
def list_accounts(who: Caller, accounts: AccountsDep) -> dict[str, Any]:
    rows = accounts.list_accounts()
    if not who.is_admin:
        rows = [{**r, "users": [who.user]} for r in rows if who.user in r["users"]]
    return {"accounts": rows}


@router.post("/accounts", status_code=201, response_model=Done, summary="Add an account (admin)")
def add_account(body: AccountAdd, who: Caller, accounts: AccountsDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    accounts.add_account(body.name, body.shares, body.description)
    return {"ok": True}


@router.patch("/accounts/{name}", response_model=Done, summary="Change an account's shares or description (admin)")
def change_account(name: str, body: AccountChange, who: Caller, accounts: AccountsDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    accounts.set_account(name, body.shares, body.description)
    return {"ok": True}


@router.put(
    "/accounts/{name}/users/{user}",
    response_model=Done,
    summary="Make a user a member of an account, or set their shares in it (admin)",
)
def set_member(name: str, user: str, body: MemberSet, who: Caller, accounts: AccountsDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    accounts.add_member(name, user, body.shares)
    return {"ok": True}


@router.delete("/accounts/{name}/users/{user}", response_model=Done, summary="Remove a user from an account (admin)")
def remove_member(name: str, user: str, who: Caller, accounts: AccountsDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    accounts.remove_member(name, user)
    return {"ok": True}


@router.get("/share", response_model=ShareReport, summary="Fair share: shares, decayed usage and factors (as sshare)")
def share(who: Caller, accounts: AccountsDep, user: str | None = None) -> dict[str, Any]:
    if not who.is_admin:
        if user not in (None, who.user):
            raise NotFound(f"user {user} not found")
        # one's own rows; not the figures others' usage could be worked out from
        rows = [{**r, "norm_usage": None, "effective_usage": None} for r in accounts.share_report(who.user)]
        return {"associations": rows}
    return {"associations": accounts.share_report(user)}


@router.get("/limits", response_model=LimitList, summary="Limits (a user sees those that apply to them)")
def list_limits(who: Caller, accounts: AccountsDep) -> dict[str, Any]:
    rows = accounts.limits()
    if not who.is_admin:
        mine = set(accounts.accounts.memberships(who.user)) or {"default"}
        rows = [
            r
            for r in rows
            if r["scope"] == "default"
            or (r["scope"] == "user" and r["name"] == who.user)
            or (r["scope"] == "account" and r["name"] in mine)
        ]
    return {"limits": rows}


@router.put("/limits", response_model=Limit, summary="Set limits of a scope (admin); null clears one")
def set_limits(body: LimitSet, who: Caller, accounts: AccountsDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    values = {k: getattr(body, k) for k in body.model_fields_set if k not in ("scope", "name")}
    return accounts.set_limits(body.scope, body.name, values)
