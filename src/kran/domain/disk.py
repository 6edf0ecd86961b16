"""Disk marks and the data dir's free-space watermark: pure decisions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from kran.domain.images import parse_size

K = TypeVar("K")

MIB = 1 << 20


def mark_bytes(text: str, capacity: int | None) -> int | None:
    """'80%' of the disk, or an absolute size ('20G'); None when a share has no disk to refer to."""
    t = text.strip()
    if t.endswith("%"):
        return None if capacity is None else int(capacity * float(t[:-1]) / 100)
    return parse_size(t)


def check_mark(text: str) -> None:
    """ValueError unless `text` is a size or a share of the disk from 0% to 100%."""
    t = text.strip()
    if t.endswith("%"):
        try:
            share = float(t[:-1])
        except ValueError:
            raise ValueError(f"{text!r} is not a share of the disk (e.g. 5%)") from None
        if not 0 <= share <= 100:
            raise ValueError(f"{text!r}: a share of the disk is from 0% to 100%")
        return
    parse_size(t)


def full_reason(free: int, total: int, min_free: str, setting: str) -> str | None:
    """Why the data dir counts as full (free space below the watermark), or None."""
    mark = mark_bytes(min_free, total)
    if not mark or free >= mark:
        return None
    return (
        f"data dir full: {free // MIB} MiB free of {total // MIB} MiB, "
        f"below the {mark // MIB} MiB watermark ({setting} = {min_free.strip()})"
    )


EVICT_OVER = 64 * MIB  # an attempt's files past its grant by less are not worth its run


def eviction_choice(used: Sequence[tuple[K, int, int]]) -> tuple[K, int, int] | None:
    """With the data dir full, the running attempt to evict, from (key, bytes its files take,
    bytes of disk it was granted): the one furthest over its grant (as Kubernetes ranks pods
    under disk pressure, by usage over request), if by EVICT_OVER at least; None when none
    is (the disk is then full of what is not theirs: a kill would free little)."""
    over = [u for u in used if u[1] - u[2] >= EVICT_OVER]
    return max(over, key=lambda u: (u[1] - u[2], u[1]), default=None)
