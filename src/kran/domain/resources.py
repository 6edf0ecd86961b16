"""Resources, resource ranges and how much of a range a node can grant.

CPUs are counted in millicpus internally (exact sums, no float drift); memory and
disk in MiB; GPUs as whole devices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

KINDS = ("cpus", "mem_mb", "gpus", "disk_mb")


@dataclass(frozen=True)
class Resources:
    millicpus: int = 0
    mem_mb: int = 0
    gpus: int = 0
    disk_mb: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Resources) -> Resources:
        return Resources(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def covers(self, other: Resources) -> bool:
        return all(getattr(self, f.name) >= getattr(other, f.name) for f in fields(self))

    @property
    def cpus(self) -> float:
        return self.millicpus / 1000

    def as_dict(self) -> dict[str, float | int]:
        return {"cpus": self.cpus, "mem_mb": self.mem_mb, "gpus": self.gpus, "disk_mb": self.disk_mb}


@dataclass(frozen=True)
class Range:
    """min..max; max None means "as much as fits"."""

    min: int
    max: int | None

    def __post_init__(self) -> None:
        if self.min < 0:
            raise ValueError("must not be negative")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max {self.max} is below min {self.min}")

    def grant(self, free: int) -> int | None:
        """The largest value in the range that fits in `free`, or None."""
        if free < self.min:
            return None
        return free if self.max is None else min(self.max, free)

    def text(self, scale: int = 1) -> str:
        lo = _fmt(self.min, scale)
        if self.max is None:
            return f"{lo}-"
        return lo if self.max == self.min else f"{lo}-{_fmt(self.max, scale)}"


@dataclass(frozen=True)
class ResourceRequest:
    cpus: Range  # millicpus
    mem_mb: Range
    gpus: Range
    disk_mb: Range

    @property
    def minimum(self) -> Resources:
        return Resources(self.cpus.min, self.mem_mb.min, self.gpus.min, self.disk_mb.min)

    def grant(self, free: Resources) -> Resources | None:
        """Largest allocation within every range that fits `free`, or None."""
        parts = (
            self.cpus.grant(free.millicpus),
            self.mem_mb.grant(free.mem_mb),
            self.gpus.grant(free.gpus),
            self.disk_mb.grant(free.disk_mb),
        )
        if any(p is None for p in parts):
            return None
        c, m, g, d = parts
        assert c is not None and m is not None and g is not None and d is not None
        return Resources(c, m, g, d)


def _fmt(value: int, scale: int) -> str:
    if scale == 1:
        return str(value)
    return format_cpus(value)


def format_cpus(millicpus: int) -> str:
    """1000 -> '1', 250 -> '0.25'."""
    whole, frac = divmod(millicpus, 1000)
    return str(whole) if frac == 0 else f"{whole}.{frac:03d}".rstrip("0")


_SIZE_UNITS = {
    "": 1,
    "m": 1,
    "mb": 1,
    "mi": 1,
    "mib": 1,
    "g": 1024,
    "gb": 1024,
    "gi": 1024,
    "gib": 1024,
    "t": 1024 * 1024,
    "tb": 1024 * 1024,
}
_NUM = r"(\d+(?:\.\d+)?)"
_CPUS = re.compile(_NUM)
_SIZE = re.compile(_NUM + r"\s*([a-z]*)")


def _parse_amount(text: str, kind: str) -> int:
    text = text.strip().lower()
    if kind == "cpus":
        if not _CPUS.fullmatch(text):
            raise ValueError(f"{text!r} is not a number of cpus")
        millis = round(float(text) * 1000)
        if abs(float(text) * 1000 - millis) > 1e-6:
            raise ValueError(f"{text!r}: cpus have a resolution of 0.001")
        return millis
    if kind == "gpus":
        if not text.isdigit():
            raise ValueError(f"{text!r} is not a whole number of gpus")
        return int(text)
    m = _SIZE.fullmatch(text)
    if not m or m.group(2) not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size in MiB (e.g. 512, 512M, 2G)")
    return round(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


MAX_AMOUNT = {"cpus": 1_000_000 * 1000, "mem_mb": 1 << 40, "gpus": 1 << 16, "disk_mb": 1 << 40}


def parse_range(value: str | int | float, kind: str) -> Range:
    """'1-4', '2', '2-' (as much as fits); numbers are exact amounts.

    Raises ValueError with a short reason.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown resource {kind!r}")
    if isinstance(value, bool):
        raise ValueError("expected a number or a range like 1-4")
    if isinstance(value, (int, float)):
        value = repr(value) if isinstance(value, float) else str(value)
    text = value.strip()
    if not text:
        raise ValueError("empty range")
    if text.startswith("-"):
        raise ValueError(f"{text!r}: must not be negative")
    lo_text, sep, hi_text = text.partition("-")
    lo = _parse_amount(lo_text, kind)
    if not sep:
        hi: int | None = lo
    elif hi_text.strip() == "":
        hi = None
    else:
        hi = _parse_amount(hi_text, kind)
    for v in (lo, hi):
        if v is not None and v > MAX_AMOUNT[kind]:
            raise ValueError(f"{text!r} is absurdly large")
    return Range(lo, hi)
