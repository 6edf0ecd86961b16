"""Job state changes are compare-and-set (issue 19.3): a change decided from a state the
job has left meanwhile (another writer, another server) changes nothing and says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text

from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import attempts, events
from kran.domain.jobs import JobSpec
from kran.domain.placement import Assignment
from kran.domain.records import AttemptOutcome, Submission
from kran.domain.resources import Range, ResourceRequest, Resources
from kran.domain.retry import Settlement
from kran.domain.states import JobState
from kran.errors import StaleState

ONE = Range(1, 1)
JOB = JobSpec(("true",), ResourceRequest(ONE, ONE, Range(0, 0), Range(0, 0)))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = SqlStore.for_data_dir(tmp_path)
    s.migrate()
    yield s
    s.close()


def _running_job(store: SqlStore) -> int:
    (ids,) = store.insert_job_groups([Submission([JOB], "alice")], 0.0, 100)
    assert isinstance(ids, list)
    (job_id,) = ids
    (started,) = store.start_attempts([Assignment(job_id, "local", Resources(1, 1))], 1.0)
    assert store.mark_running([(job_id, started.attempt, "h")], 2.0) == [0.0]
    return job_id


def _meanwhile(store: SqlStore, when: str, sql: str) -> None:
    """Run `sql` on the same transaction right before the first statement starting with
    `when`: another writer's change between the decision and the write."""
    done = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not done and statement.startswith(when):
            done.append(True)
            conn.connection.cursor().execute(sql)

    event.listen(store.db.engine, "before_cursor_execute", before)


def _state(store: SqlStore, job_id: int) -> tuple[str, int]:
    job = store.get_job(job_id)
    assert job is not None
    return job.state.value, job.attempts


def test_a_stale_settle_changes_nothing_and_is_reported(store: SqlStore) -> None:
    job_id, other = _running_job(store), _running_job(store)
    with store.db.engine.connect() as conn:  # (two jobs: the changes go as one executemany)
        events_before = len(conn.execute(select(events)).all())
    # the job is killed by someone else after settle read it as running
    _meanwhile(store, "UPDATE jobs SET state", f"UPDATE jobs SET state = 'killed' WHERE id = {job_id}")
    done = Settlement(JobState.SUCCEEDED, JobState.SUCCEEDED, "exit code 0")
    both = [AttemptOutcome(job_id, 1, done, 0), AttemptOutcome(other, 1, done, 0)]
    with pytest.raises(StaleState, match="1 of 2 jobs moved on meanwhile"):
        store.settle(both, 3.0)
    # all of it rolled back: the other job's settle and the interloper's change too
    assert _state(store, job_id) == _state(store, other) == ("running", 1)
    with store.db.engine.connect() as conn:
        assert [r[0] for r in conn.execute(select(attempts.c.state))] == ["running", "running"]
        assert len(conn.execute(select(events)).all()) == events_before
    assert store.queued_count() == 0
    # decided again from what is there now, it applies
    changed = store.settle(both, 4.0)
    assert changed == [(job_id, JobState.SUCCEEDED), (other, JobState.SUCCEEDED)]


def test_a_stale_start_changes_nothing(store: SqlStore) -> None:
    (ids,) = store.insert_job_groups([Submission([JOB], "alice")], 0.0, 100)
    assert isinstance(ids, list)
    # another server started the job (attempt 1) after this one read it as queued, attempt 0
    _meanwhile(store, "UPDATE jobs SET state", f"UPDATE jobs SET attempts = 1 WHERE id = {ids[0]}")
    with pytest.raises(StaleState):
        store.start_attempts([Assignment(ids[0], "local", Resources(1, 1))], 1.0)
    assert _state(store, ids[0]) == ("queued", 0) and store.queued_count() == 1
    with store.db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM attempts")).scalar() == 0
