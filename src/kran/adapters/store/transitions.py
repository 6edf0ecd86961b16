"""Every job state change, as compare-and-set updates inside a unit of work.

Each UPDATE's WHERE holds what the change was decided from (the job's id, state and
attempt); a row that no longer matches makes the whole unit of work roll back with
StaleState, so a writer that lost a race (another thread, another server) changes
nothing and hears of it. Each change is checked against the transition table and
recorded as an event in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from kran.adapters.store.associations import charge
from kran.adapters.store.database import UnitOfWork
from kran.adapters.store.job_deps import dependents, resolve_blocked
from kran.adapters.store.tables import attempts, events, jobs, users
from kran.domain.fairshare import UsagePolicy
from kran.domain.jobs import JobSpec
from kran.domain.placement import Assignment
from kran.domain.records import AttemptOutcome, StartedAttempt
from kran.domain.resources import Resources
from kran.domain.states import JobState, check_transition
from kran.errors import StaleState


def compare_and_set(conn: Connection, stmt: Any, rows: list[dict[str, Any]], what: str) -> None:
    """An UPDATE whose WHERE holds what each row's change was decided from (its state and
    attempt): StaleState, and the transaction rolls back, unless every row still matched.

    The rows go in job order, whatever order they were decided in: two servers changing
    the same jobs lock them in the same order, so neither holds one the other waits for."""
    rows = sorted(rows, key=lambda r: (r.get("b_job", 0), r.get("b_n", 0)))
    if conn.dialect.supports_sane_multi_rowcount:
        changed = conn.execute(stmt, rows).rowcount
    else:
        changed = sum(conn.execute(stmt, row).rowcount for row in rows)
    if changed != len(rows):
        raise StaleState(f"{what}: {len(rows) - changed} of {len(rows)} jobs moved on meanwhile; nothing was changed")


def _job_at(state: Any, attempt: str) -> tuple[Any, ...]:
    """The WHERE of a compare-and-set on a job (row param b_job): the state and the attempt
    (the row param named) its change was decided from."""
    return jobs.c.id == bindparam("b_job"), jobs.c.state == state, jobs.c.attempts == bindparam(attempt)


# The statements of a job's way to running, built once (building one cost as much as running it)
_INSERT_ATTEMPT = insert(attempts)
_INSERT_EVENT = insert(events)
_STILL_QUEUED = (
    select(jobs.c.id, jobs.c.attempts, jobs.c.spec, jobs.c.queued_since, users.c.id)
    .select_from(jobs.outerjoin(users, users.c.name == jobs.c.owner))
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)), jobs.c.state == JobState.QUEUED)
)
_LAST_PREEMPTED = (
    select(attempts.c.job_id)
    .join(jobs, (jobs.c.id == attempts.c.job_id) & (jobs.c.attempts == attempts.c.number))
    .where(attempts.c.job_id.in_(bindparam("ids", expanding=True)), attempts.c.state == JobState.PREEMPTED)
)
_START = (
    update(jobs)
    .where(*_job_at(JobState.QUEUED, "b_prev"))
    .values(
        state=JobState.STARTING,
        attempts=bindparam("b_n"),
        node=bindparam("b_node"),
        reason=None,
        pull=None,  # a pull cut short by a server stop is not this attempt's
        **{k: bindparam(f"b_{k}") for k in ("alloc_millicpus", "alloc_mem_mb", "alloc_gpus", "alloc_disk_mb")},
    )
)
_STARTING = (
    select(attempts.c.job_id, attempts.c.number, attempts.c.queued_at)
    .join(jobs, (jobs.c.id == attempts.c.job_id) & (jobs.c.attempts == attempts.c.number))
    .where(
        attempts.c.job_id.in_(bindparam("ids", expanding=True)),
        attempts.c.state == JobState.STARTING,
        jobs.c.state == JobState.STARTING,
    )
)
_ATTEMPT_RUNNING = (
    update(attempts)
    .where(
        attempts.c.job_id == bindparam("b_job"),
        attempts.c.number == bindparam("b_n"),
        attempts.c.state == JobState.STARTING,
    )
    .values(state=JobState.RUNNING, handle=bindparam("b_handle"), started_at=bindparam("b_now"))
)
_JOB_RUNNING = (
    update(jobs)
    .where(*_job_at(JobState.STARTING, "b_n"))
    .values(state=JobState.RUNNING, started_at=func.coalesce(jobs.c.started_at, bindparam("b_now")))
)


def start(uow: UnitOfWork, assignments: Sequence[Assignment], now: float) -> list[StartedAttempt]:
    """queued -> starting for each assignment whose job is still queued."""
    started: list[StartedAttempt] = []
    conn = uow.conn
    by_id = {a.job_id: a for a in assignments}
    rows = conn.execute(_STILL_QUEUED, {"ids": list(by_id)}).all()
    # jobs whose last attempt was preempted: the next one is told (KRAN_PREEMPTED)
    preempted = {r[0] for r in conn.execute(_LAST_PREEMPTED, {"ids": list(by_id)})}
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
            {
                "b_job": job_id,
                "b_prev": n,
                "b_n": number,
                "b_node": a.node_id,
                **{f"b_{k}": v for k, v in res.items()},
            }
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
        spec = JobSpec.from_json(json.loads(spec_json))
        started.append(StartedAttempt(job_id, number, a.node_id, alloc, spec, owner_id, job_id in preempted))
    if job_rows:
        compare_and_set(conn, _START, job_rows, "start")
        conn.execute(_INSERT_ATTEMPT, att_rows)
        conn.execute(_INSERT_EVENT, ev_rows)
    uow.queued = -len(job_rows)
    return started


def mark_running(uow: UnitOfWork, items: Sequence[tuple[int, int, str]], now: float) -> list[float | None]:
    """starting -> running with the engine handle, for (job_id, attempt, handle).

    Only the scheduler loop moves attempts out of starting, so the batch normally
    applies whole; a stale item is left out. Returns when each moved attempt was queued."""
    check_transition(JobState.STARTING, JobState.RUNNING)
    if not items:
        return []
    conn = uow.conn
    keys = {(j, n) for j, n, _ in items}
    current = {(r[0], r[1]): r[2] for r in conn.execute(_STARTING, {"ids": [j for j, _ in keys]})}
    rows = [(j, n, h) for j, n, h in items if (j, n) in current]
    if not rows:
        return []
    compare_and_set(
        conn, _ATTEMPT_RUNNING, [{"b_job": j, "b_n": n, "b_handle": h, "b_now": now} for j, n, h in rows], "running"
    )
    compare_and_set(conn, _JOB_RUNNING, [{"b_job": j, "b_n": n, "b_now": now} for j, n, _ in rows], "running")
    conn.execute(
        _INSERT_EVENT,
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


def settle(
    uow: UnitOfWork, items: Sequence[AttemptOutcome], now: float, policy: UsagePolicy
) -> list[tuple[int, JobState]]:
    conn = uow.conn
    current = {
        r[0]: (JobState(r[1]), r[2])
        for r in conn.execute(
            select(jobs.c.id, jobs.c.state, jobs.c.attempts).where(jobs.c.id.in_([i.job_id for i in items]))
        )
    }
    held = _held(conn, items)
    amounts: dict[int, float] = {}
    att_rows, requeue, final, ev_rows, changed = [], [], [], [], []
    for item in items:
        job_id, number, s, exit_code = item.job_id, item.attempt, item.settlement, item.exit_code
        state, attempt = current.get(job_id, (JobState.QUEUED, -1))
        if attempt != number or not state.is_active:
            continue
        check_transition(state, s.job_state)
        current[job_id] = (s.job_state, attempt)
        assoc, alloc, started = held.get((job_id, number), (None, Resources(), None))
        if assoc is not None and started is not None:  # fair share: what it held, as long as it ran
            amounts[assoc] = amounts.get(assoc, 0.0) + policy.billing(alloc, now - started)
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
        row = {
            "b_job": job_id,
            "b_from": state,
            "b_n": number,
            "b_state": s.job_state,
            "b_reason": s.reason,
            "b_exit": exit_code,
        }
        if s.job_state == JobState.QUEUED:
            requeue.append({**row, "b_nb": now + (s.retry_in_s or 0), "b_free": int(s.free)})
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
        return []
    compare_and_set(
        conn,
        update(attempts)
        .where(
            attempts.c.job_id == bindparam("b_job"),
            attempts.c.number == bindparam("b_n"),
            # no IN here: an executemany takes no expanding parameters
            (attempts.c.state == JobState.STARTING) | (attempts.c.state == JobState.RUNNING),
        )
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
        "settle",
    )
    common: dict[str, Any] = {
        "state": bindparam("b_state"),
        "reason": bindparam("b_reason"),
        "exit_code": bindparam("b_exit"),
    }
    this_attempt = _job_at(bindparam("b_from"), "b_n")
    if requeue:
        compare_and_set(
            conn,
            update(jobs)
            .where(*this_attempt)
            .values(
                **common,
                queued_since=now,
                not_before=bindparam("b_nb"),
                requeues=jobs.c.requeues + bindparam("b_free"),
                kill_reason=None,  # a preemption's: the next attempt is not being killed
                node=None,
                alloc_millicpus=None,
                alloc_mem_mb=None,
                alloc_gpus=None,
                alloc_disk_mb=None,
            ),
            requeue,
            "settle",
        )
    if final:
        compare_and_set(conn, update(jobs).where(*this_attempt).values(**common, finished_at=now), final, "settle")
    conn.execute(insert(events), ev_rows)
    charge(conn, policy, amounts, now)
    ended = {j for j, state in changed if state.is_final}
    uow.queued = len(requeue) - resolve_blocked(conn, dependents(conn, ended), now)
    return changed


def _held(
    conn: Connection, items: Sequence[AttemptOutcome]
) -> dict[tuple[int, int], tuple[int | None, Resources, float | None]]:
    """(job, attempt) -> (association, allocation, started_at) of the attempts to settle."""
    q = (
        select(
            attempts.c.job_id,
            attempts.c.number,
            jobs.c.assoc,
            attempts.c.alloc_millicpus,
            attempts.c.alloc_mem_mb,
            attempts.c.alloc_gpus,
            attempts.c.started_at,
        )
        .join(jobs, jobs.c.id == attempts.c.job_id)
        .where(attempts.c.job_id.in_({i.job_id for i in items}))
    )
    return {(r[0], r[1]): (r[2], Resources(r[3], r[4], r[5]), r[6]) for r in conn.execute(q)}


def request_kill(uow: UnitOfWork, job_ids: Sequence[int], reason: str, now: float) -> dict[int, JobState]:
    out: dict[int, JobState] = {}
    dequeued = 0
    conn = uow.conn
    for job_id in job_ids:
        row = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).first()
        if row is None:
            continue
        state = JobState(row[0])
        if state == JobState.QUEUED and reason == "user":
            compare_and_set(
                conn,
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED)
                .values(state=JobState.KILLED, finished_at=now, reason="killed on request", kill_reason=reason),
                [{}],
                "kill",
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
            free: Any = jobs.c.kill_reason.is_(None)
            if reason == "user":  # a user's kill wins over a preemption under way (no re-run)
                free = free | (jobs.c.kill_reason == "preempt")
            elif reason == "evicted":  # over any other (a kill it asked for itself had its own grace)
                free = free | (jobs.c.kill_reason != "evicted")
            conn.execute(update(jobs).where(jobs.c.id == job_id, free).values(kill_reason=reason))
        out[job_id] = state
    killed = {j for j, state in out.items() if state == JobState.KILLED}
    dequeued += resolve_blocked(conn, dependents(conn, killed), now)
    uow.queued = -dequeued
    return out
