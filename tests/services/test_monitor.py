"""The monitor in-process: the typed outbox becomes store writes, in batches."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kran.domain.accounting import Usage
from kran.domain.records import ActiveAttempt
from kran.domain.retry import AttemptEnd
from kran.domain.states import JobState
from kran.services.datadir import DataDir
from kran.services.disk import DiskWatch
from kran.services.scheduler.monitor import Monitor
from kran.services.scheduler.state import Ended, Launched, LaunchFailed, SchedulerState
from kran.services.wakeups import Wakeups
from tests.services.fakes import Clock, FakeEngine, FakeStore, outbox


class Metrics:
    def __init__(self) -> None:
        self.final: list[str] = []

    def started(self, s: float) -> None:
        pass

    def ended(self, state: str, s: float | None) -> None:
        self.final.append(state)


class Volumes:
    def is_full(self, key: str) -> bool:
        return False


def _active(job_id: int, retries: int = 0) -> ActiveAttempt:
    return ActiveAttempt(job_id, 1, JobState.RUNNING, "h", 0.0, 1.0, None, None, retries)


def test_the_outbox_is_recorded_and_settled(tmp_path: Path) -> None:
    store = FakeStore(active=[_active(1), _active(2, retries=1), _active(3)])
    box = outbox()
    wakeups = Wakeups()
    state = SchedulerState(in_flight={(1, 1), (2, 1)})
    mon = Monitor(
        store,  # type: ignore[arg-type]
        FakeEngine(),  # type: ignore[arg-type]
        Volumes(),  # type: ignore[arg-type]
        Metrics(),  # type: ignore[arg-type]
        DiskWatch(tmp_path, "0"),
        Clock(),
        DataDir(tmp_path),
        state,
        box,
        wakeups,
        ThreadPoolExecutor(1),
        backoff_s=5.0,
    )
    box.put(Launched(4, 1, "h4"))
    box.put(Ended(1, 1, AttemptEnd(0), Usage()))
    box.put(Ended(2, 1, AttemptEnd(1), Usage()))
    box.put(LaunchFailed(3, 1, "no such image"))
    mon.record_results()
    assert store.running == [(4, 1, "h4")]
    got = {o.job_id: (o.settlement.job_state, o.settlement.reason) for o in store.settled}
    assert got[1][0] == JobState.SUCCEEDED
    assert got[2][0] == JobState.QUEUED  # a retry left
    assert got[3][0] == JobState.FAILED and "launch failed: no such image" in got[3][1]
    assert state.in_flight == set() and wakeups.dispatch_needed.is_set()
    assert box.empty()


def test_what_the_store_refuses_goes_back_to_the_outbox(tmp_path: Path) -> None:
    class Full(FakeStore):
        def settle(self, items: Any, now: float) -> Any:
            raise OSError("disk full")

    store = Full(active=[_active(1)])
    box = outbox()
    mon = Monitor(
        store,  # type: ignore[arg-type]
        FakeEngine(),  # type: ignore[arg-type]
        Volumes(),  # type: ignore[arg-type]
        Metrics(),  # type: ignore[arg-type]
        DiskWatch(tmp_path, "0"),
        Clock(),
        DataDir(tmp_path),
        SchedulerState(),
        box,
        Wakeups(),
        ThreadPoolExecutor(1),
        backoff_s=5.0,
    )
    box.put(Ended(1, 1, AttemptEnd(0), Usage()))
    try:
        mon.record_results()
    except OSError:
        pass
    assert isinstance(box.get_nowait(), Ended)
