"""/api/v1/apps: load (create or new version), list, show, enable/disable, unload."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from kran.api.deps import Owner, authenticator, caller, runtime
from kran.api.responses import Out
from kran.api.schemas import AppLoad
from kran.domain.apps import AppRecord
from kran.domain.auth import Principal
from kran.errors import NotFound
from kran.services import apps
from kran.services.auth import Authenticator
from kran.services.runtime import Runtime

router = APIRouter(prefix="/api/v1/apps", tags=["apps"])
Rt = Annotated[Runtime, Depends(runtime)]
Caller = Annotated[Principal, Depends(caller)]
Auth = Annotated[Authenticator, Depends(authenticator)]


class AppVolume(Out):
    name: str
    size_mb: int


class AppVolumeUse(AppVolume):
    used_mb: int | None = Field(description="MiB in use (null: not measurable)")


class App(Out):
    name: str
    owner: str
    version: int
    enabled: bool
    shared: bool
    defaults: dict[str, Any] = Field(description="the job fields the app sets (see docs/apps.md)")
    user: str | None = Field(description="UID:GID its jobs run as")
    volume: AppVolume | None
    created_at: str
    updated_at: str


class AppDetail(App):
    versions: list[int]
    volume: AppVolumeUse | None


class AppList(Out):
    apps: list[App]


class AppUnloaded(Out):
    name: str
    unloaded: bool


def app_json(app: AppRecord, rt: Runtime | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": app.name,
        "owner": app.owner,
        "version": app.version,
        "enabled": app.enabled,
        "shared": app.shared,
        "defaults": app.defaults,
        "user": f"{app.run_as[0]}:{app.run_as[1]}" if app.run_as else None,
        "volume": {"name": app.volume.name, "size_mb": app.volume.size_mb} if app.volume else None,
        "created_at": datetime.fromtimestamp(app.created_at, UTC).isoformat(),
        "updated_at": datetime.fromtimestamp(app.updated_at, UTC).isoformat(),
    }
    if rt is not None:
        out["versions"] = [v for v, _ in rt.apps.versions(app.owner, app.name)]
        if app.volume:
            usage = rt.volumes.usage(apps.volume_key(app))
            out["volume"]["used_mb"] = usage[0] >> 20 if usage else None
    return out


@router.post("/{name}", status_code=201, response_model=App, summary="Load an app (a re-load adds a version)")
def load_app(name: str, body: AppLoad, rt: Rt, who: Caller, auth: Auth, owner: Owner = None) -> dict[str, Any]:
    if who.is_admin and owner not in (None, who.user) and auth.identities.get_user(owner) is None:
        raise NotFound(f"user {owner!r} not found")  # an app of nobody's would hold the name
    app = apps.load_app(rt, who, name, body.defaults(), body.user, body.volume, body.shared, owner)
    return app_json(app)


@router.get("", response_model=AppList, summary="Apps the caller may run")
def list_apps(rt: Rt, who: Caller) -> dict[str, Any]:
    return {"apps": [app_json(a) for a in apps.list_apps(rt, who)]}


@router.get("/{name}", response_model=AppDetail, summary="One app: its current version, versions, volume")
def show_app(name: str, rt: Rt, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return app_json(apps.visible_app(rt, who, name, owner), rt)


@router.post("/{name}/enable", response_model=App, summary="Let new jobs use the app again")
def enable_app(name: str, rt: Rt, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return app_json(apps.set_enabled(rt, who, name, True, owner))


@router.post("/{name}/disable", response_model=App, summary="Refuse new jobs for the app (running ones go on)")
def disable_app(name: str, rt: Rt, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return app_json(apps.set_enabled(rt, who, name, False, owner))


@router.delete("/{name}", response_model=AppUnloaded, summary="Unload the app (and remove its volume unless kept)")
def unload_app(
    name: str,
    rt: Rt,
    who: Caller,
    owner: Owner = None,
    keep_volume: bool = Query(False, description="keep the volume's data"),
) -> dict[str, Any]:
    apps.unload_app(rt, who, name, keep_volume, owner)
    return {"name": name, "unloaded": True}
