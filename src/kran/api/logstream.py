"""Followed logs (and workflow event streams) without holding the server's request
threads: each follow reads the log in a thread of its own, handing chunks to the response
over a small queue, and stops at the next chunk once the client has gone. Follows are
capped per user and in all: a thread stays blocked until the job writes or ends, so a
client opening and closing follows could otherwise pile them up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from kran.api.caps import UserCaps
from kran.errors import QueueFull

PER_USER = 8
IN_ALL = 256
_DONE = object()


class Follows:
    def __init__(self, per_user: int = PER_USER, in_all: int = IN_ALL) -> None:
        self.caps = UserCaps(per_user, in_all)
        self._open: dict[object, Callable[[], None]] = {}  # each follow's end, for a stop
        self._closed = False

    def close(self) -> None:
        """The server stops (on the loop's thread): every follow ends now, and one opened
        after ends at once, so the stop need not wait for them and cut them off. A client
        tells it from the job's end by the job's state (`kran logs -f` does)."""
        self._closed = True
        for end in list(self._open.values()):
            end()

    def _take(self, user: str) -> None:
        full = self.caps.take(user)
        if full == "user":
            raise QueueFull(f"at most {self.caps.per_user} followed logs or event streams at once per user: close one")
        if full == "all":
            raise QueueFull(f"the server follows {self.caps.in_all} logs or event streams already: try again later")

    def stream(self, chunks: Iterator[bytes], user: str, farewell: bytes = b"") -> AsyncIterator[bytes]:
        """The chunks as an async stream (refused with 429 over the caps, before it starts);
        `farewell` ends it when the server stops (text for a person: the dashboard's log)."""
        self._take(user)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()  # at most 8 chunks in it: `room`
        stop = threading.Event()
        room = threading.Semaphore(8)

        def read() -> None:
            try:
                for chunk in chunks:
                    if stop.is_set():
                        break
                    room.acquire()
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                    if stop.is_set():
                        break
            except Exception as e:  # told to the response, which ends
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                self.caps.give(user)
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, _DONE)
                    loop.call_soon_threadsafe(self._open.pop, key, None)
                except RuntimeError:  # the loop is gone
                    pass

        def end() -> None:
            stop.set()
            if farewell:
                queue.put_nowait(farewell)
            queue.put_nowait(_DONE)

        key = object()
        self._open[key] = end
        threading.Thread(target=read, name="kran-log-follow", daemon=True).start()
        if self._closed:
            end()

        async def out() -> AsyncIterator[bytes]:
            try:
                while True:
                    item = await queue.get()
                    room.release()
                    if item is _DONE:
                        return
                    if isinstance(item, Exception):
                        raise item
                    assert isinstance(item, bytes)
                    yield item
            finally:
                self._open.pop(key, None)
                stop.set()
                room.release()  # a reader waiting for room sees the stop

        return out()
