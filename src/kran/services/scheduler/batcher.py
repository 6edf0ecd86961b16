"""Group commit for submissions: one writer thread stores what many requests submitted
in one transaction. Under load this replaces a convoy of request threads taking turns
at the database with one commit per batch."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from kran.domain.records import Submission
from kran.errors import KranError
from kran.ports import Metrics, Store

MAX_BATCH = 5000


class SubmitBatcher:
    def __init__(
        self, store: Store, queue_max: int, now: Callable[[], float], on_stored: Callable[[], None], metrics: Metrics
    ):
        self._metrics = metrics
        self._store = store
        self._queue_max = queue_max
        self._now = now
        self._on_stored = on_stored
        self._pending: queue.Queue[tuple[Submission, Future[list[int]]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="kran-submit", daemon=True)
        self._thread.start()

    def submit(self, submission: Submission) -> Future[list[int]]:
        """Store the specs (all or none); the future gives their ids or raises QueueFull or
        InvalidInput (unknown dependencies)."""
        fut: Future[list[int]] = Future()
        self._pending.put((submission, fut))
        return fut

    def close(self) -> None:
        self._pending.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch, size = [first], len(first[0].specs)
            while size < MAX_BATCH:
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._pending.put(None)
                    break
                batch.append(item)
                size += len(item[0].specs)
            try:
                results = self._store.insert_job_groups([sub for sub, _ in batch], self._now(), self._queue_max)
            except Exception as e:  # the requests get the error; the writer keeps going
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            for (sub, fut), result in zip(batch, results, strict=True):
                if isinstance(result, KranError):
                    fut.set_exception(result)
                else:
                    self._metrics.submitted(len(result), sub.owner)
                    fut.set_result(result)
            self._on_stored()
