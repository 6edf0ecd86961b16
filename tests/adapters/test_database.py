"""The store's Database (issue 19.3): on SQLite this process's writers take turns (a lock,
against SQLITE_BUSY) and the queued-jobs number is kept, not counted; on PostgreSQL there
is no lock, and the number is counted in the submitting transaction."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert

from kran.adapters.store.database import Database
from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import meta
from kran.domain.jobs import JobSpec
from kran.domain.records import Submission
from kran.domain.resources import Range, ResourceRequest

ONE = Range(1, 1)
JOB = JobSpec(("true",), ResourceRequest(ONE, ONE, Range(0, 0), Range(0, 0)))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'kran.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    d = Database(url)
    d.migrate()
    yield d
    d.close()


def _second_writer_waits(db: Database) -> bool:
    """Whether a second thread's unit of work waits while a first one is open."""
    inside, release, entered = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with db.unit_of_work() as uow:
            uow.conn.execute(insert(meta).values(key="first", value="1"))
            inside.set()
            release.wait(10)

    def second() -> None:
        inside.wait(10)
        with db.unit_of_work() as uow:
            entered.set()
            uow.conn.execute(insert(meta).values(key="second", value="2"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    waited = not entered.wait(0.5)
    release.set()
    for t in threads:
        t.join(10)
    assert entered.is_set()
    return waited


def test_sqlite_writers_take_turns_and_postgresql_writers_do_not(db: Database) -> None:
    assert _second_writer_waits(db) is db.single_server
    assert db.single_server is (db.engine.dialect.name == "sqlite")


def _statements(db: Database) -> list[str]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    return seen


def test_the_queued_number_is_kept_on_sqlite_and_counted_on_postgresql(db: Database) -> None:
    store = SqlStore(db)
    store.insert_job_groups([Submission([JOB], "alice")], 0.0, 100)
    seen = _statements(db)
    for _ in range(3):
        store.insert_job_groups([Submission([JOB], "alice")], 0.0, 100)
    counts = [n for n, s in enumerate(seen) if "count(" in s.lower()]
    turns = [n for n, s in enumerate(seen) if "pg_advisory_xact_lock" in s]
    inserts = [n for n, s in enumerate(seen) if s.startswith("INSERT INTO jobs")]
    if db.single_server:
        assert counts == [] and turns == []
    else:  # each submit: the submitters' turn, the count, then the insert
        assert len(turns) == len(counts) == len(inserts) == 3
        assert all(t < c < i for t, c, i in zip(turns, counts, inserts, strict=True))
    assert store.queued_count() == 4
