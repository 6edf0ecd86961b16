"""Accounts, shares and limits (issue 20): the admin's operations, the share report
(`kran share`), and what a submit is checked against (the account charged, wall time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kran.domain.fairshare import DEFAULT_ACCOUNT
from kran.domain.jobs import ACCOUNT_NAME, JobSpec
from kran.domain.limits import LIMIT_NAMES, SCOPES, Limits, LimitSet, Scope, priority_refusal, wall_refusal
from kran.errors import InvalidInput, NotFound
from kran.ports import Accounts, Clock
from kran.services.fairness import Fairness

MAX_SHARES = 1_000_000


class AccountService:
    def __init__(self, accounts: Accounts, fairness: Fairness, clock: Clock, user_exists: Any) -> None:
        self.accounts = accounts
        self.fairness = fairness
        self.clock = clock
        self.user_exists = user_exists  # name -> bool

    # ---- admin

    def add_account(self, name: str, shares: int, description: str) -> None:
        _check_name(name)
        _check_shares(shares)
        self.accounts.add_account(name, shares, description, self.clock.now())

    def set_account(self, name: str, shares: int | None, description: str | None) -> None:
        if shares is not None:
            _check_shares(shares)
        self.accounts.set_account(name, shares, description)

    def add_member(self, account: str, user: str, shares: int | None) -> None:
        if shares is not None:
            _check_shares(shares)
        if not self.user_exists(user):
            raise NotFound(f"user {user} not found")
        self.accounts.add_member(account, user, shares, self.clock.now())

    def remove_member(self, account: str, user: str) -> None:
        self.accounts.remove_member(account, user)

    def list_accounts(self) -> list[dict[str, Any]]:
        members: dict[str, list[str]] = {}
        for a in self.accounts.associations():
            if a.member:
                members.setdefault(a.account, []).append(a.user)
        return [
            {
                "name": r["name"],
                "shares": r["shares"],
                "description": r["description"],
                "users": members.get(r["name"], []),
            }
            for r in self.accounts.accounts()
        ]

    def share_report(self, user: str | None) -> list[dict[str, Any]]:
        """Every association (or one user's) with shares, usage and factor, as `sshare`."""
        now = self.clock.now()
        standing = self.fairness.standing(now)
        rows = []
        for a in sorted(standing.assocs, key=lambda a: (a.account, a.user)):
            if user is not None and a.user != user:
                continue
            s = standing.shares[a.id]
            rows.append(
                {
                    "account": a.account,
                    "user": a.user,
                    "member": a.member,
                    "account_shares": a.account_shares,
                    "shares": a.shares,
                    "norm_shares": round(s.norm_shares, 6),
                    "usage": round(s.usage, 3),
                    "norm_usage": round(s.norm_usage, 6),
                    "effective_usage": round(s.effective_usage, 6),
                    "fair_share": round(s.factor, 6),
                }
            )
        return rows

    def limits(self) -> list[dict[str, Any]]:
        out = []
        for (scope, name), lim in sorted(self.fairness.limit_set().set.items()):
            out.append({"scope": scope, "name": name, **_limits_json(lim)})
        return out

    def set_limits(self, scope: str, name: str, values: dict[str, int | float | None]) -> dict[str, Any]:
        if scope not in SCOPES:
            raise InvalidInput(f"scope: one of {', '.join(SCOPES)}", "scope")
        if scope == "default":
            name = ""
        elif not name or len(name) > 200 or "\0" in name:
            raise InvalidInput("name: 1-200 characters", "name")
        unknown = set(values) - set(LIMIT_NAMES)
        if unknown:
            raise InvalidInput(f"unknown limit {sorted(unknown)[0]}", sorted(unknown)[0])
        for k, v in values.items():
            if v is not None and k != "max_priority" and v < (1 if k == "max_wall_s" else 0):
                raise InvalidInput(f"{k}: must not be negative" if k != "max_wall_s" else f"{k}: at least 1", k)
        if values.get("max_running_cpus") is not None:  # stored in millicpus
            values = {**values, "max_running_cpus": round(float(values["max_running_cpus"] or 0) * 1000)}
        lim = self.accounts.set_limits(scope, name, values)
        self.fairness.limits_changed()
        return {"scope": scope, "name": name, **_limits_json(lim)}

    # ---- submit

    def charge(self, specs: Sequence[JobSpec], owner: str) -> list[JobSpec]:
        """The specs with what the account and wall-time limits make of them: an account
        named must be one of the owner's (or "default" for a user of none); a timeout over
        a max wall time is refused, a missing one becomes the limit."""
        mine: list[str] | None = None
        first: str | None = None
        limit_set = self.fairness.limit_set()  # one snapshot for the whole submission
        # The limits a job counts against depend only on its (account, app): a batch's jobs
        # share a few, so each is worked out once, not once per job and per rule.
        scopes: dict[tuple[str, str | None], list[tuple[Scope, Limits]]] = {}
        out = []
        for i, spec in enumerate(specs):
            where = f"jobs[{i}]." if len(specs) > 1 else ""
            account = spec.account
            if account is not None:
                if mine is None:
                    mine = self.accounts.memberships(owner)
                if account not in mine and not (account == DEFAULT_ACCOUNT and not mine):
                    # the same words whether the account exists or not
                    raise InvalidInput(f"{where}account {account}: not an account of {owner}", where + "account")
                charged_to = account
            else:
                if first is None:
                    first = self._first(owner, limit_set)
                charged_to = first
            key = (charged_to, spec.app)
            if key not in scopes:
                scopes[key] = limit_set.scopes(owner, charged_to, spec.app)
            timeout, refused = wall_refusal(scopes[key], spec.timeout_s)
            if refused:
                raise InvalidInput(f"{where}{refused}", where + "timeout")
            too_high = priority_refusal(scopes[key], spec.priority)
            if too_high:
                raise InvalidInput(f"{where}{too_high}", where + "priority")
            out.append(spec if timeout == spec.timeout_s else replace(spec, timeout_s=timeout))
        return out

    def _first(self, owner: str, limit_set: LimitSet) -> str:
        if not limit_set.set:
            return DEFAULT_ACCOUNT  # no limit reads it: spare the query
        mine = self.accounts.memberships(owner)
        return mine[0] if mine else DEFAULT_ACCOUNT


def _limits_json(lim: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(lim, k) for k in LIMIT_NAMES}
    if out["max_running_cpus"] is not None:
        out["max_running_cpus"] = out["max_running_cpus"] / 1000
    return out


def _check_name(name: str) -> None:
    if not ACCOUNT_NAME.fullmatch(name):
        raise InvalidInput("name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", "name")


def _check_shares(shares: int) -> None:
    if not 0 <= shares <= MAX_SHARES:
        raise InvalidInput(f"shares: between 0 and {MAX_SHARES}", "shares")
