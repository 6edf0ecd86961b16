"""/api/v1/admin/webhooks and /api/v1/admin/notify (issue 20.7, admins only): server-wide
webhooks, and what receivers need to verify the signature."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from kran.api.deps import Caller
from kran.api.responses import Out
from kran.api.schemas import Body
from kran.api.views import iso
from kran.services import auth as auth_service
from kran.services.notify import NotifyService

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


async def _notify(request: Request) -> NotifyService:
    return request.app.state.services.notify  # type: ignore[no-any-return]


NotifyDep = Annotated[NotifyService, Depends(_notify)]


class WebhookAdd(Body):
    url: str = Field(max_length=2000)
    events: list[str] = Field(
        [], max_length=10, description="job.started, job.succeeded, job.failed, array.ended; [] all"
    )


class Webhook(Out):
    id: int
    url: str
    events: list[str]
    created_at: str | None = None


class WebhookList(Out):
    webhooks: list[Webhook]


class NotifyState(Out):
    secret: str = Field(description="the HMAC key of X-Kran-Signature")
    allowed_prefixes: list[str]
    pending: int = Field(description="notifications not yet delivered")
    gave_up: int = Field(description="notifications given up after every retry")


class Removed(Out):
    id: int
    removed: bool


@router.get("/webhooks", response_model=WebhookList, summary="Server-wide webhooks")
def list_webhooks(who: Caller, notify: NotifyDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    return {"webhooks": [{**w, "created_at": iso(w["created_at"])} for w in notify.store.webhooks()]}


@router.post(
    "/webhooks", status_code=201, response_model=Webhook, summary="Add a webhook (its URL under an allowed prefix)"
)
def add_webhook(body: WebhookAdd, who: Caller, notify: NotifyDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    return notify.add_webhook(body.url, body.events)


@router.delete("/webhooks/{hook_id}", response_model=Removed, summary="Remove a webhook")
def remove_webhook(hook_id: int, who: Caller, notify: NotifyDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    notify.remove_webhook(hook_id)
    return {"id": hook_id, "removed": True}


@router.get("/notify", response_model=NotifyState, summary="The signing key, the allowed prefixes, the outbox")
def notify_state(who: Caller, notify: NotifyDep) -> dict[str, Any]:
    auth_service.require_admin(who)
    return {"secret": notify.secret.decode(), "allowed_prefixes": list(notify.prefixes), **notify.store.counts()}
