"""When the swarm's manager wrote each node: a swarm node's agent registering again after
its dockerd restarted writes its node, and so do a node's overlay attachments. The node's
own UpdatedAt keeps only the last write; the manager's event stream tells each one."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kran.adapters.engines.docker_events import EventFollower

KEEP_S = 600.0  # writes older than this tell nothing about a task ending now
PER_NODE = 64
SAME_S = 0.001  # Docker's nanoseconds as floats: the same write read twice differs in the last bits


class NodeWrites:
    """Follows the manager's node events (docker_events, started by `start`), resuming
    from the last event seen; `saw` adds what a node listing showed (the floor while the
    stream is away)."""

    def __init__(self, connect: Callable[[], Any], unix_path: str | None = None) -> None:
        self._lock = threading.Lock()
        self._writes: dict[str, deque[float]] = {}
        self._since: float | None = None
        self._events = EventFollower(
            connect, {"type": "node"}, self._on_event, "kran-swarm-node-events", unix_path,
            since=lambda: None if self._since is None else int(self._since),
        )  # fmt: skip

    def start(self) -> None:
        self._events.start()

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
        self._events.close()

    def _on_event(self, event: dict[str, Any]) -> None:
        node, nanos = (event.get("Actor") or {}).get("ID"), event.get("timeNano")
        if isinstance(node, str) and isinstance(nanos, int):
            self._since = nanos / 1e9
            self.saw(node, nanos / 1e9)
