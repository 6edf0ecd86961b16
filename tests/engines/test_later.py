"""The calls a kill leaves for later (its SIGKILL after the grace), made by one thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kran.adapters.engines.later import Later


def _wait(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_calls_come_in_the_order_they_are_due_and_a_failure_stops_none() -> None:
    later = Later("test-later")
    made: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    later.call(0.4, made.append, "late")
    later.call(0.1, fail)
    later.call(0.2, made.append, "early")
    later.call(-5, made.append, "overdue")  # (a restart found the grace already past)
    _wait(lambda: len(made) == 3)
    assert made == ["overdue", "early", "late"]


def test_its_thread_ends_while_nothing_is_due_and_comes_back() -> None:
    later = Later("test-later-idle")
    made: list[int] = []
    later.call(0, made.append, 1)
    _wait(lambda: not any(t.name == "test-later-idle" for t in threading.enumerate()))
    assert made == [1]
    assert not any(t.name == "test-later-idle" for t in threading.enumerate())
    later.call(0, made.append, 2)
    _wait(lambda: len(made) == 2)
    assert made == [1, 2]
    assert later.pending() == 0


def test_a_slow_call_delays_no_other() -> None:
    """One SIGKILL waiting on a slow daemon held up every other's (a reviewer's note)."""
    later = Later("test-later-slow")
    made: list[str] = []
    release = threading.Event()
    later.call(0, release.wait, 10)
    later.call(0.05, made.append, "next")
    _wait(lambda: made == ["next"], 5)
    assert made == ["next"] and not release.is_set()
    release.set()
