"""The ways into the queue, in-process: what admission refuses, a submit, a batch, a
workflow step, a schedule's add and its fires all refuse (issue 19.2)."""

from __future__ import annotations

from typing import Any

import pytest

from kran.domain.records import PlannedRun
from kran.errors import InvalidInput
from kran.services.disk import DiskWatch
from kran.services.jobs import JobService
from kran.services.schedules import ScheduleService
from kran.services.wakeups import Wakeups
from tests.services.fakes import Clock, Enqueue, FakeStore, account_service, admission, spec


class NoImages:
    def classify(self, s: Any, who: str, answers: Any = None) -> Any:
        return s


class NoSchedules:
    def all(self) -> list[Any]:
        return []


class Metrics:
    def submitted(self, n: int, user: str) -> None:
        pass


def _services(tmp_path: Any) -> tuple[JobService, ScheduleService, Enqueue]:
    adm = admission(cpus=2)
    store = FakeStore()
    enqueue = Enqueue()
    jobs = JobService(adm, None, NoImages(), store, enqueue, Clock(), Wakeups(), account_service(store))  # type: ignore[arg-type]
    disk = DiskWatch(tmp_path, "0")
    schedules = ScheduleService(NoSchedules(), store, adm, Clock(), Wakeups(), Metrics(), disk, 100)  # type: ignore[arg-type]
    return jobs, schedules, enqueue


def test_a_job_one_way_refuses_every_way_refuses(tmp_path: Any) -> None:
    jobs, schedules, enqueue = _services(tmp_path)
    big, small = spec(cpus="3"), spec()
    for way in (
        lambda: jobs.submit([big], "alice"),
        lambda: jobs.submit([small, big], "alice"),
        lambda: jobs.submit_step(big, "alice"),
        lambda: schedules.add_schedule(name="s", owner="alice", spec=big, every="PT1H"),
    ):
        with pytest.raises(InvalidInput, match="more than the largest node"):
            way()
    assert enqueue.got == []  # nothing reached the writer
    # a fire: the run is recorded as skipped with the same reason, and nothing is submitted
    (run,) = schedules._bounded([PlannedRun(1.0, big)])
    assert run.spec is None and run.reason and "more than the largest node" in run.reason
    # and what admission takes, every way takes
    assert jobs.submit([small], "alice").result() == [1] and jobs.submit_step(small, "alice") == 1
    assert schedules._bounded([PlannedRun(1.0, small)])[0].spec == small
