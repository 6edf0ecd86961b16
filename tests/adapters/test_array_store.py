"""Arrays in a real store (SQLite): tasks made in order under the cap, the buffer and the
queue bound, each index once (issue 20.4)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from kran.adapters.store.array_store import SqlArrays
from kran.adapters.store.sql_store import SqlStore
from kran.domain.arrays import parse_array
from tests.services.fakes import spec


def _store(tmp_path: Path) -> SqlStore:
    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    return store


def _indices(store: SqlStore, array_id: int) -> list[int]:
    with store.db.engine.connect() as conn:
        rows = conn.execute(text("SELECT array_index FROM jobs WHERE array_id = :a ORDER BY id"), {"a": array_id})
        return [r[0] for r in rows]


def _finish_all(store: SqlStore) -> None:
    with store.db.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET state = 'succeeded' WHERE state = 'queued'"))


def test_the_cap_and_the_order(tmp_path: Path) -> None:
    store = _store(tmp_path)
    arrays = SqlArrays(store, queue_max=1000)
    a = arrays.create(spec(), parse_array("10-30:5,3%2"), "alice", None, 0.0)
    assert arrays.expand(1.0) == 2 and arrays.expand(1.0) == 0  # two live: the cap
    assert _indices(store, a) == [10, 15]
    for _ in range(5):
        _finish_all(store)
        arrays.expand(2.0)
    assert _indices(store, a) == [10, 15, 20, 25, 30, 3]
    _finish_all(store)
    arrays.expand(3.0)
    got = arrays.get(a)
    assert got is not None and got.state == "done" and got.tasks == {"succeeded": 6}


def test_the_queue_bound_holds_tasks_back(tmp_path: Path) -> None:
    store = _store(tmp_path)
    arrays = SqlArrays(store, queue_max=5)
    a = arrays.create(spec(), parse_array("0-99"), "alice", None, 0.0)
    assert arrays.expand(1.0) == 5 and arrays.expand(1.0) == 0 and store.queued_count() == 5
    got = arrays.get(a)
    assert got is not None and got.pending == 95


def test_a_task_killed_before_it_is_made_is_never_made_again(tmp_path: Path) -> None:
    store = _store(tmp_path)
    arrays = SqlArrays(store, queue_max=1000)
    a = arrays.create(spec(), parse_array("0-4%1"), "alice", None, 0.0)
    arrays.kill_task(a, 3, 0.5)
    for _ in range(6):
        arrays.expand(1.0)
        _finish_all(store)
    assert sorted(_indices(store, a)) == [0, 1, 2, 3, 4]
    got = arrays.get(a)
    assert got is not None and got.tasks == {"succeeded": 4, "killed": 1}
