"""Limits per account, user and app (issue 20.3): pure rules, Slurm's association limits
by other names (MaxJobs, GrpTRES, MaxSubmitJobs, MaxWall).

A limit is set for one scope: `account NAME`, `user NAME`, `app NAME` (the app's
OWNER/NAME as jobs name it), or `default`, whose values stand for each user who has no
value of their own for that field. An unset field is no limit. A job counts against its
user's, its account's and its app's limits; the first one reached holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from kran.domain.resources import Resources, format_cpus

SCOPES = ("default", "account", "user", "app")
UNLIMITED = 1 << 62


@dataclass(frozen=True)
class Limits:
    max_running_jobs: int | None = None
    max_running_cpus: int | None = None  # millicpus
    max_running_mem_mb: int | None = None
    max_running_gpus: int | None = None
    max_queued_jobs: int | None = None
    max_wall_s: float | None = None
    max_priority: int | None = None  # the highest --priority a job may ask for (Slurm: only admins raise it)

    def over(self, other: Limits) -> Limits:
        """These values, with `other`'s where these have none."""
        return Limits(*(v if (v := getattr(self, n)) is not None else getattr(other, n) for n in LIMIT_NAMES))

    @property
    def empty(self) -> bool:
        return all(getattr(self, n) is None for n in LIMIT_NAMES)


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


@dataclass(frozen=True)
class Scope:
    kind: str  # account | user | app
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class LimitSet:
    """Every limit in force: (kind, name) -> Limits, plus the default for users."""

    set: Mapping[tuple[str, str], Limits]

    @property
    def default(self) -> Limits:
        return self.set.get(("default", ""), Limits())

    def of(self, scope: Scope) -> Limits:
        own = self.set.get((scope.kind, scope.name), Limits())
        return own.over(self.default) if scope.kind == "user" else own

    def scopes(self, user: str, account: str, app: str | None) -> list[tuple[Scope, Limits]]:
        """The scopes a job counts in that have some limit, user first."""
        if not self.set:  # no limit anywhere (the usual case): none of them has one
            return []
        out = [Scope("user", user), Scope("account", account)]
        if app:
            out.append(Scope("app", app))
        return [(s, lim) for s in out if not (lim := self.of(s)).empty]


@dataclass
class Tally:
    """What one scope has running (starting or running attempts)."""

    jobs: int = 0
    alloc: Resources = Resources()

    def add(self, alloc: Resources) -> None:
        self.jobs += 1
        self.alloc = self.alloc + alloc


def budget(limits: Limits, tally: Tally) -> list[int]:
    """What the scope may still start: [jobs, millicpus, mem_mb, gpus]; UNLIMITED where no limit."""
    caps = (limits.max_running_jobs, limits.max_running_cpus, limits.max_running_mem_mb, limits.max_running_gpus)
    used = (tally.jobs, tally.alloc.millicpus, tally.alloc.mem_mb, tally.alloc.gpus)
    return [UNLIMITED if c is None else c - u for c, u in zip(caps, used, strict=True)]


def running_hold(scope: Scope, limits: Limits, tally: Tally, need: Resources) -> str | None:
    """Why a job needing `need` cannot start within this scope's running limits now, or None.
    Worded as the pending reason: "user alice: 8 of 8 running jobs"."""
    if limits.max_running_jobs is not None and tally.jobs + 1 > limits.max_running_jobs:
        return f"{scope}: {tally.jobs} of {limits.max_running_jobs} running jobs"
    checks = (
        (limits.max_running_cpus, tally.alloc.millicpus, need.millicpus, "cpus", format_cpus),
        (limits.max_running_mem_mb, tally.alloc.mem_mb, need.mem_mb, "MiB memory", str),
        (limits.max_running_gpus, tally.alloc.gpus, need.gpus, "gpus", str),
    )
    for cap, used, wants, unit, fmt in checks:
        if cap is not None and used + wants > cap:
            return f"{scope}: {fmt(used)} of {fmt(cap)} running {unit} in use, the job needs {fmt(wants)}"
    return None


def first_hold(scopes: Iterable[tuple[Scope, Limits]], tallies: Mapping[Scope, Tally], need: Resources) -> str | None:
    for scope, limits in scopes:
        why = running_hold(scope, limits, tallies.get(scope, Tally()), need)
        if why:
            return why
    return None


def queued_refusal(scope: Scope, limits: Limits, queued: int, more: int) -> str | None:
    """The 429's words when `more` jobs would put the scope past its queued limit."""
    cap = limits.max_queued_jobs
    if cap is not None and queued + more > cap:
        return f"{scope}: {queued} of {cap} queued jobs; {more} more refused, nothing stored"
    return None


def priority_refusal(scopes: Iterable[tuple[Scope, Limits]], priority: int) -> str | None:
    """Why a job's priority is over a limit, or None: without a cap, a user could put every
    job of theirs ahead of everyone's fair share."""
    caps = [(s, lim.max_priority) for s, lim in scopes if lim.max_priority is not None]
    if not caps:
        return None
    scope, least = min(caps, key=lambda c: c[1] or 0)
    if least is not None and priority > least:
        return f"priority {priority} is over {scope}'s max priority of {least}"
    return None


def wall_refusal(scopes: Iterable[tuple[Scope, Limits]], timeout_s: float | None) -> tuple[float | None, str | None]:
    """The job's timeout under the wall-time limits: (timeout to use, refusal or None).
    A job without a timeout gets the smallest limit (as Slurm gives MaxWall); one asking
    for more than a limit is refused."""
    walls = [(s, lim.max_wall_s) for s, lim in scopes if lim.max_wall_s is not None]
    if not walls:
        return timeout_s, None
    scope, least = min(walls, key=lambda w: w[1] or 0.0)
    assert least is not None
    if timeout_s is None:
        return least, None
    if timeout_s > least:
        return timeout_s, f"timeout {timeout_s:g}s is over {scope}'s max wall time of {least:g}s"
    return timeout_s, None
