"""Usage of attempts and jobs, efficiency hints, and usage reports: pure functions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

APP_LABEL = "kran.app"  # the job label usage reports group apps by (set by apps, issue 4)


@dataclass(frozen=True)
class Usage:
    """Measured by the engine at the end of an attempt; None where not measurable."""

    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    io_bytes: int | None = None


def attempt_usage(
    usage: Usage,
    *,
    queued_at: float | None,
    created_at: float,
    started_at: float | None,
    finished_at: float | None,
    alloc_cpus: float,
) -> dict[str, float | int | None]:
    """The `usage` object of an attempt in the API (see docs/api.md)."""
    wall = finished_at - started_at if finished_at is not None and started_at is not None else None
    util = None
    if usage.cpu_seconds is not None and wall and alloc_cpus:
        util = round(usage.cpu_seconds / (wall * alloc_cpus), 4)
    return {
        "wall_seconds": wall,
        "queue_seconds": created_at - queued_at if queued_at is not None else None,
        "pull_seconds": None,
        "cpu_seconds": usage.cpu_seconds,
        "peak_memory_bytes": usage.peak_memory_bytes,
        "io_bytes": usage.io_bytes,
        "cpu_utilization": util,
    }


def job_usage(attempts: Sequence[dict[str, float | int | None]]) -> dict[str, float | int | None]:
    """A job's usage over its attempts: times and amounts add up, the peak is the highest."""
    keys = ("wall_seconds", "queue_seconds", "pull_seconds", "cpu_seconds", "io_bytes")
    out: dict[str, float | int | None] = {k: sum_optional(a[k] for a in attempts) for k in keys}
    peaks = [a["peak_memory_bytes"] for a in attempts if a["peak_memory_bytes"] is not None]
    out["peak_memory_bytes"] = max(peaks) if peaks else None
    return out


def sum_optional(values: Iterable[float | int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def efficiency_hints(
    *,
    cpu_seconds: float | None,
    peak_memory_bytes: int | None,
    wall_seconds: float | None,
    alloc_cpus: float,
    alloc_mem_mb: int,
) -> list[str]:
    """What `seff` users expect: say so when a job used far less than it was given (< 25%)."""
    hints = []
    if peak_memory_bytes is not None and alloc_mem_mb > 0:
        share = peak_memory_bytes / (alloc_mem_mb * 1024 * 1024)
        if share < 0.25:
            hints.append(
                f"used {share:.0%} of its {alloc_mem_mb} MiB memory (peak {peak_memory_bytes / 1048576:.0f} MiB): "
                "ask for less with --mem"
            )
    if cpu_seconds is not None and wall_seconds and alloc_cpus > 0:
        share = cpu_seconds / (wall_seconds * alloc_cpus)
        if share < 0.25 and wall_seconds >= 1:
            hints.append(f"used {share:.0%} of its {alloc_cpus:g} cpus on average: ask for fewer with --cpus")
    return hints


@dataclass(frozen=True)
class AttemptFacts:
    """One finished attempt, as a usage report needs it."""

    job_id: int
    user: str
    app: str | None
    image: str | None
    job_state: str  # the job's end state
    finished_at: float
    wall_seconds: float
    cpu_seconds: float | None
    alloc_mem_mb: int
    alloc_gpus: int
    last_attempt: bool  # counts the job once
    account: str | None = None  # charged to (fair share); None: before accounts
    array_id: int | None = None  # a task of this array


@dataclass
class ReportRow:
    key: str
    jobs: dict[str, int] = field(default_factory=dict)
    cpu_hours: float = 0.0
    mem_gb_hours: float = 0.0
    gpu_hours: float = 0.0
    wall_hours: float = 0.0


REPORT_BY = ("user", "account", "app", "day", "image", "array")


def report_key(f: AttemptFacts, by: str) -> str:
    if by == "user":
        return f.user
    if by == "app":
        return f.app or "-"
    if by == "image":
        return f.image or "(host)"
    if by == "day":
        return datetime.fromtimestamp(f.finished_at, UTC).date().isoformat()
    if by == "account":
        return f.account or "default"
    if by == "array":
        return str(f.array_id) if f.array_id is not None else "-"
    raise ValueError(f"cannot group by {by!r} ({', '.join(REPORT_BY)})")


def usage_report(facts: Sequence[AttemptFacts], by: str) -> list[ReportRow]:
    """Jobs by end state, CPU hours (measured), memory GB-hours and GPU hours (allocated x
    wall time, as batch systems bill them) and wall hours, per group, every attempt counted."""
    rows: dict[str, ReportRow] = defaultdict(lambda: ReportRow(""))
    for f in facts:
        key = report_key(f, by)
        row = rows[key]
        row.key = key
        hours = f.wall_seconds / 3600
        row.cpu_hours += (f.cpu_seconds or 0.0) / 3600
        row.mem_gb_hours += f.alloc_mem_mb / 1024 * hours
        row.gpu_hours += f.alloc_gpus * hours
        row.wall_hours += hours
        if f.last_attempt:
            row.jobs[f.job_state] = row.jobs.get(f.job_state, 0) + 1
    return [rows[k] for k in sorted(rows)]
