"""Notifications (issue 20.7) on the job store's database: the events of jobs become
outbox rows in the transaction that moves a cursor over `events` (so a kill -9 loses none
and makes none twice); delivery marks them done or due again later."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import events, jobs, meta, notifications, webhooks
from kran.domain.notify import EVENT_TYPES, event_type_of, wanted
from kran.ports import Outgoing

CURSOR = "notify_cursor"
GAP_WAIT_S = 30.0  # an id missing this long was a rolled-back insert, not a slow commit
BATCH = 1000


def outbox_row(event_id: str, url: str, payload: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "url": url,
        "payload": json.dumps(payload, separators=(",", ":"), sort_keys=True),
        "attempts": 0,
        "next_at": now,
        "gave_up": False,
        "created_at": now,
    }


def hooks_for(conn: Connection, event_type: str) -> list[str]:
    return [r[0] for r in conn.execute(select(webhooks.c.url, webhooks.c.events)) if event_type in r[1].split(",")]


class SqlNotifications:
    def __init__(self, store: SqlStore) -> None:
        self._db = store.db
        self._gap_seen: dict[int, float] = {}  # missing event id -> when first missed (monotonic)

    def collect(self, now: float) -> int:
        """Events after the cursor -> outbox rows; returns how many rows were made. The first
        run starts at the newest event (no notifications for history)."""
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            cursor = conn.execute(select(meta.c.value).where(meta.c.key == CURSOR)).scalar()
            if cursor is None:
                top = conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one()
                conn.execute(insert(meta).values(key=CURSOR, value=str(top)))
                return 0
            last = int(cursor)
            rows = conn.execute(
                select(events.c.id, events.c.job_id, events.c.to_state, events.c.at)
                .where(events.c.id > last)
                .order_by(events.c.id)
                .limit(BATCH)
            ).all()
            taken = []
            for r in rows:  # contiguous ids only: a gap may be a transaction not yet committed
                if (
                    r[0] != last + 1
                    and time.monotonic() - self._gap_seen.setdefault(last + 1, time.monotonic()) < GAP_WAIT_S
                ):
                    break
                self._gap_seen.pop(last + 1, None)
                taken.append(r)
                last = r[0]
            if not taken:
                return 0
            out = self._rows(conn, taken, now)
            if out:
                conn.execute(insert(notifications), out)
            conn.execute(update(meta).where(meta.c.key == CURSOR).values(value=str(last)))
            return len(out)

    def _rows(self, conn: Connection, taken: Sequence[Any], now: float) -> list[dict[str, Any]]:
        typed = [(r, t) for r in taken if (t := event_type_of(r[2])) is not None]
        if not typed:
            return []
        hooks = {t: hooks_for(conn, t) for t in EVENT_TYPES}
        ids = {r[1] for r, _ in typed}
        about = {
            j["id"]: j
            for j in conn.execute(
                select(
                    jobs.c.id, jobs.c.owner, jobs.c.name, jobs.c.state, jobs.c.exit_code, jobs.c.reason,
                    jobs.c.notify, jobs.c.notify_events, jobs.c.array_id, jobs.c.array_index, jobs.c.attempts,
                ).where(jobs.c.id.in_(ids))
            ).mappings()
        }  # fmt: skip
        out = []
        for r, event_type in typed:
            j = about.get(r[1])
            if j is None:
                continue
            targets = list(hooks[event_type])
            if j["notify"] and wanted(tuple((j["notify_events"] or "end").split(",")), event_type):
                targets.append(j["notify"])
            if not targets:
                continue
            event_id = f"job-{r[1]}-event-{r[0]}"
            payload = {
                "id": event_id,
                "type": event_type,
                "at": r[3],
                "job": {
                    "id": j["id"],
                    "name": j["name"],
                    "owner": j["owner"],
                    "state": r[2],
                    "attempt": j["attempts"],
                    "exit_code": j["exit_code"] if r[2] != "running" else None,
                    "reason": j["reason"] if r[2] != "running" else None,
                    "array": None if j["array_id"] is None else {"id": j["array_id"], "index": j["array_index"]},
                },
            }
            out += [outbox_row(event_id, url, payload, now) for url in dict.fromkeys(targets)]
        return out

    def due(self, now: float, limit: int) -> list[Outgoing]:
        q = (
            select(notifications)
            .where(notifications.c.delivered_at.is_(None), notifications.c.gave_up.is_(False))
            .where(notifications.c.next_at <= now)
            .order_by(notifications.c.next_at, notifications.c.id)
            .limit(limit)
        )
        with self._db.connect() as conn:
            return [
                Outgoing(r["id"], r["event_id"], r["url"], r["payload"], r["attempts"])
                for r in conn.execute(q).mappings()
            ]

    def delivered(self, row_id: int, now: float) -> None:
        with self._db.unit_of_work() as uow:
            uow.conn.execute(
                update(notifications)
                .where(notifications.c.id == row_id)
                .values(delivered_at=now, attempts=notifications.c.attempts + 1)
            )

    def retry(self, row_id: int, attempts: int, next_at: float, error: str, give_up: bool) -> None:
        with self._db.unit_of_work() as uow:
            uow.conn.execute(
                update(notifications)
                .where(notifications.c.id == row_id)
                .values(attempts=attempts, next_at=next_at, last_error=error[:1000], gave_up=give_up)
            )

    def counts(self) -> dict[str, int]:
        with self._db.connect() as conn:
            pending = conn.execute(
                select(func.count()).where(notifications.c.delivered_at.is_(None), notifications.c.gave_up.is_(False))
            ).scalar_one()
            failed = conn.execute(select(func.count()).where(notifications.c.gave_up.is_(True))).scalar_one()
        return {"pending": int(pending), "gave_up": int(failed)}

    # ---- webhooks

    def webhooks(self) -> list[dict[str, Any]]:
        with self._db.connect() as conn:
            return [
                {"id": r["id"], "url": r["url"], "events": r["events"].split(","), "created_at": r["created_at"]}
                for r in conn.execute(select(webhooks).order_by(webhooks.c.id)).mappings()
            ]

    def add_webhook(self, url: str, event_types: Sequence[str], now: float) -> int:
        with self._db.unit_of_work() as uow:
            key = uow.conn.execute(
                insert(webhooks).values(url=url, events=",".join(event_types), created_at=now)
            ).inserted_primary_key
            assert key is not None
            return int(key[0])

    def remove_webhook(self, hook_id: int) -> bool:
        with self._db.unit_of_work() as uow:
            return bool(uow.conn.execute(delete(webhooks).where(webhooks.c.id == hook_id)).rowcount)
