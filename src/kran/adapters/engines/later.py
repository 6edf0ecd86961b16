"""Calls due later: a kill's SIGKILL after its grace. A kill sends its SIGTERM and
returns; no thread waits out a job's grace (an hour's grace held one of the engine pool's
threads, or a thread of its own, for the hour). One thread waits for what is due and hands
it to a few workers, so one slow call (a daemon taking its time) delays no other."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


WORKERS = 4


class Later:
    def __init__(self, name: str) -> None:
        self._name = name
        self._workers = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"{name}-call")
        self._due: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()  # (ties in time go first come, first served)
        self._cond = threading.Condition()
        self._running = False

    def call(self, delay_s: float, fn: Callable[..., None], *args: Any) -> None:
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + max(delay_s, 0.0), next(self._order), fn, args))
            if not self._running:  # the thread ends while nothing is due
                self._running = True
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._due)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._due and (wait := self._due[0][0] - time.monotonic()) > 0:
                    self._cond.wait(wait)
                if not self._due:
                    self._running = False
                    return
                _, _, fn, args = heapq.heappop(self._due)
            try:
                self._workers.submit(self._make, fn, args)
            except RuntimeError:  # the interpreter is exiting
                with self._cond:
                    self._running = False
                return

    def _make(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s: a call due later failed", self._name)
