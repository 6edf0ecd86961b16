"""/api/v1/apps: load (create or new version), list, show, enable/disable, unload."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import Field

from kran.api.deps import Apps, Auth, Caller, Owner
from kran.api.responses import Out
from kran.api.schemas import AppLoad
from kran.domain.apps import AppRecord
from kran.errors import NotFound
from kran.services.apps import AppService

router = APIRouter(prefix="/api/v1/apps", tags=["apps"])


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


def app_json(app: AppRecord, apps: AppService | None = None) -> dict[str, Any]:
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
    if apps is not None:
        out["versions"] = apps.versions(app)
        if app.volume:
            usage = apps.volume_usage(app)
            out["volume"]["used_mb"] = usage[0] >> 20 if usage else None
    return out


@router.post("/{name}", status_code=201, response_model=App, summary="Load an app (a re-load adds a version)")
def load_app(name: str, body: AppLoad, apps: Apps, who: Caller, auth: Auth, owner: Owner = None) -> dict[str, Any]:
    if who.is_admin and owner not in (None, who.user) and auth.identities.get_user(owner) is None:
        raise NotFound(f"user {owner!r} not found")  # an app of nobody's would hold the name
    app = apps.load_app(who, name, body.defaults(), body.user, body.volume, body.shared, owner)
    return app_json(app)


@router.get("", response_model=AppList, summary="Apps the caller may run")
def list_apps(apps: Apps, who: Caller) -> dict[str, Any]:
    return {"apps": [app_json(a) for a in apps.list_apps(who)]}


@router.get("/{name}", response_model=AppDetail, summary="One app: its current version, versions, volume")
def show_app(name: str, apps: Apps, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return app_json(apps.visible_app(who, name, owner), apps)


@router.post("/{name}/enable", response_model=App, summary="Let new jobs use the app again")
def enable_app(name: str, apps: Apps, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return app_json(apps.set_enabled(who, name, True, owner))


@router.post("/{name}/disable", response_model=App, summary="Refuse new jobs for the app (running ones go on)")
def disable_app(name: str, apps: Apps, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return app_json(apps.set_enabled(who, name, False, owner))


@router.delete("/{name}", response_model=AppUnloaded, summary="Unload the app (and remove its volume unless kept)")
def unload_app(
    name: str,
    apps: Apps,
    who: Caller,
    owner: Owner = None,
    keep_volume: bool = Query(False, description="keep the volume's data"),
) -> dict[str, Any]:
    apps.unload_app(who, name, keep_volume, owner)
    return {"name": name, "unloaded": True}
