"""Registry credentials (encrypted, like API key secrets), image pins, and the pull
progress of starting attempts."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import delete, insert, select, update

from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import events, image_pins, jobs, registry_credentials
from kran.domain.states import JobState


class SqlImageStore:
    def __init__(self, store: SqlStore, master_key: bytes) -> None:
        self._db = store.db
        self._fernet = Fernet(master_key)

    # ---- registry credentials: the password only ever leaves here towards a registry

    def set_credentials(self, host: str, username: str, password: str, now: float) -> None:
        row = {"host": host, "username": username, "secret_enc": self._fernet.encrypt(password.encode()).decode()}
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            conn.execute(delete(registry_credentials).where(registry_credentials.c.host == host))
            conn.execute(insert(registry_credentials), {**row, "created_at": now})

    def delete_credentials(self, host: str) -> bool:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            return bool(conn.execute(delete(registry_credentials).where(registry_credentials.c.host == host)).rowcount)

    def credentials(self) -> dict[str, tuple[str, str]]:
        with self._db.connect() as conn:
            rows = conn.execute(select(registry_credentials)).mappings().all()
        return {r["host"]: (r["username"], self._fernet.decrypt(r["secret_enc"].encode()).decode()) for r in rows}

    def registries(self) -> list[dict[str, Any]]:
        with self._db.connect() as conn:
            return [
                {"host": r[0], "username": r[1], "created_at": r[2]}
                for r in conn.execute(
                    select(
                        registry_credentials.c.host, registry_credentials.c.username, registry_credentials.c.created_at
                    )
                )
            ]

    # ---- pins

    def pin(self, ref: str, by: str, now: float) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            if conn.execute(select(image_pins.c.ref).where(image_pins.c.ref == ref)).first() is None:
                conn.execute(insert(image_pins), {"ref": ref, "pinned_by": by, "created_at": now})

    def unpin(self, ref: str) -> bool:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            return bool(conn.execute(delete(image_pins).where(image_pins.c.ref == ref)).rowcount)

    def pins(self) -> set[str]:
        with self._db.connect() as conn:
            return {r[0] for r in conn.execute(select(image_pins.c.ref))}

    # ---- pulls

    def set_pull(self, job_id: int, attempt: int, pull: dict[str, Any] | None, event: str | None, now: float) -> None:
        """Record (or clear) the attempt's pull progress; with `event`, also a `pulling` event."""
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            changed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.attempts == attempt, jobs.c.state == JobState.STARTING.value)
                .values(pull=json.dumps(pull) if pull is not None else None)
            ).rowcount
            if changed and event:
                conn.execute(
                    insert(events),
                    {
                        "job_id": job_id,
                        "attempt": attempt,
                        "from_state": JobState.STARTING.value,
                        "to_state": "pulling" if pull is not None else JobState.STARTING.value,
                        "reason": event,
                        "at": now,
                    },
                )
