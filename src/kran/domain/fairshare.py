"""Fair share (issue 20): pure functions over shares and decayed usage.

Names and the formula follow Slurm's classic multifactor plugin, as its users know it:

- usage is charged per association (an account and a user in it) in *billing seconds*:
  seconds an attempt ran x (cpus + mem GiB x weight_mem_gb + gpus x weight_gpu) of what it
  was allocated (Slurm's TRES billing; a job that holds 4 cpus and sleeps kept others off
  them). It decays: usage counted t seconds ago weighs 2^(-t / half_life).
- normalized shares: S(account) = its shares / the shares of all accounts;
  S(user) = S(account) x the user's shares / the shares of the account's users.
- normalized usage: U = usage / the usage of everyone (0 when nobody used anything).
- effective usage: UE(user) = U(user) + (U(account) - U(user)) x shares(user) / shares(account's users),
  so a user inherits part of their account's usage (a busy account's users rank lower).
- the fair-share factor: F = 2^(-UE / S(user)), 1 for no usage, 0.5 for an effective usage
  exactly at one's share, towards 0 above it.

Queue order: priority (high first), then F (high first), then submission (old first). Fair
share only orders the queue; it never holds a job back, so a user alone gets everything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kran.domain.resources import Resources

DEFAULT_ACCOUNT = "default"  # users who belong to no account are charged here
DAY_S = 86400.0


@dataclass(frozen=True)
class UsagePolicy:
    half_life_s: float = DAY_S
    weight_mem_gb: float = 0.25  # billing per GiB of memory, as a cpu is 1 (Slurm's example weights)
    weight_gpu: float = 1.0

    def billing(self, alloc: Resources, seconds: float) -> float:
        """Billing seconds of an allocation held for `seconds`."""
        per_s = alloc.millicpus / 1000 + alloc.mem_mb / 1024 * self.weight_mem_gb + alloc.gpus * self.weight_gpu
        return max(0.0, seconds) * per_s

    def decayed(self, usage: float, at: float, now: float) -> float:
        """Usage recorded as `usage` at time `at`, as it weighs at `now`."""
        if usage <= 0.0:
            return 0.0
        return float(usage * 2.0 ** (-max(0.0, now - at) / self.half_life_s))

    def charged(self, usage: float, at: float, amount: float, now: float) -> float:
        """Usage after charging `amount` at `now` (stored with `now` as its time)."""
        return self.decayed(usage, at, now) + amount


@dataclass(frozen=True)
class Association:
    """An account and a user charged to it (Slurm's association)."""

    id: int
    account: str
    user: str
    shares: int  # the user's within the account
    account_shares: int
    usage: float  # billing seconds, as of `usage_at` (decay applied up to then)
    usage_at: float
    member: bool = True  # False: charged (a job of theirs ran here) but no longer a member


@dataclass(frozen=True)
class RunningCharge:
    """An active attempt as fair share and limits count it."""

    assoc: int | None
    owner: str
    app: str | None
    alloc: Resources
    started_at: float | None  # None: still starting (nothing accrues yet)


def usage_now(
    policy: UsagePolicy, assocs: Iterable[Association], running: Iterable[RunningCharge], now: float
) -> dict[int, float]:
    """Each association's usage at `now`: its stored usage decayed, plus what its running
    attempts have held so far (charged for good when they end)."""
    out = {a.id: policy.decayed(a.usage, a.usage_at, now) for a in assocs}
    for r in running:
        if r.assoc is not None and r.started_at is not None:
            out[r.assoc] = out.get(r.assoc, 0.0) + policy.billing(r.alloc, now - r.started_at)
    return out


@dataclass(frozen=True)
class FairShare:
    """One association's standing, as `kran share` and `kran job` show it."""

    norm_shares: float
    usage: float  # decayed billing seconds, now, running attempts included
    norm_usage: float
    effective_usage: float
    factor: float


def standings(assocs: Iterable[Association], usage_now: Mapping[int, float]) -> dict[int, FairShare]:
    """Each association's fair share, from its usage now (decayed, running work included).

    Associations with zero shares (or in an account with zero shares) get factor 0: they
    run when nobody else waits.
    """
    assocs = list(assocs)
    account_shares: dict[str, int] = {}
    user_shares: dict[str, int] = defaultdict(int)
    account_usage: dict[str, float] = defaultdict(float)
    for a in assocs:
        account_shares[a.account] = a.account_shares
        user_shares[a.account] += a.shares
        account_usage[a.account] += usage_now.get(a.id, 0.0)
    all_shares = sum(account_shares.values())
    total = sum(account_usage.values())
    out = {}
    for a in assocs:
        used = usage_now.get(a.id, 0.0)
        siblings = user_shares[a.account]
        s_account = a.account_shares / all_shares if all_shares else 0.0
        s_user = s_account * (a.shares / siblings) if siblings else 0.0
        u = used / total if total > 0 else 0.0
        u_account = account_usage[a.account] / total if total > 0 else 0.0
        ue = u + (u_account - u) * (a.shares / siblings) if siblings else u
        if s_user <= 0.0:
            factor = 0.0
        else:
            factor = 2.0 ** (-ue / s_user)
        out[a.id] = FairShare(s_user, used, u, ue, factor)
    return out


def queue_key(priority: int, factor: float, job_id: int) -> tuple[int, float, int]:
    """Sort key of a queued job: priority, then fair-share factor, then submission order."""
    return (-priority, -factor, job_id)
