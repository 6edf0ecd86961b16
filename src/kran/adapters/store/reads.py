"""Reads of the job store: records, lists, queue order, counts, facts for reports.

A mixin of SqlStore (it needs only `self.db`); the writes, with their transactions
and the queued-jobs number, stay in sql_store.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, case, func, select

from kran.adapters.store.database import Database
from kran.adapters.store.tables import array_deps, arrays, associations, attempts, events, job_deps, job_labels, jobs
from kran.domain.accounting import APP_LABEL, AttemptFacts, Usage
from kran.domain.auth import Principal, Role
from kran.domain.dependencies import Dependency
from kran.domain.jobs import JobSpec
from kran.domain.records import (
    COUNT_CAP,
    SORTABLE,
    ActiveAttempt,
    AttemptRecord,
    EventRecord,
    JobFind,
    JobRecord,
    QueuedRow,
)
from kran.domain.resources import Resources
from kran.domain.states import JobState


def of_active_attempts(*columns: Any) -> Select[Any]:
    """Columns of the active (starting, running) attempts and their jobs."""
    return (
        select(*columns)
        .join(jobs, jobs.c.id == attempts.c.job_id)
        .where(attempts.c.state.in_([JobState.STARTING, JobState.RUNNING]))
    )


# Read by every scheduler pass: built once (building a statement cost as much as running it)
_ALLOCATED = (
    select(
        attempts.c.node,
        func.sum(attempts.c.alloc_millicpus),
        func.sum(attempts.c.alloc_mem_mb),
        func.sum(attempts.c.alloc_gpus),
        func.sum(attempts.c.alloc_disk_mb),
    )
    .where(attempts.c.state.in_([JobState.STARTING, JobState.RUNNING]))
    .group_by(attempts.c.node)
)
_ACTIVE = of_active_attempts(
    attempts.c.job_id,
    attempts.c.number,
    attempts.c.state,
    attempts.c.handle,
    attempts.c.created_at,
    attempts.c.started_at,
    jobs.c.timeout_s,
    jobs.c.kill_reason,
    jobs.c.retries,
    attempts.c.queued_at,
    jobs.c.requeues,
    attempts.c.alloc_disk_mb,
)


class JobReads:
    db: Database

    def dependencies_of(self, job_id: int) -> list[Dependency]:
        """The jobs and arrays a job waits on, with their states (an array's: running while
        active, then its outcome)."""
        with self.db.connect() as conn:
            on_jobs = [
                Dependency(r[0], r[1], JobState(r[2]))
                for r in conn.execute(
                    select(job_deps.c.dep_id, job_deps.c.kind, jobs.c.state)
                    .join(jobs, jobs.c.id == job_deps.c.dep_id)
                    .where(job_deps.c.job_id == job_id)
                )
            ]
            on_arrays = [
                Dependency(r[0], r[1], JobState(r[3]) if r[2] == "done" and r[3] else JobState.RUNNING, "array")
                for r in conn.execute(
                    select(array_deps.c.array_id, array_deps.c.kind, arrays.c.state, arrays.c.outcome)
                    .join(arrays, arrays.c.id == array_deps.c.array_id)
                    .where(array_deps.c.job_id == job_id)
                )
            ]
        return on_jobs + on_arrays

    # ---- reads

    def array_owner(self, array_id: int) -> tuple[str, str | None] | None:
        """(owner, submitted_by) of an array, or None."""
        with self.db.connect() as conn:
            r = conn.execute(select(arrays.c.owner, arrays.c.submitted_by).where(arrays.c.id == array_id)).first()
        return None if r is None else (r[0], r[1])

    def get_job(self, job_id: int) -> JobRecord | None:
        with self.db.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
            if row is None:
                return None
            att = (
                conn.execute(select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.number))
                .mappings()
                .all()
            )
        return _job_record(row, [_attempt_record(a) for a in att])

    def list_jobs(
        self,
        states: Sequence[JobState] = (),
        labels: dict[str, str] | None = None,
        owner: str | None = None,
        limit: int = 100,
        visible_to: Principal | None = None,
        tasks: bool = True,
    ) -> list[JobRecord]:
        q = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if not tasks:
            q = q.where(jobs.c.array_id.is_(None))
        if states:
            q = q.where(jobs.c.state.in_([s.value for s in states]))
        if owner is not None:
            q = q.where(jobs.c.owner == owner)
        if visible_to is not None and not visible_to.is_admin:
            q = q.where(_visible(visible_to))
        for k, v in (labels or {}).items():
            q = q.where(
                jobs.c.id.in_(select(job_labels.c.job_id).where(job_labels.c.key == k, job_labels.c.value == v))
            )
        with self.db.connect() as conn:
            return [_job_record(r, []) for r in conn.execute(q).mappings()]

    def page_jobs(self, find: JobFind, visible_to: Principal) -> tuple[list[JobRecord], int]:
        """One page of jobs by the dashboard's filters and sort, and how many match (counted
        up to COUNT_CAP: an exact count of a million rows costs more than it tells)."""
        conds: list[Any] = []
        if find.states:
            conds.append(jobs.c.state.in_([s.value for s in find.states]))
        if find.owner:
            conds.append(jobs.c.owner == find.owner)
        if find.app:
            conds.append(jobs.c.app == find.app)
        if find.name:
            escaped = find.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(jobs.c.name.like(f"%{escaped}%", escape="\\"))
        if not visible_to.is_admin:
            conds.append(_visible(visible_to))
        for k, v in find.labels.items():
            conds.append(
                jobs.c.id.in_(select(job_labels.c.job_id).where(job_labels.c.key == k, job_labels.c.value == v))
            )
        keys = [getattr(jobs.c, SORTABLE[find.sort])] + ([jobs.c.id] if find.sort != "id" else [])
        order = [k.desc() if find.descending else k.asc() for k in keys]  # one direction: the index's order
        q = select(jobs).where(*conds).order_by(*order).offset(find.offset).limit(find.limit)
        matching = select(jobs.c.id).where(*conds).limit(COUNT_CAP + 1).subquery()
        with self.db.connect() as conn:
            rows = [_job_record(r, []) for r in conn.execute(q).mappings()]
            total = int(conn.execute(select(func.count()).select_from(matching)).scalar_one())
        return rows, total

    def events_with_owners(self, after_id: int, limit: int) -> list[tuple[EventRecord, str, str | None]]:
        """Events after an id with their job's owner and submitter (the web feed's one read)."""
        q = (
            select(events, jobs.c.owner, jobs.c.submitted_by)
            .join(jobs, jobs.c.id == events.c.job_id)
            .where(events.c.id > after_id)
            .order_by(events.c.id)
            .limit(limit)
        )
        with self.db.connect() as conn:
            rows = conn.execute(q).all()
        return [(EventRecord(*r[:7]), r[7], r[8]) for r in rows]

    def queued_by_priority_class(self) -> dict[str, int]:
        cls = case((jobs.c.priority > 0, "high"), (jobs.c.priority < 0, "low"), else_="normal")
        q = select(cls, func.count()).where(jobs.c.state == JobState.QUEUED).group_by(cls)
        with self.db.connect() as conn:
            return {str(k): int(n) for k, n in conn.execute(q)}

    def counts_by_state(self) -> dict[str, int]:
        with self.db.connect() as conn:
            rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
        return {str(s): int(n) for s, n in rows}

    def queue_position(self, job: JobRecord) -> int:
        """How many queued jobs come before this one in queue order."""
        with self.db.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(jobs)
                    .where(
                        jobs.c.state == JobState.QUEUED,
                        (jobs.c.priority > job.priority) | ((jobs.c.priority == job.priority) & (jobs.c.id < job.id)),
                    )
                ).scalar_one()
            )

    def events_after(
        self, after_id: int, limit: int = 500, job_id: int | None = None, visible_to: Principal | None = None
    ) -> list[EventRecord]:
        q = select(events).where(events.c.id > after_id).order_by(events.c.id).limit(limit)
        if job_id is not None:
            q = q.where(events.c.job_id == job_id)
        if visible_to is not None and not visible_to.is_admin:
            q = q.where(events.c.job_id.in_(select(jobs.c.id).where(_visible(visible_to))))
        with self.db.connect() as conn:
            return [EventRecord(**dict(r)) for r in conn.execute(q).mappings()]

    def attempt_facts(
        self, since: float | None, until: float | None, user: str | None = None, app: str | None = None
    ) -> list[AttemptFacts]:
        """Ended attempts (finished in [since, until)) with their job, for usage reports."""
        app_label = job_labels.alias("app_label")
        q = (
            select(
                attempts.c.job_id,
                jobs.c.owner,
                app_label.c.value,
                jobs.c.image,
                jobs.c.state,
                attempts.c.finished_at,
                attempts.c.started_at,
                attempts.c.cpu_seconds,
                attempts.c.alloc_mem_mb,
                attempts.c.alloc_gpus,
                attempts.c.number,
                jobs.c.attempts,
                associations.c.account,
                jobs.c.array_id,
            )
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .join(app_label, (app_label.c.job_id == jobs.c.id) & (app_label.c.key == APP_LABEL), isouter=True)
            .join(associations, associations.c.id == jobs.c.assoc, isouter=True)
            .where(attempts.c.finished_at.is_not(None))
        )
        if since is not None:
            q = q.where(attempts.c.finished_at >= since)
        if until is not None:
            q = q.where(attempts.c.finished_at < until)
        if user is not None:
            q = q.where(jobs.c.owner == user)
        if app is not None:
            q = q.where(app_label.c.value == app)
        with self.db.connect() as conn:
            return [
                AttemptFacts(
                    job_id=r[0],
                    user=r[1],
                    app=r[2],
                    image=r[3],
                    job_state=r[4],
                    finished_at=r[5],
                    wall_seconds=max(0.0, r[5] - r[6]) if r[6] is not None else 0.0,
                    cpu_seconds=r[7],
                    alloc_mem_mb=r[8],
                    alloc_gpus=r[9],
                    last_attempt=r[10] == r[11] and JobState(r[4]).is_final,
                    account=r[12],
                    array_id=r[13],
                )
                for r in conn.execute(q)
            ]

    def last_event_id(self) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())

    # ---- dispatch

    def queued_in_order(self, limit: int, offset: int = 0) -> list[QueuedRow]:
        q = (
            select(*QUEUED_COLUMNS)
            .where(jobs.c.state == JobState.QUEUED, jobs.c.blocked.is_(False))
            .order_by(jobs.c.priority.desc(), jobs.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self.db.connect() as conn:
            return [QueuedRow(*r) for r in conn.execute(q)]

    def allocated_by_node(self) -> dict[str, Resources]:
        with self.db.connect() as conn:
            return {r[0]: Resources(int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in conn.execute(_ALLOCATED)}

    def active_attempts(self) -> list[ActiveAttempt]:
        with self.db.connect() as conn:
            return [
                ActiveAttempt(r[0], r[1], JobState(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])
                for r in conn.execute(_ACTIVE)
            ]


QUEUED_COLUMNS = (
    jobs.c.id,
    jobs.c.spec,
    jobs.c.queued_since,
    jobs.c.not_before,
    jobs.c.priority,
    jobs.c.assoc,
    jobs.c.owner,
    jobs.c.app,
)


def _visible(who: Principal) -> Any:
    """Jobs a non-admin may see: their own, and for a service those it submitted."""
    cond = jobs.c.owner == who.user
    if who.role == Role.SERVICE:
        cond = cond | (jobs.c.submitted_by == who.user)
    return cond


def _resources(row: Any, prefix: str) -> Resources | None:
    if row[f"{prefix}millicpus"] is None:
        return None
    return Resources(row[f"{prefix}millicpus"], row[f"{prefix}mem_mb"], row[f"{prefix}gpus"], row[f"{prefix}disk_mb"])


def _attempt_record(r: Any) -> AttemptRecord:
    alloc = _resources(r, "alloc_")
    assert alloc is not None
    return AttemptRecord(
        job_id=r["job_id"],
        number=r["number"],
        state=JobState(r["state"]),
        node=r["node"],
        handle=r["handle"],
        allocation=alloc,
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        exit_code=r["exit_code"],
        reason=r["reason"],
        collected=bool(r["collected"]),
        queued_at=r["queued_at"],
        usage=Usage(r["cpu_seconds"], r["peak_memory_bytes"], r["io_bytes"]),
    )


def _job_record(r: Any, att: list[AttemptRecord]) -> JobRecord:
    return JobRecord(
        id=r["id"],
        owner=r["owner"],
        submitted_by=r["submitted_by"],
        name=r["name"],
        state=JobState(r["state"]),
        priority=r["priority"],
        spec=JobSpec.from_json(json.loads(r["spec"])),
        submitted_at=r["submitted_at"],
        queued_since=r["queued_since"],
        not_before=r["not_before"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        attempts=r["attempts"],
        exit_code=r["exit_code"],
        reason=r["reason"],
        kill_reason=r["kill_reason"],
        node=r["node"],
        allocation=_resources(r, "alloc_"),
        attempt_list=att,
        files_expired=bool(r["files_expired"]),
        pull=json.loads(r["pull"]) if r["pull"] else None,
    )
