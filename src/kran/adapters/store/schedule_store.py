"""Schedules and their runs, on the job store's database and transactions.

A fire is one transaction: the jobs it submits, its run records (unique per schedule
and fire time) and the schedule's next fire time, compare-and-set against the value the
decision was made from. So each fire time yields at most one job, across restarts and
kill -9.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from kran.adapters.store.associations import QueuedLimits, with_accounts
from kran.adapters.store.job_inserts import insert_rows
from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import jobs, schedule_runs, schedules
from kran.domain.jobs import JobSpec
from kran.domain.records import PlannedRun, ScheduleRecord, ScheduleRun, Submission
from kran.domain.states import FINAL_STATES, JobState
from kran.errors import Conflict

_FINAL = [s.value for s in FINAL_STATES]


class SqlSchedules:
    def __init__(self, store: SqlStore) -> None:
        self._db = store.db

    def add(self, values: dict[str, Any]) -> ScheduleRecord:
        row = dict(values)
        row["spec"] = json.dumps(row["spec"].to_json())
        row["parents"] = json.dumps(row["parents"])
        row["seen"] = json.dumps(row.get("seen", {}))
        try:
            with self._db.unit_of_work() as uow:
                conn = uow.conn
                conn.execute(insert(schedules), row)
        except IntegrityError:  # names are per owner: only the owner's own name is taken
            raise Conflict(f"schedule {values['name']!r} exists already") from None
        got = self.get(values["owner"], values["name"])
        assert got is not None
        return got

    def get(self, owner: str, name: str) -> ScheduleRecord | None:
        q = select(schedules).where(schedules.c.owner == owner, schedules.c.name == name)
        with self._db.connect() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else _record(row)

    def all(self) -> list[ScheduleRecord]:
        q = select(schedules).order_by(schedules.c.owner, schedules.c.name)
        with self._db.connect() as conn:
            return [_record(r) for r in conn.execute(q).mappings()]

    def set_enabled(self, schedule_id: int, enabled: bool, next_fire_at: float | None) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            conn.execute(
                update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(enabled=enabled, next_fire_at=next_fire_at)
            )

    def delete(self, schedule_id: int) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            conn.execute(delete(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id))
            conn.execute(delete(schedules).where(schedules.c.id == schedule_id))

    def due(self, now: float) -> list[ScheduleRecord]:
        q = select(schedules).where(
            schedules.c.enabled.is_(True), schedules.c.next_fire_at.is_not(None), schedules.c.next_fire_at <= now
        )
        with self._db.connect() as conn:
            return [_record(r) for r in conn.execute(q).mappings()]

    def children(self) -> list[ScheduleRecord]:
        q = select(schedules).where(schedules.c.enabled.is_(True), schedules.c.kind == "after")
        with self._db.connect() as conn:
            return [_record(r) for r in conn.execute(q).mappings()]

    def record_fire(
        self,
        schedule: ScheduleRecord,
        runs: Sequence[PlannedRun],
        next_fire_at: float | None,
        fired: int,
        now: float,
        seen: dict[str, int] | None = None,
    ) -> list[int] | None:
        """Store the runs and move the schedule on, all or nothing. Returns the ids of the
        jobs submitted, or None when the schedule moved meanwhile (nothing stored)."""
        try:
            with self._db.unit_of_work() as uow:
                conn = uow.conn
                values: dict[str, Any] = {"next_fire_at": next_fire_at, "fired": schedules.c.fired + fired}
                if seen is not None:
                    values["seen"] = json.dumps(seen)
                cond = (
                    schedules.c.next_fire_at.is_(None)
                    if schedule.next_fire_at is None
                    else schedules.c.next_fire_at == schedule.next_fire_at
                )
                if (
                    conn.execute(update(schedules).where(schedules.c.id == schedule.id, cond).values(values)).rowcount
                    != 1
                ):
                    return None
                (planned,) = with_accounts(
                    conn, [Submission([r.spec for r in runs if r.spec is not None], schedule.owner)]
                )
                refused = QueuedLimits(conn).refusal(planned) if planned.specs else None
                if refused:  # a queued-jobs limit: the runs are skipped, saying so (as the queue bound)
                    runs = [replace(r, spec=None, reason=refused) if r.spec is not None else r for r in runs]
                specs = [r.spec for r in runs if r.spec is not None]
                ids, failed = insert_rows(conn, [Submission(specs, schedule.owner)], now) if specs else ([], 0)
                uow.queued = len(ids) - failed
                job_ids = iter(ids)
                if runs:
                    conn.execute(
                        insert(schedule_runs),
                        [
                            {
                                "schedule_id": schedule.id,
                                "fire_time": r.fire_time,
                                "job_id": next(job_ids) if r.spec is not None else None,
                                "state": "started" if r.spec is not None else "skipped",
                                "reason": r.reason,
                                "start_deadline": r.start_deadline,
                                "created_at": now,
                            }
                            for r in runs
                        ],
                    )
        except IntegrityError:  # that fire time was recorded already: nothing twice
            return None
        return ids

    def runs(self, schedule_id: int, limit: int = 100) -> list[ScheduleRun]:
        q = (
            select(schedule_runs, jobs.c.state.label("job_state"))
            .join(jobs, jobs.c.id == schedule_runs.c.job_id, isouter=True)
            .where(schedule_runs.c.schedule_id == schedule_id)
            .order_by(schedule_runs.c.id.desc())
            .limit(limit)
        )
        with self._db.connect() as conn:
            return [_run(r) for r in conn.execute(q).mappings()]

    def finished_runs_after(self, schedule_id: int, after_run_id: int) -> list[ScheduleRun]:
        q = (
            select(schedule_runs, jobs.c.state.label("job_state"))
            .join(jobs, jobs.c.id == schedule_runs.c.job_id)
            .where(
                schedule_runs.c.schedule_id == schedule_id,
                schedule_runs.c.id > after_run_id,
                jobs.c.state.in_(_FINAL),
            )
            .order_by(schedule_runs.c.id)
        )
        with self._db.connect() as conn:
            return [_run(r) for r in conn.execute(q).mappings()]

    def active_jobs(self, schedule_id: int) -> list[int]:
        q = (
            select(schedule_runs.c.job_id)
            .join(jobs, jobs.c.id == schedule_runs.c.job_id)
            .where(schedule_runs.c.schedule_id == schedule_id, jobs.c.state.not_in(_FINAL))
        )
        with self._db.connect() as conn:
            return [r[0] for r in conn.execute(q)]

    def overdue(self, now: float) -> list[tuple[int, int]]:
        """(run id, job id) of runs whose job is still queued past its start deadline."""
        q = (
            select(schedule_runs.c.id, schedule_runs.c.job_id)
            .join(jobs, jobs.c.id == schedule_runs.c.job_id)
            .where(
                schedule_runs.c.state == "started",
                schedule_runs.c.start_deadline < now,
                jobs.c.state == JobState.QUEUED,
            )
        )
        with self._db.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(q)]

    def mark_skipped(self, run_id: int, reason: str) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            conn.execute(
                update(schedule_runs).where(schedule_runs.c.id == run_id).values(state="skipped", reason=reason)
            )


def _record(r: Any) -> ScheduleRecord:
    return ScheduleRecord(
        id=r["id"],
        name=r["name"],
        owner=r["owner"],
        kind=r["kind"],
        expr=r["expr"],
        tz=r["tz"],
        start_at=r["start_at"],
        repeat=r["repeat"],
        max_lateness_s=r["max_lateness_s"],
        overlap=r["overlap"],
        catch_up=r["catch_up"],
        parents=json.loads(r["parents"]),
        after_mode=r["after_mode"],
        spec=JobSpec.from_json(json.loads(r["spec"])),
        enabled=bool(r["enabled"]),
        next_fire_at=r["next_fire_at"],
        fired=r["fired"],
        seen=json.loads(r["seen"]),
        created_at=r["created_at"],
    )


def _run(r: Any) -> ScheduleRun:
    return ScheduleRun(
        id=r["id"],
        schedule_id=r["schedule_id"],
        fire_time=r["fire_time"],
        job_id=r["job_id"],
        state=r["state"],
        reason=r["reason"],
        job_state=JobState(r["job_state"]) if r["job_state"] else None,
        created_at=r["created_at"],
    )
