"""What a job is charged to, inside other modules' units of work: a job's association is
found or made in its insert, usage is charged in the settle that ends the attempt, so a
kill -9 loses neither."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Select, func, insert, select, update

from kran.adapters.store.tables import arrays, associations, jobs, limits
from kran.domain.fairshare import DEFAULT_ACCOUNT, UsagePolicy
from kran.domain.limits import LIMIT_NAMES, Limits, LimitSet, Scope, queued_refusal
from kran.domain.records import Submission
from kran.domain.states import JobState


def association_ids(conn: Connection, pairs: Iterable[tuple[str, str]], now: float) -> dict[tuple[str, str], int]:
    """(account, user) -> association id, made (not as a member) where missing."""
    out: dict[tuple[str, str], int] = {}
    for account, user in set(pairs):
        q = select(associations.c.id).where(associations.c.account == account, associations.c.user == user)
        found = conn.execute(q).scalar()
        if found is None:
            found = conn.execute(
                insert(associations).values(
                    account=account, user=user, shares=1, member=False, joined_at=now, usage=0.0, usage_at=now
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        out[(account, user)] = int(found)
    return out


def charge(conn: Connection, policy: UsagePolicy, amounts: Mapping[int, float], now: float) -> None:
    """Add billing seconds to associations' decayed usage, in the caller's transaction."""
    if not amounts:
        return
    rows = conn.execute(
        select(associations.c.id, associations.c.usage, associations.c.usage_at).where(
            associations.c.id.in_(list(amounts))
        )
    )
    for assoc_id, usage, at in rows.all():
        conn.execute(
            update(associations)
            .where(associations.c.id == assoc_id)
            .values(usage=policy.charged(usage, at, amounts[assoc_id], now), usage_at=now)
        )


def memberships_of(user: str) -> Select[Any]:
    """The user's accounts, the first joined first (the default)."""
    return (
        select(associations.c.account)
        .where(associations.c.user == user, associations.c.member)
        .order_by(associations.c.joined_at, associations.c.id)
    )


def account_of(conn: Connection, user: str) -> str:
    """The account a user's job is charged to when it names none: the first joined, else "default"."""
    return str(conn.execute(memberships_of(user).limit(1)).scalar() or DEFAULT_ACCOUNT)


def with_accounts(conn: Connection, groups: Sequence[Submission]) -> list[Submission]:
    """The submissions with every job's account set: its own, else its owner's default."""
    owners: dict[str, str] = {}
    out = []
    for g in groups:
        if all(s.account for s in g.specs):
            out.append(g)
            continue
        if g.owner not in owners:
            owners[g.owner] = account_of(conn, g.owner)
        account = owners[g.owner]
        out.append(replace(g, specs=[s if s.account else s.charged_to(account) for s in g.specs]))
    return out


class QueuedLimits:
    """The max_queued_jobs limits of one submit transaction: what each scope has queued,
    counted once (in the submitters' turn), plus what this transaction has accepted."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        rows = conn.execute(select(limits).where(limits.c.max_queued_jobs.is_not(None))).mappings().all()
        self._set = LimitSet({(r["scope"], r["name"]): Limits(*(r[n] for n in LIMIT_NAMES)) for r in rows})
        self._queued: dict[Scope, int] = {}

    def _scopes(self, group: Submission, copies: int = 1) -> dict[Scope, tuple[Limits, int]]:
        out: dict[Scope, tuple[Limits, int]] = {}
        for s in group.specs:
            for scope, lim in self._set.scopes(group.owner, s.account or DEFAULT_ACCOUNT, s.app):
                if lim.max_queued_jobs is not None:
                    out[scope] = (lim, out.get(scope, (lim, 0))[1] + copies)
        return out

    def refusal(self, group: Submission, copies: int = 1) -> str | None:
        """Why the group (each job `copies` times: an array's tasks) would pass a limit."""
        if not self._set.set:
            return None
        for scope, (lim, more) in self._scopes(group, copies).items():
            if scope not in self._queued:
                self._queued[scope] = _queued_in(self._conn, scope)
            why = queued_refusal(scope, lim, self._queued[scope], more)
            if why:
                return why
        return None

    def take(self, group: Submission) -> None:
        if self._set.set:
            for scope, (_, more) in self._scopes(group).items():
                self._queued[scope] = self._queued.get(scope, 0) + more


def _queued_in(conn: Connection, scope: Scope) -> int:
    """Queued jobs of the scope, and the tasks its arrays have not made jobs yet (each
    task counts, as in Slurm)."""
    queued = jobs.c.state == JobState.QUEUED
    pending = (arrays.c.state == "active") & arrays.c.kill_requested.is_(False)
    if scope.kind == "user":
        where = (jobs.c.owner == scope.name) & queued
        pending = pending & (arrays.c.owner == scope.name)
    elif scope.kind == "account":
        ids = select(associations.c.id).where(associations.c.account == scope.name).scalar_subquery()
        where = queued & jobs.c.assoc.in_(ids)
        pending = pending & (arrays.c.account == scope.name)
    else:
        where = queued & (jobs.c.app == scope.name)
        pending = pending & (arrays.c.app == scope.name)
    jobs_now = conn.execute(select(func.count()).select_from(jobs).where(where)).scalar_one()
    unmade = conn.execute(select(func.coalesce(func.sum(arrays.c.count - arrays.c.created), 0)).where(pending))
    return int(jobs_now) + int(unmade.scalar_one())
