"""/api/v1/admin: users and API keys (admin only), and /api/v1/whoami."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import ConfigDict, Field

from kran.api.deps import Auth, Caller
from kran.api.responses import Out
from kran.api.schemas import Body
from kran.api.views import iso
from kran.services import auth as auth_service

router = APIRouter(prefix="/api/v1", tags=["admin"])
Who = Caller


class UserAdd(Body):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: str = "user"


class KeyCreate(Body):
    model_config = ConfigDict(extra="forbid")
    user: str


class Identity(Out):
    user: str
    role: str


class User(Out):
    name: str
    role: str
    disabled: bool
    created_at: str | None


class UserList(Out):
    users: list[User]


class UserAdded(Out):
    name: str
    role: str


class UserDisabled(Out):
    name: str
    disabled: bool


class ApiKey(Out):
    key_id: str
    user: str
    revoked: bool
    created_at: str | None


class KeyList(Out):
    keys: list[ApiKey]


class KeyCreated(Out):
    key_id: str
    secret: str = Field(description="shown only in this answer")
    user: str


class KeyRevoked(Out):
    key_id: str
    revoked: bool


@router.get("/whoami", response_model=Identity, summary="The caller's identity")
def whoami(who: Who) -> dict[str, Any]:
    return {"user": who.user, "role": who.role.value}


@router.get("/admin/users", response_model=UserList, summary="List users")
def list_users(who: Who, auth: Auth) -> dict[str, Any]:
    auth_service.require_admin(who)
    return {
        "users": [
            {"name": u.name, "role": u.role.value, "disabled": u.disabled, "created_at": iso(u.created_at)}
            for u in auth.identities.users()
        ]
    }


@router.post("/admin/users", status_code=201, response_model=UserAdded, summary="Add a user")
def add_user(
    body: UserAdd,
    who: Who,
    auth: Auth,
) -> dict[str, Any]:
    auth_service.add_user(auth, who, body.name, body.role, time.time())
    return {"name": body.name, "role": body.role}


@router.post(
    "/admin/users/{name}/disable",
    response_model=UserDisabled,
    summary="Disable a user: their keys stop working at once",
)
def disable_user(name: str, who: Who, auth: Auth) -> dict[str, Any]:
    auth_service.set_disabled(auth, who, name, True)
    return {"name": name, "disabled": True}


@router.post("/admin/users/{name}/enable", response_model=UserDisabled, summary="Enable a user again")
def enable_user(name: str, who: Who, auth: Auth) -> dict[str, Any]:
    auth_service.set_disabled(auth, who, name, False)
    return {"name": name, "disabled": False}


@router.get("/admin/keys", response_model=KeyList, summary="List API keys (never their secrets)")
def list_keys(who: Who, auth: Auth, user: str | None = None) -> dict[str, Any]:
    auth_service.require_admin(who)
    return {
        "keys": [
            {"key_id": k.key_id, "user": k.user, "revoked": k.revoked, "created_at": iso(k.created_at)}
            for k in auth.identities.keys(user)
        ]
    }


@router.post(
    "/admin/keys",
    status_code=201,
    response_model=KeyCreated,
    summary="Create an API key; the secret is shown only here",
)
def create_key(
    body: KeyCreate,
    who: Who,
    auth: Auth,
) -> dict[str, Any]:
    key_id, secret = auth_service.create_key(auth, who, body.user, time.time())
    return {"key_id": key_id, "secret": secret, "user": body.user}


@router.post("/admin/keys/{key_id}/revoke", response_model=KeyRevoked, summary="Revoke an API key")
def revoke_key(key_id: str, who: Who, auth: Auth) -> dict[str, Any]:
    auth_service.revoke_key(auth, who, key_id)
    return {"key_id": key_id, "revoked": True}
