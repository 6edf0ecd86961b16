"""The job store on SQLAlchemy Core (SQLite in WAL mode by default).

State changes are compare-and-set updates (`WHERE state = :expected`) checked against
the transition table, each recorded as an event in the same transaction, so concurrent
writers (API threads, the scheduler loop) can never overwrite each other's transition.
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
from sqlalchemy import Connection, bindparam, create_engine, event, func, insert, select, update
from sqlalchemy.engine import Engine as SAEngine

from kran.adapters.store.disk_full import DiskFullHook
from kran.adapters.store.job_deps import dependents, resolve_blocked
from kran.adapters.store.job_inserts import IDEMPOTENCY_S, insert_rows
from kran.adapters.store.reads import JobReads
from kran.adapters.store.tables import attempts, events, idempotency_keys, jobs, meta, users
from kran.domain.jobs import JobSpec
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
    def _tx(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # ---- meta

    def get_or_set_meta(self, key: str, default: str) -> str:
        with self._tx() as conn:
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
            ids, failed = self._insert_rows(accepted, now) if accepted else ([], 0)
            self._queued_changed(len(ids) - failed)
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

    def _insert_rows(self, groups: Sequence[Submission], now: float) -> tuple[list[int], int]:
        with self._tx() as conn:
            return insert_rows(conn, groups, now)

    def resolve_all_blocked(self, now: float) -> int:
        """Re-decide every blocked job (at start: nothing is lost if a decision was missed)."""
        with self._write_lock:
            with self._tx() as conn:
                ids = {
                    r[0]
                    for r in conn.execute(
                        select(jobs.c.id).where(jobs.c.state == JobState.QUEUED, jobs.c.blocked.is_(True))
                    )
                }
                ended = resolve_blocked(conn, ids, now)
            self._queued_changed(-ended)
            return ended

    def start_attempts(self, assignments: Sequence[Assignment], now: float) -> list[StartedAttempt]:
        """queued -> starting for each assignment whose job is still queued."""
        started: list[StartedAttempt] = []
        if not assignments:
            return started
        check_transition(JobState.QUEUED, JobState.STARTING)
        with self._write_lock:
            self._start_attempts(assignments, now, started)
            self._queued_changed(-len(started))
        return started

    def _start_attempts(self, assignments: Sequence[Assignment], now: float, started: list[StartedAttempt]) -> None:
        with self._tx() as conn:
            by_id = {a.job_id: a for a in assignments}
            rows = conn.execute(
                select(jobs.c.id, jobs.c.attempts, jobs.c.spec, jobs.c.queued_since, users.c.id)
                .select_from(jobs.outerjoin(users, users.c.name == jobs.c.owner))
                .where(jobs.c.id.in_(list(by_id)), jobs.c.state == JobState.QUEUED)
            ).all()
            job_rows, att_rows, ev_rows = [], [], []
            for job_id, n, spec_json, queued_since, owner_id in rows:
                a = by_id[job_id]
                number, alloc = n + 1, a.allocation
                res = {
                    "alloc_millicpus": alloc.millicpus,
                    "alloc_mem_mb": alloc.mem_mb,
                    "alloc_gpus": alloc.gpus,
                    "alloc_disk_mb": alloc.disk_mb,
                }
                job_rows.append(
                    {"b_job": job_id, "b_n": number, "b_node": a.node_id, **{f"b_{k}": v for k, v in res.items()}}
                )
                att_rows.append(
                    {
                        "job_id": job_id,
                        "number": number,
                        "state": JobState.STARTING,
                        "node": a.node_id,
                        "handle": None,
                        "created_at": now,
                        "collected": False,
                        "queued_at": queued_since,
                        **res,
                    }
                )
                ev_rows.append(
                    {
                        "job_id": job_id,
                        "attempt": number,
                        "from_state": "queued",
                        "to_state": "starting",
                        "reason": f"placed on {a.node_id}",
                        "at": now,
                    }
                )
                started.append(
                    StartedAttempt(job_id, number, a.node_id, alloc, JobSpec.from_json(json.loads(spec_json)), owner_id)
                )
            if job_rows:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == bindparam("b_job"))
                    .values(
                        state=JobState.STARTING,
                        attempts=bindparam("b_n"),
                        node=bindparam("b_node"),
                        reason=None,
                        pull=None,  # a pull cut short by a server stop is not this attempt's
                        **{
                            k: bindparam(f"b_{k}")
                            for k in ("alloc_millicpus", "alloc_mem_mb", "alloc_gpus", "alloc_disk_mb")
                        },
                    ),
                    job_rows,
                )
                conn.execute(insert(attempts), att_rows)
                conn.execute(insert(events), ev_rows)

    def mark_running(self, items: Sequence[tuple[int, int, str]], now: float) -> list[float | None]:
        """starting -> running with the engine handle, for (job_id, attempt, handle).

        Only the scheduler loop moves attempts out of starting, so the batch normally
        applies whole; a stale item is left out. Returns when each moved attempt was queued."""
        check_transition(JobState.STARTING, JobState.RUNNING)
        if not items:
            return []
        with self._tx() as conn:
            keys = {(j, n) for j, n, _ in items}
            current = {
                (r[0], r[1]): r[2]
                for r in conn.execute(
                    select(attempts.c.job_id, attempts.c.number, attempts.c.queued_at)
                    .join(jobs, (jobs.c.id == attempts.c.job_id) & (jobs.c.attempts == attempts.c.number))
                    .where(
                        attempts.c.job_id.in_([j for j, _ in keys]),
                        attempts.c.state == JobState.STARTING,
                        jobs.c.state == JobState.STARTING,
                    )
                )
            }
            rows = [(j, n, h) for j, n, h in items if (j, n) in current]
            if not rows:
                return []
            conn.execute(
                update(attempts)
                .where(attempts.c.job_id == bindparam("b_job"), attempts.c.number == bindparam("b_n"))
                .values(state=JobState.RUNNING, handle=bindparam("b_handle"), started_at=now),
                [{"b_job": j, "b_n": n, "b_handle": h} for j, n, h in rows],
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == bindparam("b_job"))
                .values(state=JobState.RUNNING, started_at=func.coalesce(jobs.c.started_at, now)),
                [{"b_job": j} for j, _, _ in rows],
            )
            conn.execute(
                insert(events),
                [
                    {
                        "job_id": j,
                        "attempt": n,
                        "from_state": "starting",
                        "to_state": "running",
                        "reason": None,
                        "at": now,
                    }
                    for j, n, _ in rows
                ],
            )
            return [current[(j, n)] for j, n, _ in rows]

    def settle(self, items: Sequence[AttemptOutcome], now: float) -> list[tuple[int, JobState]]:
        """End attempts and move their jobs on; returns (job_id, new state) of those changed.
        Items whose job has moved past that attempt are skipped."""
        if not items:
            return []
        with self._write_lock:
            changed, dep_ended = self._settle(items, now)
            self._queued_changed(sum(1 for _, state in changed if state == JobState.QUEUED) - dep_ended)
            return changed

    def _settle(self, items: Sequence[AttemptOutcome], now: float) -> tuple[list[tuple[int, JobState]], int]:
        with self._tx() as conn:
            current = {
                r[0]: (JobState(r[1]), r[2])
                for r in conn.execute(
                    select(jobs.c.id, jobs.c.state, jobs.c.attempts).where(jobs.c.id.in_([i.job_id for i in items]))
                )
            }
            att_rows, requeue, final, ev_rows, changed = [], [], [], [], []
            for item in items:
                job_id, number, s, exit_code = item.job_id, item.attempt, item.settlement, item.exit_code
                state, attempt = current.get(job_id, (JobState.QUEUED, -1))
                if attempt != number or not state.is_active:
                    continue
                check_transition(state, s.job_state)
                current[job_id] = (s.job_state, attempt)
                att_rows.append(
                    {
                        "b_job": job_id,
                        "b_n": number,
                        "b_state": s.attempt_state,
                        "b_exit": exit_code,
                        "b_reason": s.reason,
                        "b_cpu": item.usage.cpu_seconds,
                        "b_mem": item.usage.peak_memory_bytes,
                        "b_io": item.usage.io_bytes,
                    }
                )
                row = {"b_job": job_id, "b_state": s.job_state, "b_reason": s.reason, "b_exit": exit_code}
                if s.job_state == JobState.QUEUED:
                    requeue.append({**row, "b_nb": now + (s.retry_in_s or 0)})
                else:
                    final.append(row)
                ev_rows.append(
                    {
                        "job_id": job_id,
                        "attempt": number,
                        "from_state": state.value,
                        "to_state": s.job_state.value,
                        "reason": s.reason,
                        "at": now,
                    }
                )
                changed.append((job_id, s.job_state))
            if not att_rows:
                return [], 0
            conn.execute(
                update(attempts)
                .where(attempts.c.job_id == bindparam("b_job"), attempts.c.number == bindparam("b_n"))
                .values(
                    state=bindparam("b_state"),
                    finished_at=now,
                    exit_code=bindparam("b_exit"),
                    reason=bindparam("b_reason"),
                    collected=True,
                    cpu_seconds=bindparam("b_cpu"),
                    peak_memory_bytes=bindparam("b_mem"),
                    io_bytes=bindparam("b_io"),
                ),
                att_rows,
            )
            common: dict[str, Any] = {
                "state": bindparam("b_state"),
                "reason": bindparam("b_reason"),
                "exit_code": bindparam("b_exit"),
            }
            if requeue:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == bindparam("b_job"))
                    .values(
                        **common,
                        queued_since=now,
                        not_before=bindparam("b_nb"),
                        node=None,
                        alloc_millicpus=None,
                        alloc_mem_mb=None,
                        alloc_gpus=None,
                        alloc_disk_mb=None,
                    ),
                    requeue,
                )
            if final:
                conn.execute(
                    update(jobs).where(jobs.c.id == bindparam("b_job")).values(**common, finished_at=now), final
                )
            conn.execute(insert(events), ev_rows)
            ended = {j for j, state in changed if state.is_final}
            return changed, resolve_blocked(conn, dependents(conn, ended), now)

    # ---- kill

    def request_kill(self, job_ids: Sequence[int], reason: str, now: float) -> dict[int, JobState]:
        """Queued jobs end as killed at once; active ones are flagged for the monitor.
        Returns each found job's state after the call."""
        with self._write_lock:
            out, dequeued = self._request_kill(job_ids, reason, now)
            self._queued_changed(-dequeued)
            return out

    def _request_kill(self, job_ids: Sequence[int], reason: str, now: float) -> tuple[dict[int, JobState], int]:
        out: dict[int, JobState] = {}
        dequeued = 0
        with self._tx() as conn:
            for job_id in job_ids:
                row = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).first()
                if row is None:
                    continue
                state = JobState(row[0])
                if state == JobState.QUEUED and reason == "user":
                    conn.execute(
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED)
                        .values(state=JobState.KILLED, finished_at=now, reason="killed on request", kill_reason=reason)
                    )
                    conn.execute(
                        insert(events).values(
                            job_id=job_id,
                            attempt=None,
                            from_state="queued",
                            to_state="killed",
                            reason="killed on request",
                            at=now,
                        )
                    )
                    state = JobState.KILLED
                    dequeued += 1
                elif state.is_active:
                    conn.execute(
                        update(jobs).where(jobs.c.id == job_id, jobs.c.kill_reason.is_(None)).values(kill_reason=reason)
                    )
                out[job_id] = state
            killed = {j for j, state in out.items() if state == JobState.KILLED}
            dequeued += resolve_blocked(conn, dependents(conn, killed), now)
        return out, dequeued
