"""The data dir's free space as a state: full below the watermark (files.min_free).

While full, submits get HTTP 507 (nothing is stored), no job starts (queued jobs wait
with the reason), schedule fires wait, and jobs that fail meanwhile name the disk. All of
it ends by itself once space returns: every check measures again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kran.domain.disk import full_reason

log = logging.getLogger("kran.disk")
CHECK_EVERY_S = 0.5
STORE_FULL_HOLD_S = 5.0  # a store write refused for space counts this long (then it is tried again)


class DiskWatch:
    def __init__(
        self,
        path: Path,
        min_free: str,
        usage: Callable[[Path], tuple[int, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._min_free = min_free
        self._usage = usage or _free_and_total
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = -1e9
        self._reason: str | None = None
        self._store_full: tuple[float, str] | None = None  # until, why

    def full(self, fresh: bool = False) -> str | None:
        """Why the data dir counts as full, or None. `fresh`: measure now, not from the last
        half second's measurement."""
        now = self._clock()
        with self._lock:
            if fresh or now - self._checked_at >= CHECK_EVERY_S:
                self._checked_at = now
                self._measure()
            if self._store_full is not None and now >= self._store_full[0]:
                self._store_full = None
            if self._reason is None and self._store_full is not None:
                return self._store_full[1]
            return self._reason

    def store_refused(self, message: str) -> None:
        """A store write failed for lack of space (whatever the watermark says)."""
        with self._lock:
            if self._store_full is None:
                log.warning("the store could not write: %s", message)
            why = f"data dir full: the store could not write ({message})"
            self._store_full = (self._clock() + STORE_FULL_HOLD_S, why)

    def _measure(self) -> None:
        try:
            free, total = self._usage(self._path)
        except OSError as e:
            reason: str | None = f"data dir unreadable: {e.strerror}"
        else:
            reason = full_reason(free, total, self._min_free, "files.min_free")
        if reason != self._reason and (reason is None or self._reason is None):
            if reason:
                log.warning("%s: submits refused, dispatch paused", reason)
            else:
                log.warning("data dir has space again: submits and dispatch resume")
        self._reason = reason


def _free_and_total(path: Path) -> tuple[int, int]:
    """Space an unprivileged writer may use (root's reserved blocks are not counted as free)."""
    u = shutil.disk_usage(path)
    return u.free, u.total
