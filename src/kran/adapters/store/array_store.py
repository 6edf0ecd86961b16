"""Job arrays (issue 20.4) on the job store's database. An array is one row; its tasks
become jobs in index order as they may start (`expand`), each batch in one transaction
with the array's cursor: a kill -9 leaves both or neither, and the unique (array_id,
array_index) index makes a task a job at most once."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import Connection, RowMapping, func, insert, select, update

from kran.adapters.store.associations import QueuedLimits, with_accounts
from kran.adapters.store.job_deps import array_dependents, resolve_blocked
from kran.adapters.store.job_inserts import insert_rows
from kran.adapters.store.notify_store import hooks_for, outbox_row
from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import arrays, events, jobs, notifications
from kran.adapters.store.transitions import request_kill
from kran.domain.arrays import ArrayIndices, ArrayRecord, parse_array, tasks_to_create
from kran.domain.jobs import JobSpec
from kran.domain.notify import wanted
from kran.domain.records import Submission
from kran.domain.states import JobState
from kran.errors import QueueFull, StaleState

LIVE = (JobState.QUEUED, JobState.STARTING, JobState.RUNNING)
PER_PASS = 100
IDLE_RECHECK_S = 1.0  # with no array active, how often a pass asks again (another server's new array)
MAX_ACTIVE_PER_USER = 1000


class SqlArrays:
    def __init__(self, store: SqlStore, queue_max: int) -> None:
        self._db = store.db
        self._queued = store.queued_jobs
        self._queue_max = queue_max
        self._last = 0  # the last array expand looked at: the next pass goes on after it
        self._idle_until = 0.0  # none active when last asked: passes skip the query until then
        self._made = 0  # arrays this server stored: one stored while a pass asked ends its skip

    def create(self, spec: JobSpec, indices: ArrayIndices, owner: str, submitted_by: str | None, now: float) -> int:
        """The array's one row; its tasks are made by `expand` (the next scheduler pass).
        QueueFull while the queue is full, or when its tasks would pass a queued-jobs limit
        (each task counts, as in Slurm)."""
        with self._db.unit_of_work() as uow:
            waiting = self._queued.before_insert(uow)
            if waiting >= self._queue_max:
                raise QueueFull(f"queue is full: {waiting} jobs waiting, limit {self._queue_max}; nothing stored")
            (sub,) = with_accounts(uow.conn, [Submission([spec], owner, submitted_by)])
            why = QueuedLimits(uow.conn).refusal(sub, indices.count)
            if why:
                raise QueueFull(why)
            active = uow.conn.execute(
                select(func.count()).where(arrays.c.owner == owner, arrays.c.state == "active")
            ).scalar_one()
            if active >= MAX_ACTIVE_PER_USER:
                raise QueueFull(f"user {owner}: {active} arrays not yet ended, at most {MAX_ACTIVE_PER_USER}")
            row = {
                "owner": owner,
                "submitted_by": submitted_by,
                "name": spec.name,
                "spec": json.dumps(sub.specs[0].to_json()),
                "indices": indices.text(),
                "count": indices.count,
                "throttle": indices.throttle,
                "created": 0,
                "state": "active",
                "kill_requested": False,
                "submitted_at": now,
                "corr_array": spec.after_corr,
                "account": sub.specs[0].account,
                "app": spec.app,
            }
            key = uow.conn.execute(insert(arrays), row).inserted_primary_key
            assert key is not None
        self._made += 1
        self._idle_until = 0.0
        return int(key[0])

    def expand(self, now: float) -> int:
        """Make the tasks each active array may have now; mark arrays done. Returns how
        many tasks were made. While the queue is full, none is made (they wait, pending)."""
        if time.monotonic() < self._idle_until:
            return 0
        made = self._made
        with self._db.connect() as conn:  # one query finds the arrays with something to do
            live = (
                select(jobs.c.array_id, func.count().label("n"))
                .where(jobs.c.array_id.is_not(None), jobs.c.state.in_([s.value for s in LIVE]))
                .group_by(jobs.c.array_id)
                .subquery()
            )
            other = arrays.alias("other")
            rows = conn.execute(
                select(arrays.c.id, arrays.c.created, arrays.c.count, arrays.c.throttle, arrays.c.kill_requested,
                       func.coalesce(live.c.n, 0), other.c.created, other.c.state, other.c.kill_requested)
                .outerjoin(live, live.c.array_id == arrays.c.id)
                .outerjoin(other, other.c.id == arrays.c.corr_array)
                .where(arrays.c.state == "active")
                .order_by(arrays.c.id)
            ).all()  # fmt: skip
        if not rows:
            if made == self._made:
                self._idle_until = time.monotonic() + IDLE_RECHECK_S
            return 0
        full = self._queued.now() >= self._queue_max
        work = []
        for array_id, created, count, throttle, killed, n_live, o_created, o_state, o_killed in rows:
            if n_live == 0 and (killed or created >= count):
                work.append(array_id)  # done: decided in _expand_one
            elif killed or created >= count or full or (throttle is not None and n_live >= throttle):
                continue
            elif o_state == "active" and not o_killed and created >= o_created:
                continue  # aftercorr: the other array has made no task this one may follow yet
            else:
                work.append(array_id)
        # at most PER_PASS arrays a pass, taking turns: what users submit does not set its cost
        start = next((k for k, a in enumerate(work) if a > self._last), 0)
        turn = (work[start:] + work[:start])[:PER_PASS]
        made = 0
        for array_id in turn:
            made += self._expand_one(int(array_id), now)
            self._last = int(array_id)
        return made

    def _expand_one(self, array_id: int, now: float) -> int:
        with self._db.connect() as conn:  # most passes have nothing to make: decided without the write turn
            if _plan(conn, array_id) is None:
                return 0
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            plan = _plan(conn, array_id)
            if plan is None:
                return 0
            a, n = plan
            if n == 0:  # every task made and ended, or killed: done; who waits on it decides
                counts = _counts(conn, array_id)
                outcome = (
                    JobState.KILLED
                    if a["kill_requested"]
                    else JobState.SUCCEEDED
                    if set(counts) <= {JobState.SUCCEEDED.value}
                    else JobState.FAILED
                )
                conn.execute(
                    update(arrays)
                    .where(arrays.c.id == array_id)
                    .values(state="done", finished_at=now, outcome=outcome.value)
                )
                uow.queued = -resolve_blocked(conn, array_dependents(conn, array_id), now)
                _notify_ended(conn, a, outcome, now)
                return 0
            n = min(n, self._queue_max - self._queued.before_insert(uow))  # the queue bound holds for tasks too
            if n <= 0:
                return 0
            indices = parse_array(a["indices"], checked=True)
            # the array notifies as a whole (array.ended), not task by task
            template = replace(JobSpec.from_json(json.loads(a["spec"])), notify=None, notify_on=())
            positions = range(a["created"], a["created"] + n)
            wanted = {indices.index_at(p) for p in positions}
            present = set(
                conn.execute(
                    select(jobs.c.array_index).where(jobs.c.array_id == array_id, jobs.c.array_index.in_(wanted))
                ).scalars()
            )  # killed before they were made (kill_task): no second job
            corr = _corresponding(conn, a["corr_array"], [indices.index_at(p) for p in positions])
            if corr is not None and len(corr) < n:  # aftercorr: the other array's task i is not made yet
                n = len(corr)
                positions = range(a["created"], a["created"] + n)
                if n == 0:
                    return 0
            specs, never = [], []
            for k, i in enumerate(indices.index_at(p) for p in positions):
                if i in present:
                    continue
                waits = corr[k] if corr is not None else None
                if waits == NEVER:
                    never.append(i)
                    continue
                after = template.after if waits is None else (*template.after, waits)
                specs.append(replace(template, array=(array_id, i, a["count"]), after=after))
            if specs:
                _, failed = insert_rows(conn, [Submission(specs, a["owner"], a["submitted_by"])], now)
                uow.queued = len(specs) - failed
            if never:  # the tasks they follow will never be: they end dependency_failed, never run
                _ended_unmade(conn, array_id, template, never, a, now)
            done = conn.execute(
                update(arrays)
                .where(arrays.c.id == array_id, arrays.c.created == a["created"])
                .values(created=a["created"] + n)
            )
            if done.rowcount != 1:
                raise StaleState(f"array {array_id}: another writer made its tasks")
            return len(specs)

    def get(self, array_id: int) -> ArrayRecord | None:
        with self._db.connect() as conn:
            a = conn.execute(select(arrays).where(arrays.c.id == array_id)).mappings().first()
            return None if a is None else _record(a, _counts(conn, array_id))

    def list(self, owner: str | None, limit: int, visible_to_service: str | None = None) -> list[ArrayRecord]:
        q = select(arrays).order_by(arrays.c.id.desc()).limit(limit)
        if owner is not None:
            q = q.where((arrays.c.owner == owner) | (arrays.c.submitted_by == (visible_to_service or owner)))
        with self._db.connect() as conn:
            rows = conn.execute(q).mappings().all()
            return [_record(a, _counts(conn, a["id"])) for a in rows]

    def kill(self, array_id: int, now: float) -> None:
        """No more tasks are made; the live ones are killed."""
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            conn.execute(update(arrays).where(arrays.c.id == array_id).values(kill_requested=True))
            live = conn.execute(
                select(jobs.c.id).where(jobs.c.array_id == array_id, jobs.c.state.in_([s.value for s in LIVE]))
            ).scalars()
            request_kill(uow, [int(i) for i in live], "user", now)

    def kill_task(self, array_id: int, index: int, now: float) -> int:
        """Kill one task: its job, made now (and killed at once) if it was not yet. Returns its job id."""
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            job_id = conn.execute(
                select(jobs.c.id).where(jobs.c.array_id == array_id, jobs.c.array_index == index)
            ).scalar()
            if job_id is None:
                a = conn.execute(select(arrays).where(arrays.c.id == array_id)).mappings().one()
                spec = replace(
                    JobSpec.from_json(json.loads(a["spec"])),
                    array=(array_id, index, a["count"]),
                    notify=None,
                    notify_on=(),
                )
                (ids, failed) = insert_rows(conn, [Submission([spec], a["owner"], a["submitted_by"])], now)
                job_id = ids[0]
                uow.queued = 1 - failed
            request_kill(uow, [int(job_id)], "user", now)
            return int(job_id)

    def task_jobs(self, array_id: int, limit: int, after_index: int | None = None) -> Sequence[tuple[int, int]]:
        """(index, job id) of its tasks made so far, by index."""
        q = select(jobs.c.array_index, jobs.c.id).where(jobs.c.array_id == array_id).order_by(jobs.c.array_index)
        if after_index is not None:
            q = q.where(jobs.c.array_index > after_index)
        with self._db.connect() as conn:
            return [(int(r[0]), int(r[1])) for r in conn.execute(q.limit(limit))]


def _plan(conn: Connection, array_id: int) -> tuple[RowMapping, int] | None:
    """(the array, tasks to make now; 0: it is done), or None: nothing to do."""
    a = conn.execute(select(arrays).where(arrays.c.id == array_id)).mappings().one()
    if a["state"] != "active":
        return None
    live_q = select(jobs.c.state, func.count()).where(
        jobs.c.array_id == array_id, jobs.c.state.in_([s.value for s in LIVE])
    )
    live_by = {str(st): int(n) for st, n in conn.execute(live_q.group_by(jobs.c.state))}
    live = sum(live_by.values())
    if a["kill_requested"]:
        return (a, 0) if live == 0 else None
    n = tasks_to_create(
        count=a["count"], created=a["created"], live=live, queued=live_by.get("queued", 0), throttle=a["throttle"]
    )
    if n == 0 and not (live == 0 and a["created"] >= a["count"]):
        return None
    return a, n


NEVER = -1  # _corresponding: the other array ended without making that task


def _ended_unmade(
    conn: Connection, array_id: int, template: JobSpec, indices: list[int], a: RowMapping, now: float
) -> None:
    """Tasks whose aftercorr task will never be made: jobs that end dependency_failed at once."""
    specs = [replace(template, array=(array_id, i, a["count"])) for i in indices]
    ids, _ = insert_rows(conn, [Submission(specs, a["owner"], a["submitted_by"])], now)
    reason = f"dependency array {a['corr_array']} ended without its task of the same index"
    conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(ids), jobs.c.state == JobState.QUEUED)
        .values(state=JobState.DEPENDENCY_FAILED, finished_at=now, reason=reason)
    )
    conn.execute(
        insert(events),
        [{"job_id": i, "attempt": None, "from_state": "queued", "to_state": "dependency_failed", "reason": reason,
          "at": now} for i in ids],
    )  # fmt: skip


def _corresponding(conn: Connection, other: int | None, wanted: list[int]) -> list[int | None] | None:
    """aftercorr: for each index in order, the job id of the other array's task with that
    index (None: that array has no such index, nothing to wait for; NEVER: it has, but it
    ended without making it); cut short at the first task it will make but has not yet.
    None without aftercorr."""
    if other is None:
        return None
    o = conn.execute(
        select(arrays.c.indices, arrays.c.state, arrays.c.kill_requested).where(arrays.c.id == other)
    ).one()
    theirs = parse_array(o[0], checked=True)
    ended = o[1] == "done" or bool(o[2])
    made = dict(
        conn.execute(
            select(jobs.c.array_index, jobs.c.id).where(jobs.c.array_id == other, jobs.c.array_index.in_(wanted))
        ).all()
    )
    out: list[int | None] = []
    for i in wanted:
        if i in made:
            out.append(int(made[i]))
        elif theirs.has(i):
            if not ended:
                break
            out.append(NEVER)
        else:
            out.append(None)
    return out


def _notify_ended(conn: Connection, a: RowMapping, outcome: JobState, now: float) -> None:
    """array.ended to the array's --notify and the webhooks, in the transaction that ends it."""
    spec = JobSpec.from_json(json.loads(a["spec"]))
    targets = hooks_for(conn, "array.ended")
    if spec.notify and wanted(spec.notify_on or ("end",), "array.ended"):
        targets.append(spec.notify)
    if not targets:
        return
    event_id = f"array-{a['id']}-ended"
    counts = _counts(conn, a["id"])
    payload = {
        "id": event_id,
        "type": "array.ended",
        "at": now,
        "array": {"id": a["id"], "name": a["name"], "owner": a["owner"], "outcome": outcome.value, "tasks": counts},
    }
    conn.execute(insert(notifications), [outbox_row(event_id, url, payload, now) for url in dict.fromkeys(targets)])


def _counts(conn: object, array_id: int) -> dict[str, int]:
    q = select(jobs.c.state, func.count()).where(jobs.c.array_id == array_id).group_by(jobs.c.state)
    return {str(s): int(n) for s, n in conn.execute(q)}  # type: ignore[attr-defined]


def _record(a: object, counts: dict[str, int]) -> ArrayRecord:
    r = a  # a RowMapping
    return ArrayRecord(
        r["id"], r["owner"], r["submitted_by"], r["name"], JobSpec.from_json(json.loads(r["spec"])),  # type: ignore[index]
        parse_array(r["indices"], checked=True), r["created"], r["state"], bool(r["kill_requested"]), r["submitted_at"],  # type: ignore[index]
        r["finished_at"], counts,  # type: ignore[index]
    )  # fmt: skip
