"""SQLite: the write-ahead log is copied back into the database by one background thread,
not by whichever commit crosses SQLite's size threshold. That commit used to pay the
checkpoint, fsync included: 10-20 ms on a job's way to `running`, its p99."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy.engine import Engine as SAEngine

log = logging.getLogger("kran.store")
EVERY_S = 0.25  # at most this often, and only after commits
LOG_EVERY_S = 60.0  # a checkpoint failing again and again (a full disk) is logged this often
MAX_FRAMES = 4000  # pages (4 KiB) in the log past which a checkpoint holds the writers back


class WalCheckpointer:
    """Connections run with `PRAGMA wal_autocheckpoint=0`; `committed()` after each commit
    wakes this thread, which runs a PASSIVE checkpoint (it neither waits for nor blocks
    readers and writers; the sqlite3 module lets go of the GIL while it runs).

    The log starts again from its beginning only at a write that finds all of it copied.
    Under a steady stream of commits one lands during each checkpoint, so that never
    happens by itself: past MAX_FRAMES, the checkpoint copies what is left in the writers'
    turn (`turn`), where no commit of this server comes between it and the next write."""

    def __init__(self, engine: SAEngine, turn: AbstractContextManager[Any]) -> None:
        self.engine = engine
        self.turn = turn
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._logged = 0.0

    def committed(self) -> None:
        self._dirty.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="kran-checkpoint", daemon=True)
                    self._thread.start()

    def close(self) -> None:
        """Stops the thread (the last connection's close checkpoints what is left)."""
        self._stop.set()
        self._dirty.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            if self._stop.wait(EVERY_S):  # commits within the interval share one checkpoint
                return
            self._dirty.clear()
            try:
                self.checkpoint()
            except Exception:  # the next commit tries again
                if time.monotonic() - self._logged > LOG_EVERY_S:
                    self._logged = time.monotonic()
                    log.exception("checkpointing the database's write-ahead log")

    def checkpoint(self) -> None:
        if self._passive() > MAX_FRAMES:  # the bulk is copied already: the turn is short
            with self.turn:
                self._passive()

    def _passive(self) -> int:
        """Copies what it can; returns the number of frames in the log."""
        with self.engine.connect() as conn:
            _busy, frames, _copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return int(frames)
