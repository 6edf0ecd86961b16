"""Job arrays (issue 20.4): Slurm's --array syntax and when tasks become rows.

`0-9999%50`, `0-99:5`, `1,5,9`, `1-3,10-20:2%4`: ranges (with a step), single indices,
comma-separated, and `%N` caps how many tasks are queued or running at once. An array is
one record; its tasks become jobs only as they may start (at most N with `%N`, a bounded
buffer without), so an array of 100,000 tasks costs one row at submit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from kran.domain.jobs import JobSpec

MAX_TASKS = 1_000_000
MAX_INDEX = 10**9
MAX_PARTS = 100  # the overlap check compares each pair
BUFFER = 1000  # tasks of an array without %N kept queued ahead of the dispatcher
_PART = re.compile(r"([0-9]{1,10})(?:-([0-9]{1,10})(?::([0-9]{1,10}))?)?")  # ASCII digits only


@dataclass(frozen=True)
class ArrayIndices:
    ranges: tuple[tuple[int, int, int], ...]  # (first, last, step), in the order given
    throttle: int | None = None

    @property
    def count(self) -> int:
        return sum((last - first) // step + 1 for first, last, step in self.ranges)

    def index_at(self, position: int) -> int:
        """The task index at a position (0-based) in the order given."""
        for first, last, step in self.ranges:
            n = (last - first) // step + 1
            if position < n:
                return first + position * step
            position -= n
        raise IndexError(position)

    def has(self, index: int) -> bool:
        return any(first <= index <= last and (index - first) % step == 0 for first, last, step in self.ranges)

    def text(self) -> str:
        parts = [
            str(f) if f == last else f"{f}-{last}" + (f":{step}" if step != 1 else "") for f, last, step in self.ranges
        ]
        return ",".join(parts) + (f"%{self.throttle}" if self.throttle else "")


def parse_array(text: str, checked: bool = False) -> ArrayIndices:
    """Slurm's --array; ValueError with the reason. Indices must not repeat (`checked`: the
    text was checked when the array was submitted; reading it again skips that)."""
    body, percent, throttle_text = text.strip().partition("%")
    throttle = None
    if percent:
        if not re.fullmatch(r"[0-9]{1,7}", throttle_text) or not 1 <= int(throttle_text) <= MAX_TASKS:
            raise ValueError(f"%{throttle_text[:20]}: the cap is a number of tasks, 1 to {MAX_TASKS}")
        throttle = int(throttle_text)
    ranges = []
    for part in body.split(","):
        m = _PART.fullmatch(part.strip())
        if not m:
            raise ValueError(f"{part.strip()[:40]!r}: write ranges as 0-99, 0-99:5 or 1,5,9 (and %N to cap)")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3)) if m.group(3) is not None else 1
        if last < first:
            raise ValueError(f"{part.strip()!r}: the range ends before it starts")
        if step < 1:
            raise ValueError(f"{part.strip()!r}: the step is at least 1")
        if last > MAX_INDEX:
            raise ValueError(f"indices go up to {MAX_INDEX}")
        ranges.append((first, last - (last - first) % step, step))
    arr = ArrayIndices(tuple(ranges), throttle)
    if arr.count > MAX_TASKS:
        raise ValueError(f"{arr.count} tasks: at most {MAX_TASKS} in one array")
    if len(ranges) > MAX_PARTS:
        raise ValueError(f"at most {MAX_PARTS} comma-separated parts")
    if checked:
        return arr
    ordered = sorted(ranges)
    for i, r in enumerate(ordered):
        for earlier in ordered[:i]:
            if earlier[1] >= r[0] and (common := _first_common(earlier, r)) is not None:
                raise ValueError(f"index {common} is given twice")
    return arr


def _first_common(a: tuple[int, int, int], b: tuple[int, int, int]) -> int | None:
    """The smallest index in both ranges, or None: x = a0 (mod a step) = b0 (mod b step),
    solved by the Chinese remainder theorem (no walk over the span)."""
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    if lo > hi:
        return None
    (a0, _, m), (b0, _, n) = a, b
    g = math.gcd(m, n)
    if (b0 - a0) % g:
        return None
    lcm = m // g * n
    # a0 + m*k = b0 (mod n)  ->  k = (b0 - a0)/g * inverse(m/g) (mod n/g)
    k = ((b0 - a0) // g * pow(m // g, -1, n // g)) % (n // g) if n // g > 1 else 0
    x = a0 + m * k
    x += -(-(lo - x) // lcm) * lcm if x < lo else -((x - lo) // lcm) * lcm
    return x if x <= hi else None


def tasks_to_create(*, count: int, created: int, live: int, queued: int, throttle: int | None) -> int:
    """How many more tasks become jobs now. `live`: its tasks queued, starting or running;
    `queued`: of them queued. With %N at most N are live (so at most N run); without, the
    queue holds a buffer of them ahead of the dispatcher."""
    left = count - created
    room = throttle - live if throttle is not None else BUFFER - queued
    return max(0, min(left, room))


@dataclass(frozen=True)
class ArrayRecord:
    id: int
    owner: str
    submitted_by: str | None
    name: str | None
    spec: JobSpec
    indices: ArrayIndices
    created: int
    state: str  # active | done
    kill_requested: bool
    submitted_at: float
    finished_at: float | None
    tasks: dict[str, int]  # job state -> tasks in it (made so far)

    @property
    def count(self) -> int:
        return self.indices.count

    @property
    def pending(self) -> int:
        """Tasks not yet made jobs (they wait behind the cap or the buffer)."""
        return 0 if self.kill_requested else self.count - sum(self.tasks.values())
