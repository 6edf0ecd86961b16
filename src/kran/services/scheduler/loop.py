"""The scheduler loop: one thread that records results, monitors, runs periodic work and
dispatches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from kran.errors import StaleState, StorageFull
from kran.ports import Metrics
from kran.services.scheduler.dispatch import Dispatcher
from kran.services.scheduler.monitor import Monitor
from kran.services.wakeups import Wakeups

log = logging.getLogger("kran.loop")
MIN_GAP_S = 0.002
DISPATCH_EVERY_S = 1.0  # at least (retry backoffs end without a wake-up)


@dataclass
class Periodic:
    """Work the loop runs every `every_s`: in its own thread, or handed to the pool (slow
    work: retention's walk, image GC). `wait_first`: not at the first pass."""

    name: str
    every_s: float
    run: Callable[[], object]
    in_pool: bool = False
    wait_first: bool = False
    last: float = field(default=0.0, init=False)
    busy: bool = field(default=False, init=False)  # in the pool still: not handed over twice

    def __post_init__(self) -> None:
        if self.wait_first:
            self.last = time.monotonic()


class SchedulerLoop:
    def __init__(
        self,
        monitor: Monitor,
        dispatcher: Dispatcher,
        periodic: Sequence[Periodic],
        wakeups: Wakeups,
        metrics: Metrics,
        pool: Executor,
        poll_s: float,
    ) -> None:
        self.monitor = monitor
        self.dispatcher = dispatcher
        self.periodic = list(periodic)
        self.wakeups = wakeups
        self.metrics = metrics
        self.pool = pool
        self.poll_s = poll_s
        self._last_dispatch = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kran-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wakeups.wake.set()
        self._thread.join(timeout=10)

    def tick(self, monitor: bool = True) -> None:
        """One pass. Dispatch runs when something changed or once a second (retry backoffs)."""
        if monitor:
            self.monitor.tick()
        self.monitor.record_results()  # launches from the pool and ends the monitor just collected
        for p in self.periodic:
            if time.monotonic() - p.last >= p.every_s:
                if p.in_pool and p.busy:
                    continue
                p.last = time.monotonic()
                if p.in_pool:
                    p.busy = True
                    self.pool.submit(_in_pool, p)
                else:
                    p.run()
        need = self.wakeups.dispatch_needed
        if need.is_set() or time.monotonic() - self._last_dispatch > DISPATCH_EVERY_S:
            need.clear()
            self._last_dispatch = time.monotonic()
            if self.dispatcher.tick():
                self.monitor.record_results()  # launches made in the pass: `running` in it too

    def _run(self) -> None:
        interval = self.poll_s
        wake, monitor_needed = self.wakeups.wake, self.wakeups.monitor_needed
        last_monitor = 0.0
        while not self._stop.is_set():
            busy = wake.is_set()  # woken during the last pass
            if wake.wait(interval) and busy:
                # a short pause lets a burst of wake-ups (submissions, exits) share one pass;
                # a wake-up that finds the loop waiting is taken at once (latency), and
                # those that come during its pass share the next
                time.sleep(MIN_GAP_S)
            wake.clear()
            now = time.monotonic()
            monitor = now - last_monitor >= interval or monitor_needed.is_set()
            if monitor:
                monitor_needed.clear()
                last_monitor = now
            try:
                started = time.perf_counter()
                self.tick(monitor)
                self.metrics.scheduler_pass(time.perf_counter() - started)
            except StorageFull:  # the disk watch said so (/status, the log); the next pass retries
                time.sleep(interval)
            except StaleState as e:  # another writer moved a job: the next pass decides again from the store
                log.warning("scheduler pass: %s; deciding again", e)
            except Exception:  # keep scheduling; the error is in the log
                log.exception("scheduler pass failed")
                time.sleep(interval)


def _in_pool(p: Periodic) -> None:
    try:
        p.run()
    except Exception:  # the pool would swallow it silently
        log.exception("%s failed", p.name)
    finally:
        p.busy = False
