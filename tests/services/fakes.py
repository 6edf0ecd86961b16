"""In-memory stand-ins for the ports, for unit tests of services run in-process (beside
the end-to-end tests, which run the same services against the real store and engines)."""

from __future__ import annotations

import queue
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kran.adapters.engines.this_machine import ThisMachine
from kran.domain.jobs import JobSpec
from kran.domain.records import ActiveAttempt, AttemptOutcome, JobRecord, Submission
from kran.domain.resources import ResourceRequest, Resources, parse_range
from kran.domain.states import JobState
from kran.ports import EngineCapabilities
from kran.services.admission import Admission
from kran.services.nodes import NodeDirectory


def spec(image: str | None = None, cpus: str = "1", mem: str = "64", **kw: Any) -> JobSpec:
    req = ResourceRequest(
        parse_range(cpus, "cpus"), parse_range(mem, "mem_mb"), parse_range(0, "gpus"), parse_range(0, "disk_mb")
    )
    return JobSpec(command=("true",), request=req, image=image, **kw)


@dataclass
class FakeEngine:
    capabilities: EngineCapabilities = EngineCapabilities(host_processes=True, containers=True, volumes=True)
    down: str | None = None  # why image jobs cannot run now
    ended: dict[tuple[int, int], Any] = field(default_factory=dict)
    killed: list[tuple[int, int]] = field(default_factory=list)
    quick_launch: bool = False  # launches in the scheduler's pass (else handed to the pool)

    def unavailable(self, image: bool) -> str | None:
        return self.down if image else None

    def check(self, refs: list[Any]) -> dict[tuple[int, int], Any]:
        return {
            (r.job_id, r.attempt): self.ended[(r.job_id, r.attempt)]
            for r in refs
            if (r.job_id, r.attempt) in self.ended
        }

    def cheap_collect(self, ref: Any) -> bool:
        return True

    def cheap_launch(self, image: bool) -> bool:
        return self.quick_launch

    def collect(self, ref: Any) -> Any:
        from kran.domain.accounting import Usage

        return Usage()

    def kill(self, ref: Any) -> None:
        self.killed.append((ref.job_id, ref.attempt))


@dataclass
class FakeStore:
    jobs: dict[int, JobRecord] = field(default_factory=dict)
    active: list[ActiveAttempt] = field(default_factory=list)
    settled: list[AttemptOutcome] = field(default_factory=list)
    running: list[tuple[int, int, str]] = field(default_factory=list)
    queued: int = 0

    def array_owner(self, array_id: int) -> tuple[str, str | None] | None:
        return None

    def get_job(self, job_id: int) -> JobRecord | None:
        return self.jobs.get(job_id)

    def allocated_by_node(self) -> dict[str, Resources]:
        return {}

    def queued_count(self) -> int:
        return self.queued

    def active_attempts(self) -> list[ActiveAttempt]:
        return list(self.active)

    def mark_running(self, items: list[tuple[int, int, str]], now: float) -> list[float | None]:
        self.running += items
        return [None for _ in items]

    def settle(self, items: list[AttemptOutcome], now: float) -> list[tuple[int, JobState]]:
        self.settled += items
        return [(i.job_id, i.settlement.job_state) for i in items]

    def request_kill(self, ids: list[int], reason: str, now: float) -> dict[int, JobState]:
        return {}


class Clock:
    def now(self) -> float:
        return 1000.0


class Enqueue:
    """The batcher's place: records what was handed over."""

    def __init__(self) -> None:
        self.got: list[Submission] = []

    def __call__(self, sub: Submission) -> Future[list[int]]:
        self.got.append(sub)
        fut: Future[list[int]] = Future()
        fut.set_result(list(range(1, len(sub.specs) + 1)))
        return fut


def admission(engine: FakeEngine | None = None, allow_host_processes: bool = True, cpus: int = 4) -> Admission:
    nodes = NodeDirectory(ThisMachine(Resources(cpus * 1000, 4096, 0, 10_000), "here"), FakeStore())  # type: ignore[arg-type]
    return Admission(engine or FakeEngine(), nodes, allow_host_processes)  # type: ignore[arg-type]


def outbox() -> queue.Queue[Any]:
    return queue.Queue()


TMP = Path("/nonexistent")


class FakeAccounts:
    """No accounts beyond "default", no limits: what a fresh server has."""

    def memberships(self, user: str) -> list[str]:
        return []

    def associations(self) -> list[Any]:
        return []

    def running(self) -> list[Any]:
        return []

    def limit_set(self) -> Any:
        from kran.domain.limits import LimitSet

        return LimitSet({})


def account_service(store: Any) -> Any:
    from kran.domain.fairshare import UsagePolicy
    from kran.services.accounts import AccountService
    from kran.services.fairness import Fairness

    accounts = FakeAccounts()
    fairness = Fairness(accounts, store, UsagePolicy(), Clock(), True)  # type: ignore[arg-type]
    return AccountService(accounts, fairness, Clock(), lambda name: True)  # type: ignore[arg-type]
