"""The job store on SQLAlchemy Core (SQLite in WAL mode by default, or PostgreSQL).

State changes are compare-and-set updates (`WHERE id AND state AND attempt` as decided)
checked against the transition table, each recorded as an event in the same transaction:
a writer that lost a race (another thread, another server) changes nothing and hears of
it (StaleState). Every store module writes through its Database's `unit_of_work()`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from kran.adapters.store import transitions
from kran.adapters.store.associations import QueuedLimits, with_accounts
from kran.adapters.store.database import Database
from kran.adapters.store.job_deps import resolve_blocked
from kran.adapters.store.job_inserts import IDEMPOTENCY_S, insert_rows
from kran.adapters.store.queued_jobs import QueuedJobs
from kran.adapters.store.reads import JobReads
from kran.adapters.store.tables import idempotency_keys, jobs, meta
from kran.domain.fairshare import UsagePolicy
from kran.domain.placement import Assignment
from kran.domain.records import (
    AttemptOutcome,
    StartedAttempt,
    Submission,
)
from kran.domain.states import JobState, check_transition
from kran.errors import InvalidInput, KranError, QueueFull


class SqlStore(JobReads):
    """The jobs. `db` is public: the other store modules (schedules, apps, ...) write
    through its units of work, so that one transaction may span them."""

    def __init__(self, db: Database | str) -> None:
        self.db = db if isinstance(db, Database) else Database(db)
        self._queued = QueuedJobs(self.db)
        self.queued_jobs = self._queued  # the queue bound's count, for other store modules (arrays)
        self.usage_policy = UsagePolicy()  # fair share: how attempts are charged (bootstrap sets it)

    @staticmethod
    def for_data_dir(data_dir: Path) -> SqlStore:
        return SqlStore(Database.for_data_dir(data_dir))

    def on_storage_full(self, listener: Callable[[str], None]) -> None:
        """`listener(message)` hears of every write refused for lack of space."""
        self.db.on_storage_full(listener)

    def migrate(self, revision: str = "head") -> None:
        self.db.migrate(revision)

    def close(self) -> None:
        self.db.close()

    def ping(self) -> None:
        self.db.ping()

    # ---- meta

    def get_or_set_meta(self, key: str, default: str) -> str:
        """The value stored under key; else `default`, stored. Of two servers setting it at
        once, the second gets the first's."""
        q = select(meta.c.value).where(meta.c.key == key)
        try:
            with self.db.unit_of_work() as uow:
                row = uow.conn.execute(q).first()
                if row:
                    return str(row[0])
                uow.conn.execute(insert(meta).values(key=key, value=default))
                return default
        except IntegrityError:  # the other server's insert came first
            with self.db.connect() as conn:
                return str(conn.execute(q).scalar_one())

    # ---- submit

    def insert_job_groups(
        self, groups: Sequence[Submission], now: float, queue_max: int
    ) -> list[list[int] | KranError]:
        """Several submissions in one transaction, each all or nothing: refused with QueueFull
        over the queue bound, with InvalidInput when it depends on unknown jobs."""
        with self.db.unit_of_work() as uow:
            waiting = self._queued.before_insert(uow)  # first: it may wait for another server's submit
            known = _existing_ids(uow.conn, {i for g in groups for s in g.specs for i in s.waits_on})
            stored = _stored_keys(uow.conn, groups, now)
            groups = with_accounts(uow.conn, groups)
            per_scope = QueuedLimits(uow.conn)
            accepted: list[Submission] = []
            verdicts: list[KranError | list[int] | int | None] = []  # int: as the earlier group
            first_with: dict[tuple[str, str], int] = {}
            for n, group in enumerate(groups):
                specs = group.specs
                unknown = sorted({i for s in specs for i in s.waits_on} - known)
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
                elif (why := per_scope.refusal(group)) is not None:
                    verdicts.append(QueueFull(why))
                else:
                    waiting += len(specs)
                    per_scope.take(group)
                    accepted.append(group)
                    verdicts.append(None)
                    if key:
                        first_with[key] = n
            ids, failed = insert_rows(uow.conn, accepted, now) if accepted else ([], 0)
            uow.queued = len(ids) - failed
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

    def queued_count(self) -> int:
        return self._queued.now()

    def resolve_all_blocked(self, now: float) -> int:
        """Re-decide every blocked job (at start: nothing is lost if a decision was missed)."""
        with self.db.unit_of_work() as uow:
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
        with self.db.unit_of_work() as uow:
            return transitions.start(uow, assignments, now)

    def mark_running(self, items: Sequence[tuple[int, int, str]], now: float) -> list[float | None]:
        """starting -> running with the engine handle, for (job_id, attempt, handle).
        Returns when each moved attempt was queued."""
        with self.db.unit_of_work() as uow:
            return transitions.mark_running(uow, items, now)

    def settle(self, items: Sequence[AttemptOutcome], now: float) -> list[tuple[int, JobState]]:
        """End attempts and move their jobs on; returns (job_id, new state) of those changed.
        Items whose job has moved past that attempt are skipped."""
        if not items:
            return []
        with self.db.unit_of_work() as uow:
            return transitions.settle(uow, items, now, self.usage_policy)

    # ---- kill

    def request_kill(self, job_ids: Sequence[int], reason: str, now: float) -> dict[int, JobState]:
        """Queued jobs end as killed at once; active ones are flagged for the monitor.
        Returns each found job's state after the call."""
        with self.db.unit_of_work() as uow:
            return transitions.request_kill(uow, job_ids, reason, now)


def _stored_keys(
    conn: Connection, groups: Sequence[Submission], now: float
) -> dict[tuple[str, str], tuple[str, list[int]]]:
    """(owner, key) -> (request digest, job ids) of the keys given, stored within a day."""
    keyed = [(g.owner, g.idempotency_key) for g in groups if g.idempotency_key]
    if not keyed:
        return {}
    out = {}
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


def _existing_ids(conn: Connection, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return {r[0] for r in conn.execute(select(jobs.c.id).where(jobs.c.id.in_(ids)))}
