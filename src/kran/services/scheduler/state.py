"""The scheduler's working set: what is in flight between the loop and the engine pool,
and the outbox the pool reports to (typed events, recorded by the loop in batches)."""

from __future__ import annotations

import json
import queue
from collections import deque
from dataclasses import dataclass, field

from kran.domain.accounting import Usage
from kran.domain.jobs import JobSpec
from kran.domain.records import StartedAttempt
from kran.domain.retry import AttemptEnd


@dataclass(frozen=True)
class Launched:
    job_id: int
    attempt: int
    handle: str


@dataclass(frozen=True)
class LaunchFailed:
    job_id: int
    attempt: int
    reason: str


@dataclass(frozen=True)
class Ended:
    job_id: int
    attempt: int
    end: AttemptEnd
    usage: Usage


Event = Launched | LaunchFailed | Ended
Outbox = queue.Queue[Event]

MAX_SPECS = 50_000


@dataclass
class SchedulerState:
    in_flight: set[tuple[int, int]] = field(default_factory=set)  # being collected
    kills_sent: set[tuple[int, int]] = field(default_factory=set)
    evictions_sent: set[tuple[int, int]] = field(default_factory=set)  # (an eviction's kill follows any other)
    kill_again_at: dict[tuple[int, int], float] = field(default_factory=dict)  # a kill that failed: when to resend
    # attempts running on an app volume: (key, quota MiB), to name a full volume as the reason
    volume_attempts: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    evicting: dict[tuple[int, int], str] = field(default_factory=dict)  # attempts evicted: why, in words
    reserved_for: int | None = None  # the job the last pass kept room for
    # launches the engine could not take (it did not answer): (attempt, tries, not before);
    # the same attempt is launched again when it answers (a container it did start is adopted)
    held: deque[tuple[StartedAttempt, int, float]] = field(default_factory=deque)
    _specs: dict[int, JobSpec] = field(default_factory=dict)

    def spec_of(self, job_id: int, spec_json: str) -> JobSpec:
        """The queued job's spec, parsed once (a pass reads the queue's head each time)."""
        spec = self._specs.get(job_id)
        if spec is None:
            if len(self._specs) > MAX_SPECS:
                self._specs.clear()
            spec = self._specs[job_id] = JobSpec.from_json(json.loads(spec_json))
        return spec

    def done_with(self, key: tuple[int, int]) -> None:
        self.in_flight.discard(key)
        self.kills_sent.discard(key)
        self.evictions_sent.discard(key)
        self.kill_again_at.pop(key, None)
        self.volume_attempts.pop(key, None)
        self.evicting.pop(key, None)
