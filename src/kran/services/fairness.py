"""Fair share and limits as the scheduler and the readers use them (issue 20): the queue
in fair-share order, the running limits as budgets for placement, why a job is held, a
job's priority factors and the share report."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from kran.domain.fairshare import Association, FairShare, RunningCharge, UsagePolicy, standings, usage_now
from kran.domain.limits import LimitSet, Scope, Tally, budget, first_hold
from kran.domain.records import JobRecord, QueuedRow
from kran.ports import Accounts, Clock, Store

FIRST_PAGE = 16  # of each association's queue: most passes need only its head
PAGE = 128
LIMITS_TTL_S = 2.0  # limits set by another server are seen this late


@dataclass(frozen=True)
class Standing:
    """The fair-share picture at one moment."""

    assocs: list[Association]
    running: list[RunningCharge]
    shares: dict[int, FairShare]

    def factor(self, assoc: int | None) -> float:
        s = self.shares.get(assoc) if assoc is not None else None
        return s.factor if s is not None else 1.0

    def assoc_of(self, account: str, user: str) -> int | None:
        return next((a.id for a in self.assocs if a.account == account and a.user == user), None)


@dataclass
class PassLimits:
    """The running limits of one scheduler pass, as placement budgets."""

    limits: LimitSet
    budgets: dict[Hashable, list[int]]

    def keys(self, row: QueuedRow, account: str) -> tuple[Hashable, ...]:
        """The scopes a queued job counts in; one seen first (nothing of it runs) gets its
        whole budget."""
        scopes = self.limits.scopes(row.owner, account, row.app)
        for scope, lim in scopes:
            if scope not in self.budgets:
                self.budgets[scope] = budget(lim, Tally())
        return tuple(s for s, _ in scopes)


class Fairness:
    def __init__(self, accounts: Accounts, store: Store, policy: UsagePolicy, clock: Clock, enabled: bool) -> None:
        self.accounts = accounts
        self.store = store
        self.policy = policy
        self.clock = clock
        self.enabled = enabled
        self._limits: tuple[float, LimitSet] | None = None

    # ---- reading

    def standing(self, now: float) -> Standing:
        assocs = self.accounts.associations()
        running = self.accounts.running()
        return Standing(assocs, running, standings(assocs, usage_now(self.policy, assocs, running, now)))

    def limit_set(self) -> LimitSet:
        cached = self._limits
        if cached is None or time.monotonic() - cached[0] > LIMITS_TTL_S:
            cached = self._limits = (time.monotonic(), self.accounts.limit_set())
        return cached[1]

    def limits_changed(self) -> None:
        self._limits = None

    # ---- the scheduler's pass

    def queue(self, standing: Standing | None, skip: set[int] | None = None) -> Iterator[QueuedRow]:
        """Queued jobs in queue order: by priority, then (fair share on) the factor of the
        association charged, then submission. Each association's queue is read from its
        head as far as the pass gets (an index seek each), merged here. Associations put in
        `skip` meanwhile (a limit holds all their jobs) are read no further."""
        if standing is None:
            offset = 0
            while True:
                rows = self.store.queued_in_order(PAGE, offset)
                yield from rows
                if len(rows) < PAGE:
                    return
                offset += len(rows)
        heap: list[tuple[tuple[int, float, int], int, QueuedRow]] = []
        streams: dict[int, _Stream] = {}
        for assoc in self.accounts.queued_association_ids():
            stream = streams[assoc] = _Stream(assoc, self.accounts.queued_of)
            _push(heap, stream, standing.factor(assoc))
        while heap:
            _, assoc, row = heapq.heappop(heap)
            if skip and assoc in skip:
                continue  # its stream is dropped
            yield row
            _push(heap, streams[assoc], standing.factor(assoc))

    def pass_limits(self, standing: Standing | None) -> PassLimits | None:
        """Budgets of the scopes with running limits, or None when none is set (then
        `standing` may be None too: see needs_standing)."""
        limits = self.limit_set()
        if not limits.set or standing is None:
            return None
        tallies = _tallies(standing.running, limits, _account_names(standing))
        budgets: dict[Hashable, list[int]] = {}
        for (kind, name), _ in limits.set.items():
            if kind != "default":
                scope = Scope(kind, name)
                budgets[scope] = budget(limits.of(scope), tallies.get(scope, Tally()))
        for scope, tally in tallies.items():  # users under the default limits
            if scope not in budgets and scope.kind == "user":
                budgets[scope] = budget(limits.of(scope), tally)
        return PassLimits(limits, budgets)

    def needs_standing(self) -> bool:
        """Does a pass need the standing: fair share orders the queue, or limits count what runs."""
        return self.enabled or bool(self.limit_set().set)

    # ---- one job

    def hold_reason(self, job: JobRecord, standing: Standing | None) -> str | None:
        """The limit that holds a queued job, as its pending reason, or None."""
        limits = self.limit_set()
        if not limits.set or standing is None:
            return None
        account = job.spec.account or "default"
        scopes = limits.scopes(job.owner, account, job.spec.app)
        if not scopes:
            return None
        tallies = _tallies(standing.running, limits, _account_names(standing))
        return first_hold(scopes, tallies, job.spec.request.minimum)

    def factors(self, job: JobRecord, standing: Standing | None) -> dict[str, float | int]:
        """A queued job's priority factors (as `sprio` shows them)."""
        now = self.clock.now()
        out: dict[str, float | int] = {"priority": job.priority, "age_s": round(max(0.0, now - job.submitted_at), 1)}
        if self.enabled and standing is not None:
            assoc = standing.assoc_of(job.spec.account or "default", job.owner)
            share = standing.shares.get(assoc) if assoc is not None else None
            if share is not None:
                out |= {
                    "fair_share": round(share.factor, 6),
                    "norm_shares": round(share.norm_shares, 6),
                    "effective_usage": round(share.effective_usage, 6),
                }
        return out

    def queue_position(self, job: JobRecord, standing: Standing | None) -> int:
        """How many queued jobs come before this one."""
        if not self.enabled or standing is None:
            return self.store.queue_position(job)
        mine = standing.factor(standing.assoc_of(job.spec.account or "default", job.owner))
        ahead = 0
        for assoc, priority, n, before in self.accounts.queued_at_or_above(job.priority, job.id):
            if priority > job.priority:
                ahead += n
                continue
            f = standing.factor(assoc)
            ahead += n if f > mine else before if f == mine else 0
        return ahead


def _account_names(standing: Standing) -> dict[int, str]:
    return {a.id: a.account for a in standing.assocs}


class _Stream:
    """One association's queued jobs, read a page at a time."""

    def __init__(self, assoc: int, read: Callable[[int, int, int], list[QueuedRow]]) -> None:
        self.assoc = assoc
        self._read = read
        self._rows: list[QueuedRow] = []
        self._pos = 0
        self._offset = 0
        self._done = False

    def next(self) -> QueuedRow | None:
        if self._pos == len(self._rows):
            if self._done:
                return None
            size = FIRST_PAGE if self._offset == 0 else PAGE
            self._rows = self._read(self.assoc, size, self._offset)
            self._offset += len(self._rows)
            self._pos = 0
            self._done = len(self._rows) < size
            if not self._rows:
                return None
        row = self._rows[self._pos]
        self._pos += 1
        return row


def _push(heap: list[tuple[tuple[int, float, int], int, QueuedRow]], stream: _Stream, factor: float) -> None:
    row = stream.next()
    if row is not None:
        heapq.heappush(heap, ((-row.priority, -factor, row.job_id), stream.assoc, row))


def _tallies(running: list[RunningCharge], limits: LimitSet, account_of: dict[int, str]) -> dict[Scope, Tally]:
    out: dict[Scope, Tally] = {}
    for r in running:
        account = account_of.get(r.assoc, "default") if r.assoc is not None else "default"
        scopes = [Scope("user", r.owner), Scope("account", account)]
        if r.app:
            scopes.append(Scope("app", r.app))
        for s in scopes:
            out.setdefault(s, Tally()).add(r.alloc)
    return out
