"""Workflow runs, on the job store's database."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, update

from kran.adapters.store.notify_store import hooks_for, outbox_row
from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import notifications, workflows
from kran.domain.workflows import RunState, WorkflowRecord

_FINAL = [s.value for s in RunState if s.is_final]


class SqlWorkflows:
    def __init__(self, store: SqlStore) -> None:
        self._db = store.db

    def create(self, owner: str, name: str, labels: dict[str, str], now: float, notify: str | None = None) -> int:
        row = dict(owner=owner, name=name, state=RunState.QUEUED.value, labels=json.dumps(labels), notify=notify)
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            res = conn.execute(insert(workflows).values(**row, dir="", document="", submitted_at=now))
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def set_files(self, run_id: int, dir: str, document: str, job_order: str | None) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            q = update(workflows).where(workflows.c.id == run_id)
            conn.execute(q.values(dir=dir, document=document, job_order=job_order))

    def get(self, run_id: int) -> WorkflowRecord | None:
        with self._db.connect() as conn:
            row = conn.execute(select(workflows).where(workflows.c.id == run_id)).mappings().first()
        return None if row is None else _record(row)

    def list(self, owner: str | None = None, states: Sequence[RunState] = (), limit: int = 100) -> list[WorkflowRecord]:
        q = select(workflows).order_by(workflows.c.id.desc()).limit(limit)
        if owner is not None:
            q = q.where(workflows.c.owner == owner)
        if states:
            q = q.where(workflows.c.state.in_([s.value for s in states]))
        with self._db.connect() as conn:
            return [_record(r) for r in conn.execute(q).mappings()]

    def start(self, run_id: int, now: float) -> bool:
        """queued -> running; False when the run ended meanwhile (cancelled before it began)."""
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            res = conn.execute(
                update(workflows)
                .where(workflows.c.id == run_id, workflows.c.state.notin_(_FINAL))
                .values(state=RunState.RUNNING.value)
            )
            conn.execute(
                update(workflows)
                .where(workflows.c.id == run_id, workflows.c.started_at.is_(None))
                .values(started_at=now)
            )
            return res.rowcount == 1

    def finish(
        self,
        run_id: int,
        state: RunState,
        now: float,
        exit_code: int,
        reason: str | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> bool:
        """End the run once; False when it had ended already."""
        values: dict[str, Any] = dict(state=state.value, finished_at=now, exit_code=exit_code, reason=reason)
        if outputs is not None:
            values["outputs"] = json.dumps(outputs)
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            res = conn.execute(
                update(workflows).where(workflows.c.id == run_id, workflows.c.state.notin_(_FINAL)).values(**values)
            )
            if res.rowcount == 1:  # workflow.ended, in the transaction that ends it (a kill -9 loses neither)
                _notify_ended(conn, run_id, state, exit_code, reason, now)
            return res.rowcount == 1

    def request_cancel(self, run_id: int) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            conn.execute(
                update(workflows)
                .where(workflows.c.id == run_id, workflows.c.state.notin_(_FINAL))
                .values(cancel_requested=True)
            )


def _notify_ended(
    conn: Connection, run_id: int, state: RunState, exit_code: int, reason: str | None, now: float
) -> None:
    row = conn.execute(
        select(workflows.c.owner, workflows.c.name, workflows.c.notify).where(workflows.c.id == run_id)
    ).one()
    targets = hooks_for(conn, "workflow.ended") + ([row[2]] if row[2] else [])
    if not targets:
        return
    event_id = f"workflow-{run_id}-ended"
    payload = {
        "id": event_id,
        "type": "workflow.ended",
        "at": now,
        "workflow": {"id": run_id, "name": row[1], "owner": row[0], "state": state.value, "exit_code": exit_code,
                     "reason": reason},
    }  # fmt: skip
    conn.execute(insert(notifications), [outbox_row(event_id, url, payload, now) for url in dict.fromkeys(targets)])


def _record(r: Any) -> WorkflowRecord:
    return WorkflowRecord(
        id=r["id"],
        owner=r["owner"],
        name=r["name"],
        state=RunState(r["state"]),
        labels=json.loads(r["labels"]),
        dir=r["dir"],
        document=r["document"],
        job_order=r["job_order"],
        submitted_at=r["submitted_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        outputs=json.loads(r["outputs"]) if r["outputs"] else None,
        reason=r["reason"],
        exit_code=r["exit_code"],
        cancel_requested=bool(r["cancel_requested"]),
    )
