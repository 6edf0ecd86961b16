"""Fair share over explicit numbers (issue 20.1): docs/fairness.md's worked example."""

from __future__ import annotations

import pytest

from kran.domain.fairshare import Association, RunningCharge, UsagePolicy, queue_key, standings, usage_now
from kran.domain.resources import Resources

DAY = 86400.0


def _a(i: int, account: str, user: str, shares: int = 1, account_shares: int = 1, usage: float = 0.0) -> Association:
    return Association(i, account, user, shares, account_shares, usage, 0.0)


def test_the_worked_example() -> None:
    """physics (2 shares): alice, bob; bio (1 share): carol. Used 600, 0, 300."""
    assocs = [_a(1, "physics", "alice", 1, 2), _a(2, "physics", "bob", 1, 2), _a(3, "bio", "carol", 1, 1)]
    s = standings(assocs, {1: 600.0, 2: 0.0, 3: 300.0})
    assert [round(s[i].norm_shares, 6) for i in (1, 2, 3)] == [round(1 / 3, 6)] * 3
    assert [round(s[i].norm_usage, 6) for i in (1, 2, 3)] == [round(2 / 3, 6), 0.0, round(1 / 3, 6)]
    # bob inherits half of his account's usage: UE = 0 + (2/3 - 0) x 1/2
    assert [round(s[i].effective_usage, 6) for i in (1, 2, 3)] == [round(2 / 3, 6), round(1 / 3, 6), round(1 / 3, 6)]
    assert [round(s[i].factor, 6) for i in (1, 2, 3)] == [0.25, 0.5, 0.5]


def test_no_usage_is_factor_one_and_usage_at_share_is_half() -> None:
    assocs = [_a(1, "default", "a"), _a(2, "default", "b")]
    assert {i: f.factor for i, f in standings(assocs, {}).items()} == {1: 1.0, 2: 1.0}
    s = standings(assocs, {1: 50.0, 2: 50.0})  # in one account, each inherits half of its usage
    assert s[1].factor == s[2].factor == pytest.approx(2**-1.5)
    apart = [_a(1, "x", "a"), _a(2, "y", "b")]
    s = standings(apart, {1: 50.0, 2: 50.0})  # effective usage exactly at the share: one half
    assert s[1].factor == s[2].factor == pytest.approx(0.5)
    s = standings(assocs, {1: 100.0, 2: 0.0})
    assert s[2].factor > s[1].factor  # who used less goes first


def test_zero_shares_rank_last() -> None:
    s = standings([_a(1, "default", "a", shares=0), _a(2, "default", "b")], {})
    assert s[1].factor == 0.0 and s[2].factor == 1.0
    s = standings([_a(1, "idle", "a", account_shares=0)], {})
    assert s[1].factor == 0.0


def test_decay_halves_per_half_life_and_charges_add() -> None:
    p = UsagePolicy(half_life_s=DAY)
    assert p.decayed(100.0, 0.0, DAY) == pytest.approx(50.0)
    assert p.decayed(100.0, 0.0, 2 * DAY) == pytest.approx(25.0)
    assert p.decayed(100.0, 10.0, 5.0) == 100.0  # a clock going back decays nothing
    assert p.charged(100.0, 0.0, 10.0, DAY) == pytest.approx(60.0)
    assert p.decayed(0.0, 0.0, DAY) == 0.0


def test_billing_counts_cpus_memory_and_gpus_held() -> None:
    p = UsagePolicy(weight_mem_gb=0.25, weight_gpu=2.0)
    assert p.billing(Resources(2000, 4096, 1, 0), 10.0) == pytest.approx(10 * (2 + 1 + 2))
    assert p.billing(Resources(1000, 0, 0, 0), -5.0) == 0.0  # a clock step back charges nothing


def test_running_attempts_count_until_they_end() -> None:
    p = UsagePolicy(half_life_s=DAY)
    a = Association(1, "default", "a", 1, 1, 100.0, 0.0)
    running = [
        RunningCharge(1, "a", None, Resources(1000, 0, 0, 0), 100.0),
        RunningCharge(1, "a", None, Resources(1000, 0, 0, 0), None),  # still starting
        RunningCharge(None, "x", None, Resources(1000, 0, 0, 0), 0.0),  # a job from before accounts
    ]
    got = usage_now(p, [a], running, 110.0)
    assert got[1] == pytest.approx(p.decayed(100.0, 0.0, 110.0) + 10.0)


def test_queue_key_orders_priority_then_factor_then_age() -> None:
    jobs = [(0, 0.5, 3), (0, 0.9, 7), (5, 0.1, 9), (0, 0.9, 4)]
    assert sorted(jobs, key=lambda j: queue_key(*j)) == [(5, 0.1, 9), (0, 0.9, 4), (0, 0.9, 7), (0, 0.5, 3)]
