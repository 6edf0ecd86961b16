"""GA4GH TES tasks, on the job store's database."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update

from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import tes_tasks
from kran.domain.tes import FINAL, TaskRecord

_FINAL = sorted(FINAL)


class SqlTesTasks:
    def __init__(self, store: SqlStore) -> None:
        self._db = store.db

    def create(
        self,
        task_id: str,
        owner: str,
        submitted_by: str | None,
        document: dict[str, Any],
        logs: Sequence[str],
        now: float,
    ) -> None:
        row = dict(
            task_id=task_id,
            owner=owner,
            submitted_by=submitted_by,
            name=document.get("name"),
            phase="STAGING",
            cancel_requested=False,
            created_at=now,
            jobs="[]",
            task=json.dumps(document),
            outputs="[]",
            system_logs=json.dumps(list(logs)),
        )
        with self._db.unit_of_work() as uow:
            uow.conn.execute(insert(tes_tasks).values(**row))

    def get(self, task_id: str) -> TaskRecord | None:
        with self._db.connect() as conn:
            row = conn.execute(select(tes_tasks).where(tes_tasks.c.task_id == task_id)).mappings().first()
        return None if row is None else _record(row)

    def find(
        self,
        owner: str | None,
        name_prefix: str | None,
        before: int | None,
        limit: int,
        documents: bool = True,
    ) -> list[TaskRecord]:
        """Newest first, below row `before`; without `documents`, the tasks' documents
        (up to megabytes each) are not read (their records carry {})."""
        columns = [c for c in tes_tasks.c if documents or c.name != "task"]
        q = select(*columns).order_by(tes_tasks.c.id.desc()).limit(limit)
        if owner is not None:
            q = q.where(tes_tasks.c.owner == owner)
        if name_prefix:
            q = q.where(tes_tasks.c.name.startswith(name_prefix, autoescape=True))
        if before is not None:
            q = q.where(tes_tasks.c.id < before)
        with self._db.connect() as conn:
            return [_record(r) for r in conn.execute(q).mappings()]

    def active(self) -> list[TaskRecord]:
        q = select(tes_tasks).where(tes_tasks.c.phase.notin_(_FINAL)).order_by(tes_tasks.c.id)
        with self._db.connect() as conn:
            return [_record(r) for r in conn.execute(q).mappings()]

    def set_jobs(self, task_id: str, jobs: Sequence[int]) -> None:
        """STAGING -> JOBS, with the executors' jobs."""
        with self._db.unit_of_work() as uow:
            uow.conn.execute(
                update(tes_tasks)
                .where(tes_tasks.c.task_id == task_id, tes_tasks.c.phase == "STAGING")
                .values(phase="JOBS", jobs=json.dumps(list(jobs)))
            )

    def advance(
        self,
        task_id: str,
        phase: str,
        now: float,
        log: str | None = None,
        outputs: Sequence[dict[str, str]] | None = None,
    ) -> bool:
        """To `phase` (and ended, when final), unless it ended already; a line for its
        system_logs, its outputs' log."""
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            row = conn.execute(select(tes_tasks).where(tes_tasks.c.task_id == task_id)).mappings().first()
            if row is None or row["phase"] in FINAL:
                return False
            values: dict[str, Any] = {"phase": phase}
            if phase in FINAL:
                values["ended_at"] = now
            if log:
                values["system_logs"] = json.dumps([*json.loads(row["system_logs"]), log])
            if outputs is not None:
                values["outputs"] = json.dumps(list(outputs))
            conn.execute(update(tes_tasks).where(tes_tasks.c.task_id == task_id).values(**values))
            return True

    def request_cancel(self, task_id: str) -> bool:
        """Marked to be canceled; False when it had ended."""
        with self._db.unit_of_work() as uow:
            res = uow.conn.execute(
                update(tes_tasks)
                .where(tes_tasks.c.task_id == task_id, tes_tasks.c.phase.notin_(_FINAL))
                .values(cancel_requested=True)
            )
            return res.rowcount == 1


def _record(r: Any) -> TaskRecord:
    return TaskRecord(
        row=r["id"],
        task_id=r["task_id"],
        owner=r["owner"],
        submitted_by=r["submitted_by"],
        name=r["name"],
        phase=r["phase"],
        cancel_requested=bool(r["cancel_requested"]),
        created_at=r["created_at"],
        ended_at=r["ended_at"],
        jobs=tuple(json.loads(r["jobs"])),
        document=json.loads(r["task"]) if "task" in r else {},
        outputs=tuple(json.loads(r["outputs"])),
        system_logs=tuple(json.loads(r["system_logs"])),
    )
