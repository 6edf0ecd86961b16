"""Apps: load (create or new version), list, show, enable/disable, unload; use by jobs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kran.domain.apps import (
    AppError,
    AppRecord,
    check_app_name,
    may_modify,
    may_use,
    parse_user,
    parse_volume,
    refuse_reason,
)
from kran.domain.auth import Principal
from kran.domain.jobs import JobSpec
from kran.domain.policy import app_use_refusal
from kran.errors import Conflict, EngineError, Forbidden, InvalidInput, NotFound
from kran.services.runtime import Runtime


def load_app(
    rt: Runtime,
    who: Principal,
    name: str,
    defaults: dict[str, Any],
    user: str | None,
    volume: str | None,
    shared: bool,
) -> AppRecord:
    """Create the app or add a version; `defaults` are checked job fields (the API does that)."""
    try:
        check_app_name(name)
        run_as = parse_user(user, who.is_admin) if user else None
        vol = parse_volume(volume) if volume else None
    except AppError as e:
        raise InvalidInput(str(e), e.field) from None
    existing = rt.apps.get(name)
    if existing is not None and not may_modify(existing, who.user, who.is_admin):
        raise Forbidden(f"app {name!r} belongs to {existing.owner}; only they (or an admin) can change it")
    if existing is not None and existing.volume and vol and existing.volume.name != vol.name:
        raise Conflict(f"app {name!r} has volume {existing.volume.name!r}; unload it to change the volume's name")
    owner = existing.owner if existing else who.user
    return rt.apps.load(name, owner, shared, defaults, run_as, vol, rt.clock.now())


def visible_app(rt: Runtime, who: Principal, name: str) -> AppRecord:
    app = rt.apps.get(name)
    if app is None or not may_use(app, who.user, who.is_admin):
        raise NotFound(f"app {name!r} is not loaded")
    return app


def list_apps(rt: Runtime, who: Principal) -> list[AppRecord]:
    return [a for a in rt.apps.all() if may_use(a, who.user, who.is_admin)]


def owned_app(rt: Runtime, who: Principal, name: str) -> AppRecord:
    app = visible_app(rt, who, name)
    if not may_modify(app, who.user, who.is_admin):
        raise Forbidden(f"app {name!r} belongs to {app.owner}; only they (or an admin) can change it")
    return app


def set_enabled(rt: Runtime, who: Principal, name: str, enabled: bool) -> AppRecord:
    owned_app(rt, who, name)
    rt.apps.set_enabled(name, enabled, rt.clock.now())
    return visible_app(rt, who, name)


def unload_app(rt: Runtime, who: Principal, name: str, keep_volume: bool) -> None:
    """Remove the app. Jobs already submitted keep their copy of it; its volume goes
    (unless kept), which waits until no unfinished job uses it."""
    app = owned_app(rt, who, name)
    if app.volume:
        key = volume_key(app)
        busy = rt.apps.unfinished_on_volume(key)
        if busy:
            ids = ", ".join(str(i) for i in busy[:10])
            raise Conflict(f"app {name!r}: jobs {ids} use its volume; kill them or wait, then unload")
        try:
            rt.volumes.remove(key, keep_volume)
        except EngineError as e:
            raise Conflict(f"app {name!r}: {e}") from None
    rt.apps.delete(name)


def app_for_job(rt: Runtime, who: Principal, owner: str, name: str) -> AppRecord:
    """The app's current version if the caller (or the user it submits for) may run it."""
    app = rt.apps.get(name)
    if app is not None and not (may_use(app, who.user, who.is_admin) or may_use(app, owner, False)):
        app = None
    why = refuse_reason(app, name)
    if why:
        raise InvalidInput(why, "app")
    assert app is not None
    refusal = app_use_refusal(app.name, app.run_as, who)
    if refusal:
        raise Forbidden(refusal)
    return app


def volume_key(app: AppRecord) -> str:
    assert app.volume is not None
    return f"{app.name}/{app.volume.name}"


def pin_app(spec: JobSpec, app: AppRecord) -> JobSpec:
    """What only the app can give a job: its name and version, user and volume."""
    return replace(
        spec,
        app=app.name,
        app_version=app.version,
        run_as=app.run_as,
        volume=volume_key(app) if app.volume else None,
        volume_mb=app.volume.size_mb if app.volume else 0,
    )
