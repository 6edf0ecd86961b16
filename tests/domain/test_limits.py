"""Limits over explicit numbers (issue 20.3)."""

from __future__ import annotations

from kran.domain.limits import (
    Limits,
    LimitSet,
    Scope,
    Tally,
    budget,
    first_hold,
    priority_refusal,
    queued_refusal,
    wall_refusal,
)
from kran.domain.placement import Candidate, NodeCapacity, place_jobs
from kran.domain.resources import Range, ResourceRequest, Resources


def _req(cpus: int = 1000, most: int | None = None) -> ResourceRequest:
    return ResourceRequest(Range(cpus, most if most is not None else cpus), Range(64, 64), Range(0, 0), Range(0, 0))


def test_the_default_stands_for_users_without_their_own() -> None:
    ls = LimitSet({("default", ""): Limits(max_running_jobs=4, max_queued_jobs=10), ("user", "alice"): Limits(8)})
    assert ls.of(Scope("user", "alice")) == Limits(max_running_jobs=8, max_queued_jobs=10)
    assert ls.of(Scope("user", "bob")) == Limits(max_running_jobs=4, max_queued_jobs=10)
    assert ls.of(Scope("account", "physics")) == Limits()  # the default is per user only
    assert [str(s) for s, _ in ls.scopes("bob", "physics", "blast")] == ["user bob"]


def test_hold_reasons_name_the_scope_and_the_numbers() -> None:
    alice = Scope("user", "alice")
    lim = Limits(max_running_jobs=8, max_running_cpus=4000, max_running_mem_mb=1024, max_running_gpus=1)
    full = Tally(8, Resources(1000, 0, 0, 0))
    assert first_hold([(alice, lim)], {alice: full}, Resources(1000, 64)) == "user alice: 8 of 8 running jobs"
    cpus = Tally(2, Resources(3500, 0, 0, 0))
    assert first_hold([(alice, lim)], {alice: cpus}, Resources(1000, 64)) == (
        "user alice: 3.5 of 4 running cpus in use, the job needs 1"
    )
    assert first_hold([(alice, lim)], {}, Resources(1000, 2048)) == (
        "user alice: 0 of 1024 running MiB memory in use, the job needs 2048"
    )
    assert first_hold([(alice, lim)], {alice: Tally(1, Resources(0, 0, 1, 0))}, Resources(1000, 64, 1)) == (
        "user alice: 1 of 1 running gpus in use, the job needs 1"
    )
    assert first_hold([(alice, lim)], {alice: Tally(7, Resources(1000, 64))}, Resources(1000, 64)) is None


def test_a_cap_on_priority() -> None:
    scopes = [(Scope("user", "a"), Limits(max_priority=10)), (Scope("account", "x"), Limits(max_priority=0))]
    assert priority_refusal(scopes, 0) is None and priority_refusal(scopes, -1000) is None
    assert priority_refusal(scopes, 1) == "priority 1 is over account x's max priority of 0"
    assert priority_refusal([], 1000) is None


def test_queued_and_wall_refusals() -> None:
    s = Scope("account", "bio")
    assert queued_refusal(s, Limits(max_queued_jobs=10), 8, 2) is None
    assert queued_refusal(s, Limits(max_queued_jobs=10), 8, 3) == (
        "account bio: 8 of 10 queued jobs; 3 more refused, nothing stored"
    )
    scopes = [(Scope("user", "a"), Limits(max_wall_s=3600)), (s, Limits(max_wall_s=600))]
    assert wall_refusal(scopes, None) == (600, None)  # the least limit becomes the timeout
    assert wall_refusal(scopes, 60) == (60, None)
    assert wall_refusal(scopes, 601)[1] == "timeout 601s is over account bio's max wall time of 600s"
    assert wall_refusal([], None) == (None, None)


def test_placement_keeps_within_budgets_and_caps_ranges() -> None:
    node = NodeCapacity("n", Resources(8000, 8192, 0, 0))
    alice, acct = Scope("user", "alice"), Scope("account", "x")
    budgets = {alice: budget(Limits(max_running_jobs=2), Tally()), acct: budget(Limits(max_running_cpus=3000), Tally())}
    cands = [
        Candidate(1, _req(1000, 4000), 0, budgets=(alice, acct)),  # a range: capped at 3 cpus
        Candidate(2, _req(), 0, budgets=(alice, acct)),  # the account's cpus are used up
        Candidate(3, _req(), 0, budgets=(Scope("user", "bob"),)),  # no budget of its own: free
        Candidate(4, _req(), 0),
    ]
    p = place_jobs(cands, [node], reserve_after_s=0.0, budgets=budgets)
    assert [(a.job_id, a.allocation.millicpus) for a in p.assignments] == [(1, 3000), (3, 1000), (4, 1000)]
    # held by a limit, a job that waited long reserves nothing: job 4 started behind it
    assert p.reserved_for is None
    assert budgets[alice] == [1, *budgets[alice][1:]] and budgets[acct][1] == 0
