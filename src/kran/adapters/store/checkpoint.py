"""SQLite: the write-ahead log is copied back into the database by one background thread,
not by whichever commit crosses SQLite's size threshold. That commit used to pay the
checkpoint, fsync included: 10-20 ms on a job's way to `running`, its p99."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Engine as SAEngine

log = logging.getLogger("kran.store")
EVERY_S = 0.25  # at most this often, and only after commits
LOG_EVERY_S = 60.0  # a checkpoint failing again and again (a full disk) is logged this often
MAX_FRAMES = 4000  # pages (4 KiB) in the log past which a checkpoint holds the writers back
MAX_LEFT = 1000  # ... when at most this many are left to copy (else: the next round)
IDLE_S = 30.0  # no commit this long: the thread ends (the next commit starts another)


class WalCheckpointer:
    """Connections run with `PRAGMA wal_autocheckpoint=0`; `committed()` after each commit
    wakes this thread, which runs a PASSIVE checkpoint (it neither waits for nor blocks
    readers and writers; the sqlite3 module lets go of the GIL while it runs).

    The log starts again from its beginning only at a write that finds all of it copied.
    Under a steady stream of commits one lands during each checkpoint, so that never
    happens by itself: past MAX_FRAMES, once a checkpoint left at most MAX_LEFT pages
    uncopied, they are copied in the writers' turn (`turn`), where no commit of this
    server comes between it and the next write."""

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
                    thread = threading.Thread(target=self._run, name="kran-checkpoint", daemon=True)
                    try:
                        thread.start()
                    except RuntimeError:  # no thread now: the next commit tries again
                        self._warn("starting the checkpoint thread")
                    else:
                        self._thread = thread

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
            if not self._dirty.wait(IDLE_S):
                with self._lock:  # (a commit after this starts another thread)
                    if not self._dirty.is_set():
                        self._thread = None
                        return
            if self._stop.wait(EVERY_S):  # commits within the interval share one checkpoint
                return
            self._dirty.clear()
            try:
                self.checkpoint()
            except Exception:  # the next commit tries again
                self._warn("checkpointing the database's write-ahead log")

    def _warn(self, what: str) -> None:
        if time.monotonic() - self._logged > LOG_EVERY_S:
            self._logged = time.monotonic()
            log.exception(what)

    def checkpoint(self) -> None:
        with self.engine.connect() as conn:  # taken before the turn: the turn never waits for the pool
            frames, copied = self._passive(conn)
            if frames > MAX_FRAMES and frames - copied <= MAX_LEFT:
                with self.turn:
                    self._passive(conn)

    @staticmethod
    def _passive(conn: Connection) -> tuple[int, int]:
        """Copies what it can: (pages in the log, pages copied); -1s when it could not start."""
        _busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return int(frames), int(copied)
