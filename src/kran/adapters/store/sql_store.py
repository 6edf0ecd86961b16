"""The job store on SQLAlchemy Core (SQLite in WAL mode by default).

State changes are compare-and-set updates (`WHERE id AND state AND attempt` as decided)
checked against the transition table, each recorded as an event in the same transaction:
a writer that lost a race changes nothing and hears of it (StaleState), whatever the
lock. Every store module writes through `unit_of_work()`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, func, insert, select
from sqlalchemy.engine import Engine as SAEngine

from kran.adapters.store import transitions
from kran.adapters.store.disk_full import DiskFullHook
from kran.adapters.store.job_deps import resolve_blocked
from kran.adapters.store.job_inserts import IDEMPOTENCY_S, insert_rows
from kran.adapters.store.reads import JobReads
from kran.adapters.store.tables import idempotency_keys, jobs, meta
from kran.adapters.store.transitions import UnitOfWork
from kran.domain.placement import Assignment
from kran.domain.records import (
    AttemptOutcome,
    StartedAttempt,
    Submission,
)
from kran.domain.states import JobState, check_transition
from kran.errors import InvalidInput, KranError, QueueFull


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class SqlStore(JobReads):
    def __init__(self, url: str) -> None:
        self.engine: SAEngine = create_engine(url, pool_size=20, max_overflow=20)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._disk_full = DiskFullHook(self.engine)
        self._write_lock = threading.RLock()
        # Jobs in state queued, kept by the write methods (this process is the only writer:
        # the data dir is locked), so the queue bound costs no COUNT per submit.
        self._queued: int | None = None

    @staticmethod
    def for_data_dir(data_dir: Path) -> SqlStore:
        return SqlStore(f"sqlite:///{data_dir / 'kran.db'}")

    def on_storage_full(self, listener: Callable[[str], None]) -> None:
        """`listener(message)` hears of every write refused for lack of space."""
        self._disk_full.listeners.append(listener)

    def migrate(self, revision: str = "head") -> None:
        cfg = Config(str(Path(__file__).with_name("alembic.ini")))
        with self._write_lock, self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """One transaction for every store module: all of it is committed or none.

        Writers take turns on a lock: SQLite has one writer at a time anyway, and a turn
        beats SQLITE_BUSY. Correctness does not rest on it: every job state change is a
        compare-and-set on (id, state, attempt), so a stale one changes nothing (StaleState)."""
        with self._write_lock:
            with self.engine.begin() as conn:
                uow = UnitOfWork(conn)
                yield uow
            self._queued_changed(uow.queued)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # ---- meta

    def get_or_set_meta(self, key: str, default: str) -> str:
        with self.unit_of_work() as uow:
            conn = uow.conn
            row = conn.execute(select(meta.c.value).where(meta.c.key == key)).first()
            if row:
                return str(row[0])
            conn.execute(insert(meta).values(key=key, value=default))
            return default

    # ---- submit

    def insert_job_groups(
        self, groups: Sequence[Submission], now: float, queue_max: int
    ) -> list[list[int] | KranError]:
        """Several submissions in one transaction, each all or nothing: refused with QueueFull
        over the queue bound, with InvalidInput when it depends on unknown jobs."""
        with self._write_lock:
            waiting = self.queued_count()
            known = self._existing_ids({i for g in groups for s in g.specs for i in s.after + s.after_any})
            stored = self._stored_keys(groups, now)
            accepted: list[Submission] = []
            verdicts: list[KranError | list[int] | int | None] = []  # int: as the earlier group
            first_with: dict[tuple[str, str], int] = {}
            for n, group in enumerate(groups):
                specs = group.specs
                unknown = sorted({i for s in specs for i in s.after + s.after_any} - known)
                key = (group.owner, group.idempotency_key) if group.idempotency_key else None
                if key in stored or key in first_with:
                    digest, earlier = stored[key] if key in stored else (groups[first_with[key]].request_digest, None)
                    if digest != group.request_digest:
                        verdicts.append(
                            InvalidInput("this Idempotency-Key was used for another request: use a new key", "key")
                        )
                    else:  # a retry: what the first request stored
                        verdicts.append(earlier if earlier is not None else first_with[key])
                elif unknown:
                    verdicts.append(InvalidInput(f"after: unknown job {unknown[0]}", "after"))
                elif waiting + len(specs) > queue_max:
                    verdicts.append(
                        QueueFull(
                            f"queue is full: {waiting} jobs waiting, limit {queue_max}; "
                            f"{len(specs)} more refused, nothing stored"
                        )
                    )
                else:
                    waiting += len(specs)
                    accepted.append(group)
                    verdicts.append(None)
                    if key:
                        first_with[key] = n
            ids = self._insert_rows(accepted, now) if accepted else []
        out: list[list[int] | KranError] = []
        pos = 0
        for group, verdict in zip(groups, verdicts, strict=True):
            if verdict is None:
                out.append(ids[pos : pos + len(group.specs)])
                pos += len(group.specs)
            elif isinstance(verdict, int):
                out.append(out[verdict])  # the same key earlier in this batch
            else:
                out.append(verdict)
        return out

    def _stored_keys(self, groups: Sequence[Submission], now: float) -> dict[tuple[str, str], tuple[str, list[int]]]:
        """(owner, key) -> (request digest, job ids) of the keys given, stored within a day."""
        keyed = [(g.owner, g.idempotency_key) for g in groups if g.idempotency_key]
        if not keyed:
            return {}
        out = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(idempotency_keys).where(
                    idempotency_keys.c.key.in_([k for _, k in keyed]),
                    idempotency_keys.c.created_at > now - IDEMPOTENCY_S,
                )
            )
            for r in rows:
                if (r.owner, r.key) in keyed:
                    out[(r.owner, r.key)] = (r.digest, [int(i) for i in json.loads(r.job_ids)])
        return out

    def _queued_changed(self, delta: int) -> None:
        if self._queued is not None:
            self._queued += delta

    def queued_count(self) -> int:
        with self._write_lock:
            if self._queued is None:
                with self.engine.connect() as conn:
                    self._queued = int(
                        conn.execute(
                            select(func.count()).select_from(jobs).where(jobs.c.state == JobState.QUEUED)
                        ).scalar_one()
                    )
            return self._queued

    def _existing_ids(self, ids: set[int]) -> set[int]:
        if not ids:
            return set()
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(jobs.c.id).where(jobs.c.id.in_(ids)))}

    def _insert_rows(self, groups: Sequence[Submission], now: float) -> list[int]:
        with self.unit_of_work() as uow:
            ids, failed = insert_rows(uow.conn, groups, now)
            uow.queued = len(ids) - failed
        return ids

    def resolve_all_blocked(self, now: float) -> int:
        """Re-decide every blocked job (at start: nothing is lost if a decision was missed)."""
        with self.unit_of_work() as uow:
            conn = uow.conn
            ids = {
                r[0]
                for r in conn.execute(
                    select(jobs.c.id).where(jobs.c.state == JobState.QUEUED, jobs.c.blocked.is_(True))
                )
            }
            ended = resolve_blocked(conn, ids, now)
            uow.queued = -ended
        return ended

    def start_attempts(self, assignments: Sequence[Assignment], now: float) -> list[StartedAttempt]:
        """queued -> starting for each assignment whose job is still queued."""
        if not assignments:
            return []
        check_transition(JobState.QUEUED, JobState.STARTING)
        with self.unit_of_work() as uow:
            return transitions.start(uow, assignments, now)

    def mark_running(self, items: Sequence[tuple[int, int, str]], now: float) -> list[float | None]:
        """starting -> running with the engine handle, for (job_id, attempt, handle).
        Returns when each moved attempt was queued."""
        with self.unit_of_work() as uow:
            return transitions.mark_running(uow, items, now)

    def settle(self, items: Sequence[AttemptOutcome], now: float) -> list[tuple[int, JobState]]:
        """End attempts and move their jobs on; returns (job_id, new state) of those changed.
        Items whose job has moved past that attempt are skipped."""
        if not items:
            return []
        with self.unit_of_work() as uow:
            return transitions.settle(uow, items, now)

    # ---- kill

    def request_kill(self, job_ids: Sequence[int], reason: str, now: float) -> dict[int, JobState]:
        """Queued jobs end as killed at once; active ones are flagged for the monitor.
        Returns each found job's state after the call."""
        with self.unit_of_work() as uow:
            return transitions.request_kill(uow, job_ids, reason, now)
