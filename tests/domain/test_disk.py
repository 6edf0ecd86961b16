"""Disk marks and the data dir's watermark (pure)."""

from __future__ import annotations

import pytest

from kran.domain.disk import check_mark, full_reason, mark_bytes
from kran.domain.retry import AttemptEnd, settle_attempt

G = 1 << 30


def test_marks_are_sizes_or_shares() -> None:
    assert mark_bytes("1G", None) == G
    assert mark_bytes("5%", 100 * G) == 5 * G
    assert mark_bytes("5%", None) is None
    for bad in ("-1G", "lots", "101%", "x%"):
        with pytest.raises(ValueError):
            check_mark(bad)
    check_mark("0")
    check_mark("0%")


def test_full_below_the_watermark_and_not_at_it() -> None:
    assert full_reason(G, 10 * G, "1G", "files.min_free") is None
    why = full_reason(G - 1, 10 * G, "1G", "files.min_free")
    assert why is not None and "1023 MiB free of 10240 MiB" in why and "files.min_free = 1G" in why
    assert full_reason(0, 10 * G, "0", "files.min_free") is None  # no watermark
    assert full_reason(G, 10 * G, "20%", "files.min_free") is not None


def test_a_failure_names_what_the_server_saw() -> None:
    cause = "data dir full: 0 MiB free"
    failed = settle_attempt(AttemptEnd(1, cause=cause), attempt=1, retries=0, timeout_s=None, backoff_s=1)
    assert failed.reason == f"exit code 1 ({cause})"
    lost = settle_attempt(
        AttemptEnd(None, vanished=True, cause=cause), attempt=1, retries=0, timeout_s=None, backoff_s=1
    )
    assert lost.reason.startswith("the job's process or container vanished") and cause in lost.reason


def test_eviction_takes_the_attempt_furthest_over_its_grant() -> None:
    from kran.domain.disk import EVICT_OVER, eviction_choice

    mib = 1 << 20
    assert eviction_choice([]) is None
    small = [("a", EVICT_OVER - 1, 0), ("b", 500 * mib, 500 * mib)]  # within its grant, or by little
    assert eviction_choice(small) is None
    used = [*small, ("c", 300 * mib, 0), ("d", 900 * mib, 500 * mib), ("e", 2000 * mib, 1000 * mib)]
    assert eviction_choice(used) == ("e", 2000 * mib, 1000 * mib)
    assert eviction_choice(used[:-1]) == ("d", 900 * mib, 500 * mib)  # 400 over beats 300 over
