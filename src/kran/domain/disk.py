"""Disk marks and the data dir's free-space watermark: pure decisions."""

from __future__ import annotations

from kran.domain.images import parse_size

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
