"""Samples the CPU and memory of running attempts on this machine (their cgroups) into a
series per attempt: every 5 s for an attempt's first 10 minutes, every minute to 2 hours,
then every 10 minutes, so a week-long job keeps about 1,300 points."""

from __future__ import annotations

import logging
from typing import Protocol

from kran.domain.records import ActiveAttempt
from kran.domain.states import JobState
from kran.ports import Clock

log = logging.getLogger("kran.usage")
SAMPLE_EVERY_S = 5.0
SERIES_KEEP_S = 30 * 86400.0  # where job files are kept forever: a month of series


class Readings(Protocol):
    def relative(self, instance: str, job_id: int, attempt: int) -> str: ...
    def sample(self, rel: str) -> tuple[float, int] | None: ...


class Series(Protocol):
    def append(self, job_id: int, attempt: int, at: float, cpu_seconds: float, memory_bytes: int) -> None: ...
    def read(self, job_id: int, attempt: int) -> list[tuple[float, float, int]]: ...
    def expire(self, older_than_s: float) -> None: ...


class Running(Protocol):
    def active_attempts(self) -> list[ActiveAttempt]: ...


def step_for(age_s: float) -> float:
    """How far apart an attempt of this age is sampled."""
    if age_s < 600:
        return SAMPLE_EVERY_S
    return 60.0 if age_s < 7200 else 600.0


class UsageSampler:
    def __init__(
        self, store: Running, cgroups: Readings, series: Series, instance: str, clock: Clock, keep_s: float
    ) -> None:
        self.store = store
        self.cgroups = cgroups
        self.series = series
        self.instance = instance
        self.clock = clock
        self.keep_s = keep_s
        self._last: dict[tuple[int, int], float] = {}
        self._expired_at = 0.0

    def tick(self) -> None:
        now = self.clock.now()
        seen = {}
        for a in self.store.active_attempts():
            if a.state != JobState.RUNNING or a.started_at is None:
                continue
            key = (a.job_id, a.attempt)
            last = self._last.get(key, 0.0)
            seen[key] = last
            if now - last < step_for(now - a.started_at) - 0.5:
                continue
            reading = self.cgroups.sample(self.cgroups.relative(self.instance, a.job_id, a.attempt))
            if reading is None:
                continue
            try:
                self.series.append(a.job_id, a.attempt, now, reading[0], reading[1])
            except OSError as e:  # a full disk: the chart has a gap, the job goes on
                log.warning("usage sample of job %d not written: %s", a.job_id, e)
            seen[key] = now
        self._last = seen
        if now - self._expired_at > 3600:
            self._expired_at = now
            self.series.expire(self.keep_s)

    def points(self, job_id: int, attempt: int) -> list[dict[str, float]]:
        """The attempt's series: time, cpus in use over the step before, memory in MiB."""
        raw = self.series.read(job_id, attempt)
        out = []
        for (t0, c0, _), (t1, c1, m1) in zip(raw, raw[1:], strict=False):
            if t1 > t0:
                out.append({"t": t1, "cpus": round(max(0.0, (c1 - c0) / (t1 - t0)), 3), "mem_mb": round(m1 / 2**20, 1)})
        return out
