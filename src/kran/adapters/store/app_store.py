"""Apps and their versions; and the job-data queries (volumes in use, files to expire).

On the job store's database and transactions, like the schedules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import app_versions, apps, jobs
from kran.domain.apps import AppRecord, VolumeSpec
from kran.domain.states import FINAL_STATES, JobState
from kran.errors import Conflict

_FINAL = [s.value for s in FINAL_STATES]
_ACTIVE = [JobState.STARTING.value, JobState.RUNNING.value]


class SqlApps:
    def __init__(self, store: SqlStore) -> None:
        self._db = store.db

    def get(self, owner: str, name: str, version: int | None = None) -> AppRecord | None:
        q = self._select(apps.c.owner == owner, apps.c.name == name, version=version)
        with self._db.connect() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else _record(row)

    def named(self, name: str) -> list[AppRecord]:
        """Every owner's app of that name (names are per owner)."""
        with self._db.connect() as conn:
            return [
                _record(r) for r in conn.execute(self._select(apps.c.name == name).order_by(apps.c.owner)).mappings()
            ]

    def all(self) -> list[AppRecord]:
        with self._db.connect() as conn:
            return [_record(r) for r in conn.execute(self._select().order_by(apps.c.name, apps.c.owner)).mappings()]

    @staticmethod
    def _select(*where: Any, version: int | None = None) -> Any:
        joined = (app_versions.c.owner == apps.c.owner) & (app_versions.c.app == apps.c.name)
        return (
            select(apps, app_versions.c.spec, app_versions.c.version.label("v"))
            .join(app_versions, joined & (app_versions.c.version == (version or apps.c.version)))
            .where(*where)
        )

    def load(
        self,
        owner: str,
        name: str,
        shared: bool,
        defaults: dict[str, Any],
        run_as: tuple[int, int] | None,
        volume: VolumeSpec | None,
        volume_key: str | None,
        now: float,
    ) -> AppRecord:
        """Create the app, or add a version and make it current (created_at stays). A shared
        app's name is unique among the shared ones: Conflict when another owner's is."""
        spec = json.dumps(
            {
                "defaults": defaults,
                "run_as": list(run_as) if run_as else None,
                "volume": [volume.name, volume.size_mb, volume_key] if volume else None,
            }
        )
        this = (apps.c.owner == owner) & (apps.c.name == name)
        others = apps.c.shared.is_(True) & (apps.c.name == name) & (apps.c.owner != owner)
        try:
            with self._db.unit_of_work() as uow:
                conn = uow.conn
                if shared and conn.execute(select(apps.c.owner).where(others)).first() is not None:
                    raise Conflict(f"a shared app {name!r} exists already; load yours --private or under another name")
                current = conn.execute(select(apps.c.version).where(this)).scalar()
                version = (current or 0) + 1
                row = {"shared": shared, "version": version, "updated_at": now}
                if current is None:
                    conn.execute(
                        insert(apps), {**row, "owner": owner, "name": name, "enabled": True, "created_at": now}
                    )
                else:
                    conn.execute(update(apps).where(this).values(row))
                conn.execute(
                    insert(app_versions),
                    {"owner": owner, "app": name, "version": version, "spec": spec, "created_at": now},
                )
        except IntegrityError:  # another load of the same name won the race
            raise Conflict(f"app {name!r} changed meanwhile; try again") from None
        got = self.get(owner, name)
        assert got is not None
        return got

    def set_enabled(self, owner: str, name: str, enabled: bool, now: float) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            conn.execute(
                update(apps).where(apps.c.owner == owner, apps.c.name == name).values(enabled=enabled, updated_at=now)
            )

    def delete(self, owner: str, name: str) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            conn.execute(delete(app_versions).where(app_versions.c.owner == owner, app_versions.c.app == name))
            conn.execute(delete(apps).where(apps.c.owner == owner, apps.c.name == name))

    def versions(self, owner: str, name: str) -> list[tuple[int, float]]:
        q = (
            select(app_versions.c.version, app_versions.c.created_at)
            .where(app_versions.c.owner == owner, app_versions.c.app == name)
            .order_by(app_versions.c.version)
        )
        with self._db.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(q)]

    # ---- job data

    def volume_users(self, volumes: Sequence[str] | None = None) -> dict[str, int]:
        """Volume -> the active job using it (starting or running)."""
        q = select(jobs.c.volume, jobs.c.id).where(jobs.c.state.in_(_ACTIVE), jobs.c.volume.is_not(None))
        if volumes is not None:
            q = q.where(jobs.c.volume.in_(list(volumes)))
        with self._db.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(q)}

    def unfinished_on_volume(self, volume: str) -> list[int]:
        with self._db.connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    select(jobs.c.id).where(jobs.c.volume == volume, jobs.c.state.not_in(_FINAL)).order_by(jobs.c.id)
                )
            ]

    def finished_with_files(self) -> list[tuple[int, float]]:
        """Finished jobs whose files are still kept: (id, finished_at), oldest first."""
        with self._db.connect() as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(
                    select(jobs.c.id, jobs.c.finished_at)
                    .where(jobs.c.state.in_(_FINAL), jobs.c.files_expired.is_(False), jobs.c.finished_at.is_not(None))
                    .order_by(jobs.c.finished_at)
                )
            ]

    def mark_files_expired(self, job_ids: Sequence[int]) -> None:
        if job_ids:
            with self._db.unit_of_work() as uow:
                conn = uow.conn
                conn.execute(update(jobs).where(jobs.c.id.in_(list(job_ids))).values(files_expired=True))


def _record(r: Any) -> AppRecord:
    spec = json.loads(r["spec"])
    vol = spec.get("volume")  # [name, size_mb, key]; before 0010 without the key
    return AppRecord(
        name=r["name"],
        owner=r["owner"],
        shared=bool(r["shared"]),
        enabled=bool(r["enabled"]),
        version=r["v"],
        defaults=spec["defaults"],
        run_as=tuple(spec["run_as"]) if spec.get("run_as") else None,
        volume=VolumeSpec(vol[0], vol[1]) if vol else None,
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        volume_key=(vol[2] if len(vol) > 2 else f"{r['name']}/{vol[0]}") if vol else None,
    )
