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
    pick_app,
    refuse_reason,
    volume_key_for,
)
from kran.domain.auth import Principal, can_see
from kran.domain.jobs import JobSpec
from kran.domain.policy import app_use_refusal
from kran.errors import Conflict, EngineError, Forbidden, InvalidInput, NotFound
from kran.ports import Apps, Clock, Volumes


class AppService:
    def __init__(self, apps: Apps, volumes: Volumes, clock: Clock) -> None:
        self.apps = apps
        self.volumes = volumes
        self.clock = clock

    def versions(self, app: AppRecord) -> list[int]:
        return [v for v, _ in self.apps.versions(app.owner, app.name)]

    def volume_usage(self, app: AppRecord) -> tuple[int, int] | None:
        return self.volumes.usage(volume_key(app))

    def load_app(
        self,
        who: Principal,
        name: str,
        defaults: dict[str, Any],
        user: str | None,
        volume: str | None,
        shared: bool,
        owner: str | None = None,
    ) -> AppRecord:
        """Create the caller's app `name` (or `owner`'s: admins) or add a version; `defaults`
        are checked job fields (the API does that). Names are per owner: another user's
        private app of the same name is not in the way, nor is it seen."""
        owner = owner or who.user
        if not can_see(who, owner):
            raise NotFound(f"app {name!r} is not loaded")
        try:
            check_app_name(name)
            run_as = parse_user(user, who.is_admin) if user else None
            vol = parse_volume(volume) if volume else None
        except AppError as e:
            raise InvalidInput(str(e), e.field) from None
        existing = self.apps.get(owner, name)
        if existing is not None and existing.volume and vol and existing.volume.name != vol.name:
            raise Conflict(f"app {name!r} has volume {existing.volume.name!r}; unload it to change the volume's name")
        key = None
        if vol:
            key = existing.volume_key if existing and existing.volume else volume_key_for(owner, name, vol.name)
        return self.apps.load(owner, name, shared, defaults, run_as, vol, key, self.clock.now())

    def visible_app(self, who: Principal, name: str, owner: str | None = None) -> AppRecord:
        """`owner`'s app, or for a bare name the caller's own, then a shared one."""
        if owner is not None:
            app = self.apps.get(owner, name)
            app = app if app is not None and (app.shared or can_see(who, owner)) else None
        else:
            app = pick_app(self.apps.named(name), [who.user])
        if app is None:
            raise NotFound(f"app {name!r} is not loaded")
        return app

    def list_apps(self, who: Principal) -> list[AppRecord]:
        return [a for a in self.apps.all() if may_use(a, who.user, who.is_admin)]

    def owned_app(self, who: Principal, name: str, owner: str | None = None) -> AppRecord:
        app = self.visible_app(who, name, owner)
        if not may_modify(app, who.user, who.is_admin):  # a shared app: seen by all, changed by its owner
            raise Forbidden(f"app {name!r} belongs to {app.owner}; only they (or an admin) can change it")
        return app

    def set_enabled(self, who: Principal, name: str, enabled: bool, owner: str | None = None) -> AppRecord:
        app = self.owned_app(who, name, owner)
        self.apps.set_enabled(app.owner, app.name, enabled, self.clock.now())
        return self.visible_app(who, name, app.owner)

    def unload_app(self, who: Principal, name: str, keep_volume: bool, owner: str | None = None) -> None:
        """Remove the app. Jobs already submitted keep their copy of it; its volume goes
        (unless kept), which waits until no unfinished job uses it."""
        app = self.owned_app(who, name, owner)
        if app.volume:
            key = volume_key(app)
            busy = self.apps.unfinished_on_volume(key)
            if busy:
                ids = ", ".join(str(i) for i in busy[:10])
                raise Conflict(f"app {name!r}: jobs {ids} use its volume; kill them or wait, then unload")
            try:  # kept where a re-load of the owner's looks (a volume from before names were per owner moves)
                self.volumes.remove(key, keep_volume, volume_key_for(app.owner, app.name, app.volume.name))
            except EngineError as e:
                raise Conflict(f"app {name!r}: {e}") from None
        self.apps.delete(app.owner, app.name)

    def app_for_job(self, who: Principal, owner: str, name: str) -> AppRecord:
        """The app's current version if the caller (or the user it submits for) may run it.
        `name` is bare (the job owner's own, the caller's own, then a shared one) or
        OWNER/NAME (anyone's the caller or the job's owner may use)."""
        app_owner, _, bare = name.rpartition("/")
        if app_owner:
            app = self.apps.get(app_owner, bare)
            if app is not None and not (may_use(app, who.user, who.is_admin) or may_use(app, owner, False)):
                app = None
        else:
            app = pick_app(self.apps.named(bare), [owner, who.user])
        why = refuse_reason(app, name)
        if why:
            raise InvalidInput(why, "app")
        assert app is not None
        refusal = app_use_refusal(app.name, app.run_as, who)
        if refusal:
            raise Forbidden(refusal)
        return app


def volume_key(app: AppRecord) -> str:
    assert app.volume is not None and app.volume_key is not None
    return app.volume_key


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
