"""When a schedule fires: pure functions over explicit datetimes (all aware, UTC out).

Triggers:
- `every`: an ISO 8601 repeating interval, `R5/2026-12-01T02:00:00Z/PT6H`, `R/P1D` or a
  bare duration `PT1H`. Fire times are start + k * period (k = 0, 1, ...; at most R of
  them). Periods with years or months add calendar months; the rest is exact time, so
  `--every` is not shifted by daylight-saving changes.
- `cron`: five fields (croniter) evaluated in wall-clock time of a time zone. On a
  spring-forward day a wall time that does not exist fires at the first instant after
  the change (no lost run); on a fall-back day a repeated wall time fires once, at its
  first occurrence (no double run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_DURATION = re.compile(
    r"P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


@dataclass(frozen=True)
class Period:
    months: int = 0
    seconds: float = 0.0

    def after(self, t: datetime, times: int = 1) -> datetime:
        if self.months:
            t = add_months(t, self.months * times)
        return t + timedelta(seconds=self.seconds * times)


@dataclass(frozen=True)
class Trigger:
    kind: str  # "every" | "cron"
    expr: str  # the duration (every) or the cron expression
    start: datetime  # first fire time (every) / not before (cron)
    repeat: int | None = None  # at most this many fire times
    tz: str = "UTC"


def parse_duration_iso(text: str) -> Period:
    m = _DURATION.fullmatch(text.strip().upper())
    if not m or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration (e.g. PT6H, P1D, P1M)")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    months = int(g["y"] * 12 + g["mo"])
    seconds = g["w"] * 604800 + g["d"] * 86400 + g["h"] * 3600 + g["mi"] * 60 + g["s"]
    if months == 0 and seconds < 1:
        raise ValueError(f"{text!r}: the period must be at least one second")
    return Period(months, seconds)


def parse_time(text: str, tz: str = "UTC") -> datetime:
    """ISO 8601 date-time; without an offset it is wall time in `tz`."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date-time (e.g. 2026-12-01T02:00:00Z)") from None
    try:
        if t.tzinfo is None:
            t = resolve_wall_time(t, zone(tz))
        return t.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the year 1 in UTC
        raise ValueError(f"{text!r} is out of the range of dates") from None


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{tz!r} is not a time zone (e.g. Europe/Berlin, UTC)") from None


def parse_every(text: str, now: datetime, start: datetime | None = None) -> tuple[datetime, int | None, str]:
    """`R5/2026-12-01T02:00:00Z/PT6H`, `R/P1D`, `PT1H` -> (start, repeat, duration text)."""
    parts = text.strip().split("/")
    repeat: int | None = None
    if parts[0].upper().startswith("R"):
        count = parts[0][1:]
        if count and not count.isdigit():
            raise ValueError(f"{text!r}: R must be followed by a count or nothing (R5, R)")
        repeat = int(count) if count else None
        if repeat == 0:
            raise ValueError(f"{text!r}: R0 never fires")
        parts = parts[1:]
    if len(parts) == 2:
        if start is not None:
            raise ValueError("give the start either in the interval or with --start, not both")
        start = parse_time(parts[0])
        parts = parts[1:]
    if len(parts) != 1:
        raise ValueError(f"{text!r} is not an ISO 8601 repeating interval (e.g. R5/2026-12-01T02:00:00Z/PT6H)")
    parse_duration_iso(parts[0])
    return (start or now), repeat, parts[0]


def check_cron(expr: str) -> None:
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise ValueError(f"{expr!r} is not a five-field cron expression (e.g. '30 2 * * *')")


def add_months(t: datetime, months: int) -> datetime:
    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    days = [
        31,
        29 if (year % 4 == 0 and (year % 100 or year % 400 == 0)) else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month - 1]
    return t.replace(year=year, month=month, day=min(t.day, days))


def resolve_wall_time(naive: datetime, z: ZoneInfo) -> datetime:
    """The instant of a wall time: its first occurrence if repeated, the first instant
    after the jump if skipped by a daylight-saving change."""
    first = naive.replace(tzinfo=z, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(z).replace(tzinfo=None) == naive:
        return instant
    t = naive.replace(tzinfo=z, fold=1).astimezone(UTC)  # before the gap
    t = t.replace(second=0, microsecond=0)
    while t.astimezone(z).replace(tzinfo=None) < naive:
        t += timedelta(minutes=1)
    return t


def next_fire_time(trigger: Trigger, after: datetime, fired: int = 0) -> datetime | None:
    """The first fire time strictly after `after`, or None when the schedule is done.
    `fired` counts fire times already used (for --repeat of cron schedules)."""
    if trigger.kind == "every":
        period = parse_duration_iso(trigger.expr)
        if after < trigger.start:
            k = 0
        elif period.months == 0:
            k = int((after - trigger.start).total_seconds() // period.seconds) + 1
        else:
            k = max(0, int((after - trigger.start).days // (31 * period.months)) - 1)
            while period.after(trigger.start, k) <= after:
                k += 1
        while period.after(trigger.start, k) <= after:  # float rounding
            k += 1
        if trigger.repeat is not None and k >= trigger.repeat:
            return None
        return period.after(trigger.start, k)
    if trigger.repeat is not None and fired >= trigger.repeat:
        return None
    z = zone(trigger.tz)
    since = max(after, trigger.start - timedelta(microseconds=1))
    it = croniter(trigger.expr, since.astimezone(z).replace(tzinfo=None))
    for _ in range(100_000):
        instant = resolve_wall_time(it.get_next(datetime), z)
        if instant > since:
            return instant
    return None


def fire_times(trigger: Trigger, after: datetime, n: int, fired: int = 0) -> list[datetime]:
    out: list[datetime] = []
    t: datetime | None = after
    while len(out) < n and t is not None:
        t = next_fire_time(trigger, t, fired + len(out))
        if t is not None:
            out.append(t)
    return out


@dataclass(frozen=True)
class FireDecision:
    fire_time: datetime
    run: bool
    reason: str | None = None


def plan_due(due: list[datetime], now: datetime, max_lateness_s: float | None, catch_up: str) -> list[FireDecision]:
    """Which due fire times run. A fire time later than max-lateness is skipped. Of the
    ones within it, `all` runs each, `last` only the latest, `none` only one that is not
    missed (due within the last minute)."""
    out = []
    timely = []
    for t in sorted(due):
        late = (now - t).total_seconds()
        if max_lateness_s is not None and late > max_lateness_s:
            out.append(FireDecision(t, False, f"missed: {late:.0f}s late, max lateness {max_lateness_s:g}s"))
        else:
            timely.append(t)
    for i, t in enumerate(timely):
        if catch_up == "all":
            out.append(FireDecision(t, True))
        elif catch_up == "last":
            last = i == len(timely) - 1
            out.append(FireDecision(t, last, None if last else "catch-up last: a later fire time runs instead"))
        else:
            on_time = (now - t).total_seconds() <= 60 and i == len(timely) - 1
            out.append(FireDecision(t, on_time, None if on_time else "missed; catch-up none"))
    return sorted(out, key=lambda d: d.fire_time)
