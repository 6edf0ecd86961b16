"""Live job states for the web dashboard: one reader of the events table, whatever the
number of browsers, fanning each event out to the subscribers allowed to see its job.
The reader runs only while someone listens."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kran.domain.auth import Principal, can_see
from kran.domain.records import EventRecord
from kran.errors import QueueFull

log = logging.getLogger("kran.live")
QUEUE_MAX = 2000  # a browser this far behind is told to reload instead
PER_USER = 32  # live streams of one user (browser tabs, API clients)
IN_ALL = 5000
KEEPALIVE = "keep-alive"  # what `follow` yields after a quiet while
BACKLOG = 500
# reads of the events: at once after a commit while under READ_BURST in a row (latency);
# under a steady stream of commits READS_PER_S, each read taking what came meanwhile (CPU)
READS_PER_S = 50
READ_BURST = 10


class EventSource(Protocol):
    def last_event_id(self) -> int: ...
    def events_with_owners(self, after_id: int, limit: int) -> list[tuple[EventRecord, str, str | None]]: ...


@dataclass(eq=False)
class Subscriber:
    who: Principal
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[EventRecord | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    behind: bool = False  # dropped events: the page should reload
    ended: bool = False  # the server stops: the stream ends (a browser's EventSource connects again)

    def offer(self, event: EventRecord | None) -> None:  # on the loop's thread
        if self.behind:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:  # what is queued goes too: a catch-up from the store starts after the last sent
            self.behind = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    def end(self) -> None:  # on the loop's thread
        self.ended = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class LiveFeed:
    def __init__(self, source: EventSource, interval_s: float = 0.25) -> None:
        self.source = source
        self.interval_s = interval_s
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def check_room(self, who: Principal) -> None:
        """QueueFull (HTTP 429) over PER_USER streams of one user or IN_ALL in all."""
        with self._lock:
            if sum(1 for s in self._subs if s.who.user == who.user) >= PER_USER:
                raise QueueFull(f"at most {PER_USER} live streams per user: close some pages")
            if len(self._subs) >= IN_ALL:
                raise QueueFull(f"the server has {IN_ALL} live streams open: try again later")

    def subscribe(self, who: Principal) -> Subscriber:
        sub = Subscriber(who, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                sub.end()
                return sub
            self._subs.add(sub)
            if self._thread is None:  # from the last event now: none stored after this subscribe is missed
                last = self.source.last_event_id()
                self._thread = threading.Thread(target=self._run, args=(last,), name="kran-live", daemon=True)
                self._thread.start()
        return sub

    def close(self) -> None:
        """The server stops: every stream ends now, and one opened after ends at once
        (uvicorn would wait for them, then cut them off)."""
        with self._lock:
            self._closed = True
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.end)
            except RuntimeError:  # its loop closed
                pass

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    def follow(
        self,
        who: Principal,
        after: int | None = None,
        backlog: Callable[[int], list[EventRecord]] | None = None,
        keepalive_s: float = 15.0,
    ) -> AsyncIterator[EventRecord | str | None]:
        """The events `who` may see: with `after`, first those stored after that id (read
        by `backlog`, BACKLOG at a time), then live, each once and in order. KEEPALIVE after
        `keepalive_s` of quiet. Far behind: with a backlog reader it catches up from the
        store; without, it yields None and ends (a page reloads). The caps are checked
        here, before a response starts (QueueFull); it subscribes once iterated."""
        self.check_room(who)
        return self._follow(who, after, backlog, keepalive_s)

    async def _follow(
        self,
        who: Principal,
        after: int | None,
        backlog: Callable[[int], list[EventRecord]] | None,
        keepalive_s: float,
    ) -> AsyncIterator[EventRecord | str | None]:
        last = after
        if last is not None:  # never past the last event (a client's value): every live one would be dropped as seen
            last = min(last, await asyncio.to_thread(self.source.last_event_id))
        sub = self.subscribe(who)  # (after that read: what is stored meanwhile comes from the backlog)
        try:
            while True:
                if last is not None and backlog is not None:
                    while True:  # subscribed first: the store's rows and the live ones overlap, none is missed
                        batch = await asyncio.to_thread(backlog, last)
                        for event in batch:
                            last = event.id
                            yield event
                        if len(batch) < BACKLOG:
                            break
                while True:
                    try:
                        item = await asyncio.wait_for(sub.queue.get(), keepalive_s)
                    except TimeoutError:
                        yield KEEPALIVE
                        continue
                    if item is None:
                        if sub.ended:
                            return
                        break
                    if last is None or item.id > last:
                        last = item.id
                        yield item
                if backlog is None or last is None:
                    yield None
                    return
                self.unsubscribe(sub)  # fell behind: catch up from the store, then live again
                sub = self.subscribe(who)
        finally:
            self.unsubscribe(sub)

    def poke(self) -> None:
        """Something was stored: read the events now rather than at the next interval."""
        self._wake.set()

    def _run(self, last: int) -> None:
        tokens, at = float(READ_BURST), time.monotonic()
        while True:
            now = time.monotonic()
            tokens = min(float(READ_BURST), tokens + (now - at) * READS_PER_S)
            if tokens < 1:
                time.sleep((1 - tokens) / READS_PER_S)
                tokens = 1.0
            tokens -= 1
            at = time.monotonic()
            self._wake.clear()  # a commit after this wakes the next read
            try:
                batch = self.source.events_with_owners(last, 1000)
            except Exception:  # the store may be busy or closing: try again next round
                log.exception("reading events for the live feed")
                batch = []
            with self._lock:  # after the read: whoever subscribed before it gets what it read
                subs = list(self._subs)
                if not subs:
                    self._thread = None
                    return
            for event, owner, submitted_by in batch:
                last = event.id
                for sub in subs:
                    if can_see(sub.who, owner, submitted_by):
                        self._deliver(sub, event)
            if len(batch) < 1000:  # (a full batch: more to read at once)
                self._wake.wait(self.interval_s)

    @staticmethod
    def _deliver(sub: Subscriber, event: Any) -> None:
        try:
            sub.loop.call_soon_threadsafe(sub.offer, event)
        except RuntimeError:  # its loop closed
            pass
