"""When the swarm's manager wrote each node: a swarm node's agent registering again after
its dockerd restarted writes its node, and so do a node's overlay attachments. The node's
own UpdatedAt keeps only the last write; the manager's event stream tells each one."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

KEEP_S = 600.0  # writes older than this tell nothing about a task ending now
PER_NODE = 64
SAME_S = 0.001  # Docker's nanoseconds as floats: the same write read twice differs in the last bits


class NodeWrites:
    """Follows the manager's node events in a thread of its own (started by `start`),
    reconnecting from the last event seen; `saw` adds what a node listing showed (the
    floor while the stream is away)."""

    def __init__(self, connect: Callable[[], Any], unix_path: str | None = None) -> None:
        self._connect = connect
        self._unix_path = unix_path  # a manager on a unix socket: not asked while the socket is gone
        self._stopped = threading.Event()
        self._stream: Any = None
        self._lock = threading.Lock()
        self._writes: dict[str, deque[float]] = {}
        self._since: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._follow, name="kran-swarm-node-events", daemon=True)
                self._thread.start()

    def saw(self, node_id: str, written: float | None) -> None:
        if written is None:
            return
        with self._lock:
            seen = self._writes.setdefault(node_id, deque(maxlen=PER_NODE))
            if all(abs(w - written) > SAME_S for w in seen):  # a listing and an event of one write
                seen.append(written)

    def of(self, node_id: str) -> list[float]:
        """The node's writes of the last KEEP_S that this server saw, oldest first."""
        with self._lock:
            seen = sorted(self._writes.get(node_id, ()))
        oldest = time.time() - KEEP_S
        return [w for w in seen if w >= oldest]

    def close(self) -> None:
        """Stop following (the stream is closed under the thread, which then ends)."""
        self._stopped.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def _follow(self) -> None:
        while not self._stopped.is_set():
            if self._unix_path is None or os.path.exists(self._unix_path):  # (docker's client leaks a failed socket)
                self._follow_once()
            self._stopped.wait(1.0)

    def _follow_once(self) -> None:
        client = None
        try:
            client = self._connect()
            since = None if self._since is None else int(self._since)
            self._stream = client.events(filters={"type": "node"}, decode=True, since=since)
            if self._stopped.is_set():
                return
            for event in self._stream:
                node, nanos = (event.get("Actor") or {}).get("ID"), event.get("timeNano")
                if isinstance(node, str) and isinstance(nanos, int):
                    self._since = nanos / 1e9
                    self.saw(node, nanos / 1e9)
        except Exception:  # the manager away or restarting: follow it again
            pass
        finally:
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    self._stream.close()
                self._stream = None
            if client is not None:
                client.close()
