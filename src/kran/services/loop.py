"""The scheduler loop: one thread that records results, monitors and dispatches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kran.errors import StaleState, StorageFull
from kran.services import images
from kran.services.dispatch import dispatch_tick
from kran.services.monitor import monitor_tick, record_results
from kran.services.reconcile import sweep_strays
from kran.services.retention import retention_tick
from kran.services.runtime import Runtime
from kran.services.schedules import schedule_tick

log = logging.getLogger("kran.loop")
MIN_GAP_S = 0.002
SCHEDULE_EVERY_S = 0.25
SWEEP_EVERY_S = 60.0


def tick(rt: Runtime, monitor: bool = True) -> None:
    """One pass. Dispatch runs when something changed or once a second (retry backoffs)."""
    if monitor:
        monitor_tick(rt)
    record_results(rt)  # launches from the pool and ends the monitor just collected
    if time.monotonic() - rt.last_schedule_tick >= SCHEDULE_EVERY_S:
        rt.last_schedule_tick = time.monotonic()
        schedule_tick(rt)
    if time.monotonic() - rt.last_retention >= rt.settings.retention_check_s:
        rt.last_retention = time.monotonic()
        rt.pool.submit(_in_pool, retention_tick, rt)
    if time.monotonic() - rt.last_image_tick >= rt.settings.gc_interval_s:
        rt.last_image_tick = time.monotonic()
        rt.pool.submit(_in_pool, image_tick, rt)
    if time.monotonic() - rt.last_sweep >= SWEEP_EVERY_S:
        rt.last_sweep = time.monotonic()
        rt.pool.submit(_in_pool, sweep_strays, rt)
    if rt.dispatch_needed.is_set() or time.monotonic() - rt.last_dispatch > 1.0:
        rt.dispatch_needed.clear()
        rt.last_dispatch = time.monotonic()
        dispatch_tick(rt)


def image_tick(rt: Runtime) -> None:
    """Every node's image inventory, then disk GC where a node is above its high-water mark."""
    images.refresh_inventory(rt)
    images.gc(rt)


def _in_pool(work: Callable[[Runtime], object], rt: Runtime) -> None:
    try:
        work(rt)
    except Exception:  # the pool would swallow it silently
        log.exception("%s failed", work.__name__)


class SchedulerLoop:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kran-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.rt.wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        interval = self.rt.settings.poll_interval_s
        last_monitor = 0.0
        while not self._stop.is_set():
            self.rt.wake.wait(interval)
            # a short pause lets a burst of wake-ups (submissions, exits) share one pass
            time.sleep(MIN_GAP_S)
            self.rt.wake.clear()
            now = time.monotonic()
            monitor = now - last_monitor >= interval or self.rt.monitor_needed.is_set()
            if monitor:
                self.rt.monitor_needed.clear()
                last_monitor = now
            try:
                started = time.perf_counter()
                tick(self.rt, monitor)
                self.rt.metrics.scheduler_pass(time.perf_counter() - started)
            except StorageFull:  # the disk watch said so (/status, the log); the next pass retries
                time.sleep(interval)
            except StaleState as e:  # another writer moved a job: the next pass decides again from the store
                log.warning("scheduler pass: %s; deciding again", e)
            except Exception:  # keep scheduling; the error is in the log
                log.exception("scheduler pass failed")
                time.sleep(interval)
