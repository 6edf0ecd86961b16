"""The queue in fair-share order, read from a real store (SQLite): each association's
queue from its head, merged; the same order as sorting every queued job (issue 20.1)."""

from __future__ import annotations

import random
from pathlib import Path

from kran.adapters.store.accounts_store import SqlAccounts
from kran.adapters.store.sql_store import SqlStore
from kran.domain.fairshare import UsagePolicy, queue_key
from kran.domain.records import Submission
from kran.services.fairness import Fairness
from tests.services.fakes import Clock, spec


def _filled(tmp_path: Path) -> tuple[SqlStore, Fairness]:
    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    accounts = SqlAccounts(store)
    accounts.add_account("physics", 3, "", 0.0)
    for u in ("u0", "u1"):
        accounts.add_member("physics", u, None, 0.0)
    rnd = random.Random(7)
    for _ in range(40):  # batches of users at random priorities, interleaved
        owner = f"u{rnd.randrange(6)}"
        specs = [spec(priority=rnd.choice([0, 0, 0, 5, -3])) for _ in range(rnd.randrange(1, 30))]
        store.insert_job_groups([Submission(specs, owner)], 0.0, 100_000)
    with store.db.engine.begin() as conn:  # usage as if some had run: u2 most, u0 some
        from sqlalchemy import text

        conn.execute(text("UPDATE associations SET usage = 5000, usage_at = 0 WHERE \"user\" = 'u2'"))
        conn.execute(text("UPDATE associations SET usage = 800, usage_at = 0 WHERE \"user\" = 'u0'"))
    return store, Fairness(accounts, store, UsagePolicy(), Clock(), True)


def test_merged_order_is_the_sorted_order(tmp_path: Path) -> None:
    store, fairness = _filled(tmp_path)
    standing = fairness.standing(1000.0)  # the fake clock
    got = [r.job_id for r in fairness.queue(standing)]
    every = store.queued_in_order(100_000)
    assert len(got) == len(every) > 200
    want = sorted(every, key=lambda r: queue_key(r.priority, standing.factor(r.assoc), r.job_id))
    assert got == [r.job_id for r in want]
    # u2 used the most: among jobs of one priority, all of u2's come after everyone else's
    factors = {a.user: standing.factor(a.id) for a in standing.assocs}
    assert min(factors, key=lambda u: factors[u]) == "u2"
    # the position a reader is told is where the merge puts it
    by_id = {r.job_id: r for r in every}
    for pos in (0, 17, len(got) // 2, len(got) - 1):
        job = store.get_job(got[pos])
        assert job is not None and by_id[job.id]
        assert fairness.queue_position(job, standing) == pos


def test_off_it_is_priority_then_submission(tmp_path: Path) -> None:
    store, fairness = _filled(tmp_path)
    fairness.enabled = False
    assert [r.job_id for r in fairness.queue(None)] == [r.job_id for r in store.queued_in_order(100_000)]
