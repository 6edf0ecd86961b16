"""Two kran servers on one PostgreSQL database (issue 19.3): correctness rests on
compare-and-set and the database, not on a lock in one process. Each test opens two
independent stores on the same database, as two servers would."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event, func, select

from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import attempts, events, jobs
from kran.domain.jobs import JobSpec
from kran.domain.placement import Assignment
from kran.domain.records import AttemptOutcome, StartedAttempt, Submission
from kran.domain.resources import Range, ResourceRequest, Resources
from kran.domain.retry import Settlement
from kran.domain.states import JobState
from kran.errors import KranError, QueueFull, StaleState

ONE = Range(1, 1)
JOB = JobSpec(("true",), ResourceRequest(ONE, ONE, Range(0, 0), Range(0, 0)))


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[SqlStore, SqlStore]]:
    a, b = SqlStore(pg_url), SqlStore(pg_url)
    a.migrate()
    b.migrate()  # the second server finds the schema at head
    yield a, b
    a.close()
    b.close()


def _count(store: SqlStore, q: Any) -> int:
    with store.db.connect() as conn:
        return int(conn.execute(q).scalar_one())


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once, one thread each; each one's result or the exception it raised."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as e:  # the caller asserts on it
            return e

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _submit(store: SqlStore, n: int, queue_max: int = 10_000) -> list[int]:
    (ids,) = store.insert_job_groups([Submission([JOB] * n, "alice")], 0.0, queue_max)
    assert isinstance(ids, list)
    return ids


def test_each_job_starts_once_when_two_servers_start_the_same_jobs(two: tuple[SqlStore, SqlStore]) -> None:
    a, b = two
    started: dict[int, int] = {}
    for _ in range(8):
        ids = _submit(a, 12)
        place = [Assignment(i, "local", Resources(1, 1)) for i in ids]
        # the other server sees the jobs in the other order: its rows lock the other way round
        got = _together(partial(a.start_attempts, place, 1.0), partial(b.start_attempts, place[::-1], 1.0))
        for result in got:
            assert isinstance(result, list | StaleState), repr(result)  # a deadlock is neither
            for s in result if isinstance(result, list) else []:
                assert isinstance(s, StartedAttempt)
                started[s.job_id] = started.get(s.job_id, 0) + 1
        assert any(isinstance(r, list) and r for r in got)
    total = 8 * 12
    assert sorted(started.values()) == [1] * total  # each job once, by one server
    # the loser changed nothing: one attempt and one `starting` event per job
    assert _count(a, select(func.count()).select_from(attempts)) == total
    assert _count(a, select(func.count()).where(events.c.to_state == "starting")) == total
    assert _count(a, select(func.count()).where(jobs.c.state == JobState.STARTING)) == total
    assert a.queued_count() == b.queued_count() == 0


def _slowly(store: SqlStore) -> None:
    """Each job's compare-and-set alone (as for a driver without a batch row count), with a
    pause before each: two transactions that lock rows in opposite orders surely meet."""
    store.db.engine.dialect.supports_sane_multi_rowcount = False

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith(("UPDATE jobs SET state", "UPDATE attempts SET state")):
            time.sleep(0.05)

    event.listen(store.db.engine, "before_cursor_execute", before)


def test_two_servers_changing_jobs_in_opposite_orders_do_not_deadlock(two: tuple[SqlStore, SqlStore]) -> None:
    """Each server's rows lock in job order, whatever order it decided in: neither holds a
    job that the other waits for (a deadlock, which PostgreSQL breaks by failing one)."""
    a, b = two
    ids = _submit(a, 8)
    place = [Assignment(i, "local", Resources(1, 1)) for i in ids]
    for store in two:
        _slowly(store)
    got = _together(partial(a.start_attempts, place, 1.0), partial(b.start_attempts, place[::-1], 1.0))
    assert all(isinstance(r, list | StaleState) for r in got), got
    assert sorted(s.job_id for r in got if isinstance(r, list) for s in r) == ids
    a.mark_running([(i, 1, f"h{i}") for i in ids], 1.5)
    # both monitors saw the same attempts end, and settle them, each in its own order
    done = Settlement(JobState.SUCCEEDED, JobState.SUCCEEDED, "exit code 0")
    ends = [AttemptOutcome(i, 1, done, 0) for i in ids]
    got = _together(partial(a.settle, ends, 2.0), partial(b.settle, ends[::-1], 2.0))
    assert all(isinstance(r, list | StaleState) for r in got), got
    assert sorted(j for r in got if isinstance(r, list) for j, _ in r) == ids
    assert _count(a, select(func.count()).where(jobs.c.state == JobState.SUCCEEDED)) == 8
    assert _count(a, select(func.count()).where(events.c.to_state == "succeeded")) == 8


MIGRATE = "import sys; from kran.adapters.store.sql_store import SqlStore; SqlStore(sys.argv[1]).migrate()"


def test_two_servers_starting_at_once_migrate_once(pg_url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", MIGRATE, pg_url], stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors


def test_a_setting_stored_by_two_servers_at_once_is_the_first_ones(two: tuple[SqlStore, SqlStore]) -> None:
    a, b = two
    for n in range(20):
        got = _together(partial(a.get_or_set_meta, f"k{n}", "a"), partial(b.get_or_set_meta, f"k{n}", "b"))
        assert got in (["a", "a"], ["b", "b"]), got  # not IntegrityError


def test_overlapping_starts_on_two_servers_start_each_job_once(two: tuple[SqlStore, SqlStore]) -> None:
    a, b = two
    ids = _submit(a, 30)
    place = {i: Assignment(i, "local", Resources(1, 1)) for i in ids}
    # a: the first two thirds; b: the last two thirds, backwards
    got = _together(
        partial(a.start_attempts, [place[i] for i in ids[:20]], 1.0),
        partial(b.start_attempts, [place[i] for i in ids[10:][::-1]], 1.0),
    )
    assert all(isinstance(r, list | StaleState) for r in got), got
    once = [s.job_id for r in got if isinstance(r, list) for s in r]
    assert len(once) == len(set(once))
    assert _count(a, select(func.count()).select_from(attempts)) == len(once)
    assert a.queued_count() == b.queued_count() == 30 - len(once)


def test_the_queue_bound_holds_across_two_servers(two: tuple[SqlStore, SqlStore]) -> None:
    a, b = two
    assert b.queued_count() == 0  # b has looked once: what a stores next it must see too
    _submit(a, 8, queue_max=10)
    (refused,) = b.insert_job_groups([Submission([JOB] * 3, "bob")], 0.0, 10)
    assert isinstance(refused, QueueFull), refused
    assert b.queued_count() == 8
    # a started some meanwhile: b sees the room that made
    a.start_attempts([Assignment(i, "local", Resources(1, 1)) for i in range(1, 4)], 1.0)
    (ok,) = b.insert_job_groups([Submission([JOB] * 3, "bob")], 0.0, 10)
    assert isinstance(ok, list) and a.queued_count() == 8


def test_concurrent_submits_on_two_servers_never_exceed_the_bound(two: tuple[SqlStore, SqlStore]) -> None:
    a, b = two
    queue_max = 25

    def submits(store: SqlStore) -> list[list[int] | KranError]:
        return [store.insert_job_groups([Submission([JOB] * 2, "alice")], 0.0, queue_max)[0] for _ in range(10)]

    got = _together(partial(submits, a), partial(submits, a), partial(submits, b), partial(submits, b))
    flat = [v for r in got for v in r]
    assert all(isinstance(v, list | QueueFull) for v in flat), flat
    accepted = sum(len(v) for v in flat if isinstance(v, list))
    queued = _count(a, select(func.count()).where(jobs.c.state == JobState.QUEUED))
    assert accepted == queued == 24  # 12 of the 40 pairs: a 13th would make 26
    assert a.queued_count() == b.queued_count() == 24
