"""How the services wake the scheduler loop: something changed that it should look at."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Wakeups:
    wake: threading.Event = field(default_factory=threading.Event)
    dispatch_needed: threading.Event = field(default_factory=threading.Event)
    monitor_needed: threading.Event = field(default_factory=threading.Event)
    settled: threading.Event = field(default_factory=threading.Event)  # attempts ended: step waits look

    def poke(self) -> None:
        """Something changed that may let a queued job start."""
        self.dispatch_needed.set()
        self.wake.set()

    def exited(self) -> None:
        """Work ended (a host process): the monitor should look."""
        self.monitor_needed.set()
        self.wake.set()
