"""The store's Database (issue 19.3): on SQLite this process's writers take turns (a lock,
against SQLITE_BUSY) and the queued-jobs number is kept, not counted; on PostgreSQL there
is no lock, and the number is counted in the submitting transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, func, insert, select

from kran.adapters.store.accounts_store import SqlAccounts
from kran.adapters.store.database import Database
from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import jobs, meta
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


def test_a_batch_gets_its_ids_in_the_order_of_its_jobs(db: Database) -> None:
    """On SQLite the rows go in by executemany and their ids are read back as the newest
    rows: the ids must still map to the right jobs, in several groups of one transaction,
    and after the newest job was deleted (SQLite then hands its id out again)."""
    store = SqlStore(db)
    SqlAccounts(store).add_account("acct", 1, "", 0.0)
    store.insert_job_groups([Submission([JOB] * 3, "alice")], 0.0, 10_000)
    with db.unit_of_work() as uow:
        uow.conn.execute(delete(jobs).where(jobs.c.id == select(func.max(jobs.c.id)).scalar_subquery()))
    groups = [
        Submission([replace(JOB, name=f"g{g}-{n}", account=None if n % 2 else "acct") for n in range(size)], owner)
        for g, (size, owner) in enumerate([(40, "alice"), (1, "bob"), (25, "alice")])
    ]
    results = store.insert_job_groups(groups, 1.0, 10_000)
    for g, (group, ids) in enumerate(zip(groups, results, strict=True)):
        assert isinstance(ids, list) and len(ids) == len(group.specs)
        for n, job_id in enumerate(ids):
            stored = store.get_job(job_id)
            assert stored is not None and stored.owner == group.owner
            assert stored.name == stored.spec.name == f"g{g}-{n}"
            assert stored.spec.account == ("acct" if n % 2 == 0 else "default")
    flat = [i for ids in results if isinstance(ids, list) for i in ids]
    assert flat == sorted(flat) and len(set(flat)) == 66


def test_sqlite_commits_leave_the_checkpoint_to_a_background_thread(tmp_path: Path) -> None:
    """A commit does not copy the write-ahead log back (SQLite's threshold made the commit
    that crossed it pay 10-20 ms); the checkpoint thread does, so the log stays small."""
    d = Database(f"sqlite:///{tmp_path / 'kran.db'}")
    d.migrate()
    store = SqlStore(d)
    try:
        with d.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        big = replace(JOB, env={"PAD": "x" * 50_000})
        for _ in range(120):  # ~60 MB of log in all, in a steady stream over >= 2.4 s
            store.insert_job_groups([Submission([big] * 10, "alice")], 0.0, 1_000_000)
            time.sleep(0.02)
        # started again from its beginning past MAX_FRAMES (4000 pages, 16 MiB): the file
        # (its largest size) stays well under what was written (never started again: ~70 MB)
        assert (tmp_path / "kran.db-wal").stat().st_size < 40 * 1024 * 1024
        assert store.queued_jobs.now() == 1200
    finally:
        d.close()
