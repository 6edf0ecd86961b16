"""A scheduler pass with fair share on and off (issue 20): the queue code, no engine.

    .venv/bin/python bench/fairshare.py [--queued 100000] [--users 100] [--window 1000]

A real SQLite store (in a temp dir) holding `--queued` queued jobs of `--users` users (each
in the account "default", with random decayed usage), 100 generated nodes. A pass is what
the dispatcher does before it launches: the fair-share standing (usage of every
association, running attempts), the queue read in order up to the window, the limits'
budgets, and placement (domain.placement.place_jobs). Timed with fair share on (the
queue merged per association by factor), off (priority, then submission: one index scan),
and on with a default running-jobs limit for every user. Prints the median of 20 passes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sqlalchemy import text  # noqa: E402

from kran.adapters.store.accounts_store import SqlAccounts  # noqa: E402
from kran.adapters.store.sql_store import SqlStore  # noqa: E402
from kran.domain.fairshare import UsagePolicy  # noqa: E402
from kran.domain.jobs import JobSpec  # noqa: E402
from kran.domain.placement import NodeCapacity, held_back, place_jobs  # noqa: E402
from kran.domain.records import Submission  # noqa: E402
from kran.domain.resources import Range, ResourceRequest, Resources  # noqa: E402
from kran.services.fairness import Fairness  # noqa: E402
from kran.services.scheduler.dispatch import MAX_READ, PAGE, Dispatcher  # noqa: E402
from kran.services.scheduler.state import SchedulerState  # noqa: E402

STATE = SchedulerState()


class Clock:
    def now(self) -> float:
        return time.time()


def fill(store: SqlStore, queued: int, users: int, rng: random.Random) -> None:
    req = ResourceRequest(Range(1000, 1000), Range(1024, 1024), Range(0, 0), Range(0, 0))
    per_user = queued // users
    for u in range(users):
        specs = [JobSpec(("true",), req, priority=rng.choice((0, 0, 0, 10))) for _ in range(per_user)]
        for i in range(0, per_user, 1000):
            store.insert_job_groups([Submission(specs[i : i + 1000], f"user{u}")], time.time(), 10**7)
    with store.db.engine.begin() as conn:
        for u in range(users):
            conn.execute(
                text('UPDATE associations SET usage = :u WHERE "user" = :n'),
                {"u": rng.uniform(0, 10**6), "n": f"user{u}"},
            )


def one_pass(fairness: Fairness, nodes: list[NodeCapacity], window: int) -> int:
    """The dispatcher's pass (services.scheduler.dispatch.Dispatcher.tick) up to the
    launches: its pages of the queue, placed on the nodes."""
    nodes = [NodeCapacity(n.node_id, n.total) for n in nodes]
    d = Dispatcher.__new__(Dispatcher)  # only what a pass reads: no engine, no launches
    d.state, d.preemptor = STATE, None  # the specs parsed once, as the server keeps them
    now = time.time()
    known = fairness.standing(now) if fairness.needs_standing() else None
    limits = fairness.pass_limits(known)
    standing = known if fairness.enabled else None
    budgets = limits.budgets if limits else None
    skip: set[int] = set()
    queue = fairness.queue(standing, skip)
    placed = taken = read = 0
    while taken < window and read < window * MAX_READ:
        size = min(PAGE, window - taken)
        rows, cands = d._page(queue, size, now, {True: False, False: False}, limits, skip)
        read += len(rows)
        got = {a.job_id for a in place_jobs(cands, nodes, reserve_after_s=600.0, budgets=budgets).assignments}
        placed += len(got)
        taken += sum(1 for c in cands if c.job_id in got or not held_back(c, None, budgets))
        if len(rows) < size:
            break
    return placed


def timed(fairness: Fairness, nodes: list[NodeCapacity], window: int) -> tuple[float, int]:
    times, placed = [], 0
    for _ in range(20):
        t = time.perf_counter()
        placed = one_pass(fairness, nodes, window)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, placed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queued", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--window", type=int, default=1000)
    args = ap.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as d:
        store = SqlStore.for_data_dir(Path(d))
        store.migrate()
        t = time.perf_counter()
        fill(store, args.queued, args.users, rng)
        print(f"filled {args.queued} queued jobs of {args.users} users in {time.perf_counter() - t:.1f} s")
        accounts = SqlAccounts(store)
        fairness = Fairness(accounts, store, UsagePolicy(), Clock(), True)
        nodes = [NodeCapacity(f"n{i}", Resources(16_000, 65536, 0, 10**6)) for i in range(100)]
        on, placed_on = timed(fairness, nodes, args.window)
        fairness.enabled = False
        off, placed_off = timed(fairness, nodes, args.window)
        fairness.enabled = True
        accounts.set_limits("default", "", {"max_running_jobs": 5})
        fairness.limits_changed()
        limited, placed_lim = timed(fairness, nodes, args.window)
        print(f"pass, fair share off: {off:.1f} ms ({placed_off} placed)")
        print(f"pass, fair share on:  {on:.1f} ms ({placed_on} placed), {on / off:.2f} x off")
        print(f"pass, on + a default limit of 5 running jobs per user: {limited:.1f} ms ({placed_lim} placed)")
        store.close()


if __name__ == "__main__":
    main()
