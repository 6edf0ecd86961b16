"""Accounts, associations (an account and a user, with decayed usage) and limits (issue 20),
on the job store's database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from kran.adapters.store.associations import association_ids, memberships_of
from kran.adapters.store.reads import QUEUED_COLUMNS, of_active_attempts
from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import accounts, associations, attempts, jobs, limits
from kran.domain.fairshare import Association, RunningCharge
from kran.domain.limits import LIMIT_NAMES, Limits, LimitSet
from kran.domain.records import QueuedRow
from kran.domain.resources import Resources
from kran.domain.states import JobState
from kran.errors import Conflict, NotFound

# one statement, its compiled form cached: a pass reads the head of every association's queue
_QUEUED_OF = (
    select(*QUEUED_COLUMNS)
    .where(jobs.c.state == JobState.QUEUED, jobs.c.assoc == bindparam("a"), jobs.c.blocked.is_(False))
    .order_by(jobs.c.priority.desc(), jobs.c.id)
    .limit(bindparam("n"))
    .offset(bindparam("o"))
)
# read by every pass too (fair share's standing), built once like it
_ASSOCIATIONS = select(associations, accounts.c.shares.label("account_shares")).join(
    accounts, accounts.c.name == associations.c.account
)
_RUNNING = of_active_attempts(
    jobs.c.assoc,
    jobs.c.owner,
    jobs.c.app,
    attempts.c.alloc_millicpus,
    attempts.c.alloc_mem_mb,
    attempts.c.alloc_gpus,
    attempts.c.alloc_disk_mb,
    attempts.c.started_at,
)
_QUEUED_ASSOCIATIONS = text(
    "WITH RECURSIVE a(id) AS ("
    " SELECT (SELECT MIN(assoc) FROM jobs WHERE state = :q AND assoc IS NOT NULL)"
    " UNION ALL"
    " SELECT (SELECT MIN(assoc) FROM jobs WHERE state = :q AND assoc > a.id) FROM a WHERE a.id IS NOT NULL"
    ") SELECT id FROM a WHERE id IS NOT NULL"
)


class SqlAccounts:
    def __init__(self, store: SqlStore) -> None:
        self._db = store.db

    # ---- accounts

    def accounts(self) -> list[dict[str, Any]]:
        with self._db.connect() as conn:
            return [dict(r) for r in conn.execute(select(accounts).order_by(accounts.c.name)).mappings()]

    def add_account(self, name: str, shares: int, description: str, now: float) -> None:
        try:
            with self._db.unit_of_work() as uow:
                uow.conn.execute(
                    insert(accounts).values(name=name, shares=shares, description=description, created_at=now)
                )
        except IntegrityError:
            raise Conflict(f"account {name} exists already") from None

    def set_account(self, name: str, shares: int | None, description: str | None) -> None:
        values: dict[str, Any] = {}
        if shares is not None:
            values["shares"] = shares
        if description is not None:
            values["description"] = description
        with self._db.unit_of_work() as uow:
            found = uow.conn.execute(select(accounts.c.name).where(accounts.c.name == name)).first()
            if found is None:
                raise NotFound(f"account {name} not found")
            if values:
                uow.conn.execute(update(accounts).where(accounts.c.name == name).values(**values))

    # ---- members

    def add_member(self, account: str, user: str, shares: int | None, now: float) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            if conn.execute(select(accounts.c.name).where(accounts.c.name == account)).first() is None:
                raise NotFound(f"account {account} not found")
            ids = association_ids(conn, [(account, user)], now)
            values: dict[str, Any] = {"member": True}
            was = conn.execute(select(associations.c.member).where(associations.c.id == ids[(account, user)])).scalar()
            if not was:
                values["joined_at"] = now  # the order of joining makes the first the default
            if shares is not None:
                values["shares"] = shares
            conn.execute(update(associations).where(associations.c.id == ids[(account, user)]).values(**values))

    def remove_member(self, account: str, user: str) -> None:
        """Not a member any more: new jobs cannot be charged there; usage stays on record."""
        with self._db.unit_of_work() as uow:
            done = uow.conn.execute(
                update(associations)
                .where(associations.c.account == account, associations.c.user == user, associations.c.member)
                .values(member=False)
            )
            if done.rowcount == 0:
                raise NotFound(f"{user} is not a member of account {account}")

    def memberships(self, user: str) -> list[str]:
        """The user's accounts, the first joined first (the default)."""
        with self._db.connect() as conn:
            return [str(r[0]) for r in conn.execute(memberships_of(user))]

    def associations(self) -> list[Association]:
        with self._db.connect() as conn:
            return [
                Association(
                    r["id"],
                    r["account"],
                    r["user"],
                    r["shares"],
                    r["account_shares"],
                    r["usage"],
                    r["usage_at"],
                    bool(r["member"]),
                )  # fmt: skip
                for r in conn.execute(_ASSOCIATIONS).mappings()
            ]

    def queued_association_ids(self) -> list[int]:
        """Associations with queued jobs, by a skip scan of the fair-share index (a recursive
        query: one index seek per association, whatever the length of the queue)."""
        with self._db.connect() as conn:
            return [int(r[0]) for r in conn.execute(_QUEUED_ASSOCIATIONS, {"q": JobState.QUEUED.value})]

    def running(self) -> list[RunningCharge]:
        """Active attempts as fair share and limits count them."""
        with self._db.connect() as conn:
            return [
                RunningCharge(r[0], r[1], r[2], Resources(r[3], r[4], r[5], r[6]), r[7]) for r in conn.execute(_RUNNING)
            ]

    def queued_of(self, assoc: int, limit: int, offset: int) -> list[QueuedRow]:
        """One association's queued jobs in its own order (priority, then submission)."""
        with self._db.connect() as conn:
            return [QueuedRow(*r) for r in conn.execute(_QUEUED_OF, {"a": assoc, "n": limit, "o": offset})]

    def queued_at_or_above(self, priority: int, job_id: int) -> list[tuple[int | None, int, int, int]]:
        """(association, priority, queued jobs, of them submitted before job_id), for the
        queued jobs of at least this priority: what a queue position is counted from."""
        q = (
            select(
                jobs.c.assoc,
                jobs.c.priority,
                func.count(),
                func.sum(case((jobs.c.id < job_id, 1), else_=0)),
            )
            .where(jobs.c.state == JobState.QUEUED, jobs.c.blocked.is_(False), jobs.c.priority >= priority)
            .group_by(jobs.c.assoc, jobs.c.priority)
        )
        with self._db.connect() as conn:
            return [(r[0], int(r[1]), int(r[2]), int(r[3] or 0)) for r in conn.execute(q)]

    def preemptible(self) -> list[tuple[int, int | None, str, Resources, int, float]]:
        """(job, association, node, allocation, priority, started) of running preemptible
        jobs no kill is under way for."""
        q = (
            select(
                jobs.c.id, jobs.c.assoc, jobs.c.node, jobs.c.alloc_millicpus, jobs.c.alloc_mem_mb,
                jobs.c.alloc_gpus, jobs.c.alloc_disk_mb, jobs.c.priority, jobs.c.started_at,
            )
            .where(jobs.c.state == JobState.RUNNING, jobs.c.preemptible.is_(True), jobs.c.kill_reason.is_(None))
        )  # fmt: skip
        with self._db.connect() as conn:
            return [
                (r[0], r[1], r[2], Resources(r[3] or 0, r[4] or 0, r[5] or 0, r[6] or 0), r[7], r[8] or 0.0)
                for r in conn.execute(q)
            ]

    def stopping_for_preemption(self) -> list[tuple[str, Resources]]:
        """(node, allocation) of the jobs a preemption is stopping that still run."""
        q = (
            select(jobs.c.node, jobs.c.alloc_millicpus, jobs.c.alloc_mem_mb, jobs.c.alloc_gpus, jobs.c.alloc_disk_mb)
            .where(jobs.c.state.in_([JobState.STARTING, JobState.RUNNING]), jobs.c.kill_reason == "preempt")
        )  # fmt: skip
        with self._db.connect() as conn:
            return [(r[0], Resources(r[1] or 0, r[2] or 0, r[3] or 0, r[4] or 0)) for r in conn.execute(q)]

    def active_names(self) -> list[tuple[str, str]]:
        """(owner, name) of starting or running jobs that have a name (singleton locks)."""
        q = select(jobs.c.owner, jobs.c.name).where(
            jobs.c.state.in_([JobState.STARTING, JobState.RUNNING]), jobs.c.name.is_not(None)
        )
        with self._db.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(q)]

    def active_named(self, owner: str, name: str) -> int | None:
        """A starting or running job of this owner and name, if any."""
        q = select(jobs.c.id).where(
            jobs.c.state.in_([JobState.STARTING, JobState.RUNNING]), jobs.c.owner == owner, jobs.c.name == name
        )
        with self._db.connect() as conn:
            return conn.execute(q.limit(1)).scalar()

    # ---- limits

    def limit_set(self) -> LimitSet:
        with self._db.connect() as conn:
            rows = conn.execute(select(limits)).mappings().all()
        return LimitSet({(r["scope"], r["name"]): Limits(*(r[n] for n in LIMIT_NAMES)) for r in rows})

    def set_limits(self, scope: str, name: str, values: Mapping[str, int | float | None]) -> Limits:
        """Set the fields given (None clears one); returns the scope's limits now."""
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            key = (limits.c.scope == scope) & (limits.c.name == name)
            row = conn.execute(select(limits).where(key)).mappings().first()
            now = Limits(*(row[n] for n in LIMIT_NAMES)) if row else Limits()
            merged = {**asdict(now), **values}
            if all(v is None for v in merged.values()):
                conn.execute(delete(limits).where(key))
            elif row:
                conn.execute(update(limits).where(key).values(**merged))
            else:
                conn.execute(insert(limits).values(scope=scope, name=name, **merged))
            return Limits(**merged)
