"""Following a Docker Engine's event stream: in a thread of its own, connecting again a
second after the stream breaks (the daemon restarting, a read timeout on a quiet stream).
What the stream tells is a hint that saves waiting for the next poll, never the only
source: whatever it misses while away, the engines' polls still find."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

RETRY_S = 1.0


class EventFollower:
    """`on_event` gets each event (a dict) matching `filters`; `since` says where to
    resume after a break (None: from now)."""

    def __init__(
        self,
        connect: Callable[[], Any],
        filters: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None],
        name: str,
        unix_path: str | None = None,
        since: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._connect = connect
        self._filters = filters
        self._on_event = on_event
        self._name = name
        self._unix_path = unix_path  # a daemon on a unix socket: not asked while the socket is gone
        self._since = since
        self._stopped = threading.Event()
        self._stream: Any = None
        self._live_at: float | None = None  # when the open stream answered (monotonic); None: none open
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._follow, name=self._name, daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop following (the stream is closed under the thread, which then ends)."""
        self._stopped.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def live_since(self) -> float | None:
        """When the stream now open was answered (time.monotonic()); None while there is
        none (connecting, or the daemon away). Nearly every event since then reaches
        `on_event`: the daemon answers a moment before it subscribes, and drops events for
        a subscriber that falls far behind, so callers keep a safety net."""
        return self._live_at

    def _follow(self) -> None:
        while not self._stopped.is_set():
            if self._unix_path is None or os.path.exists(self._unix_path):  # (docker's client leaks a failed socket)
                self._follow_once()
            self._stopped.wait(RETRY_S)

    def _follow_once(self) -> None:
        client = None
        try:
            client = self._connect()
            self._stream = client.events(filters=self._filters, decode=True, since=self._since())
            if self._stopped.is_set():
                return
            self._live_at = time.monotonic()
            for event in self._stream:
                if isinstance(event, dict):
                    self._on_event(event)
        except Exception:  # the daemon away or restarting: follow it again
            pass
        finally:
            self._live_at = None
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    self._stream.close()
                self._stream = None
            if client is not None:
                client.close()


def unix_socket(base_url: str | None) -> str | None:
    """The socket file of a daemon at `base_url` (None: the environment's), if it is one."""
    url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return url[len("unix://") :] if url.startswith("unix://") else None
