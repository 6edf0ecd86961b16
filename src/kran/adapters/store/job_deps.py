"""Jobs waiting on other jobs: decided in the caller's transaction (see domain/dependencies)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from kran.adapters.store.tables import array_deps, arrays, events, job_deps, jobs
from kran.domain.dependencies import Dependency, dependency_verdict
from kran.domain.states import JobState, check_transition


def resolve_blocked(conn: Connection, job_ids: set[int], now: float) -> int:
    """Re-decide blocked queued jobs among job_ids: unblock the ready ones, end the ones
    whose dependency failed (and, in turn, their dependents). Returns how many ended."""
    ended = 0
    while job_ids:
        blocked = [
            r[0]
            for r in conn.execute(
                select(jobs.c.id).where(
                    jobs.c.id.in_(job_ids), jobs.c.state == JobState.QUEUED, jobs.c.blocked.is_(True)
                )
            )
        ]
        if not blocked:
            return ended
        by_job: dict[int, list[Dependency]] = {j: [] for j in blocked}
        for job_id, dep_id, kind, state in conn.execute(
            select(job_deps.c.job_id, job_deps.c.dep_id, job_deps.c.kind, jobs.c.state)
            .join(jobs, jobs.c.id == job_deps.c.dep_id)
            .where(job_deps.c.job_id.in_(blocked))
        ):
            by_job[job_id].append(Dependency(dep_id, kind, JobState(state)))
        for job_id, array_id, kind, state, outcome in conn.execute(
            select(array_deps.c.job_id, array_deps.c.array_id, array_deps.c.kind, arrays.c.state, arrays.c.outcome)
            .join(arrays, arrays.c.id == array_deps.c.array_id)
            .where(array_deps.c.job_id.in_(blocked))
        ):
            as_job = JobState(outcome) if state == "done" and outcome else JobState.RUNNING
            by_job[job_id].append(Dependency(array_id, kind, as_job, "array"))
        ready: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for job_id, deps in by_job.items():
            verdict = dependency_verdict(deps)
            if verdict.status == "ready":
                ready.append({"b_job": job_id})
            elif verdict.status == "failed":
                failed.append({"b_job": job_id, "b_reason": verdict.reason})
        if ready:
            conn.execute(update(jobs).where(jobs.c.id == bindparam("b_job")).values(blocked=False), ready)
        if failed:
            check_transition(JobState.QUEUED, JobState.DEPENDENCY_FAILED)
            conn.execute(
                update(jobs)
                .where(jobs.c.id == bindparam("b_job"))
                .values(state=JobState.DEPENDENCY_FAILED, finished_at=now, reason=bindparam("b_reason")),
                failed,
            )
            conn.execute(
                insert(events),
                [
                    {
                        "job_id": f["b_job"],
                        "attempt": None,
                        "from_state": "queued",
                        "to_state": JobState.DEPENDENCY_FAILED.value,
                        "reason": f["b_reason"],
                        "at": now,
                    }
                    for f in failed
                ],
            )
        ended += len(failed)
        job_ids = dependents(conn, {int(f["b_job"]) for f in failed})
    return ended


def dependents(conn: Connection, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return {r[0] for r in conn.execute(select(job_deps.c.job_id).where(job_deps.c.dep_id.in_(ids)))}


def array_dependents(conn: Connection, array_id: int) -> set[int]:
    """Jobs waiting on a whole array."""
    return {r[0] for r in conn.execute(select(array_deps.c.job_id).where(array_deps.c.array_id == array_id))}
