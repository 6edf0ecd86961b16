"""Registry lookups under way: one per reference, at most LOOKUPS_PER_USER per user and
IN_FLIGHT in all, each on a thread of its own.

An image names its registry: one user naming slow ones held every lookup slot, and
everyone's images went without a size (and a class) meanwhile. Past a user's share the
size stays unknown, as for a registry that cannot be reached. Submits of one reference at
once share one lookup and its answer (many at once left all but the first two without a
size). A submit awaits the lookup without holding a thread (`settle`): a request thread
that waited, one per submit, let one user's parallel submits of a slow registry's image
hold every thread of the server's pool."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from kran.domain.images import ImageInfo
from kran.errors import RegistryError

LOOKUP_WAIT_S = 120.0  # a submit waits this long at most for its image lookup (at most 2 x the registry timeout)
IN_FLIGHT = 8  # registry lookups at once, a thread each (as many as the registry client takes)
LOOKUPS_PER_USER = 2  # registry lookups of one user at once


class Lookups:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[str, int] = {}  # user -> lookups under way
        self._pending: dict[
            str, tuple[float, Future[ImageInfo]]
        ] = {}  # reference -> (until when waited for, its lookup)

    def start(self, ref_text: str, who: str, resolve: Callable[[], ImageInfo]) -> tuple[float, Future[ImageInfo]]:
        """The lookup of `ref_text` under way, or one started now on a thread of its own
        (RegistryError past the caps), and until when (monotonic) it is waited for."""
        with self._lock:
            if (shared := self._pending.get(ref_text)) is not None:
                return shared
            if self._by_user.get(who, 0) >= LOOKUPS_PER_USER:
                why = f"{ref_text}: {LOOKUPS_PER_USER} lookups of yours under way: size not looked up"
                raise RegistryError(why, answered=False)
            if len(self._pending) >= IN_FLIGHT:
                raise RegistryError(
                    f"{ref_text}: {IN_FLIGHT} registry lookups under way: size not looked up", answered=False
                )
            self._by_user[who] = self._by_user.get(who, 0) + 1
            future: Future[ImageInfo] = Future()
            future.set_running_or_notify_cancel()  # (a waiter that gives up cannot cancel it for the others)
            mine = self._pending[ref_text] = (time.monotonic() + LOOKUP_WAIT_S, future)
        threading.Thread(target=self._run, args=(ref_text, who, resolve, future), daemon=True).start()
        return mine

    def _run(self, ref_text: str, who: str, resolve: Callable[[], ImageInfo], future: Future[ImageInfo]) -> None:
        try:
            answer = resolve()
        except BaseException as e:  # (the waiters get it; a thread of its own has nobody else to tell)
            with self._lock:
                self._done(ref_text, who)
            future.set_exception(e)
        else:
            with self._lock:
                self._done(ref_text, who)
            future.set_result(answer)

    def _done(self, ref_text: str, who: str) -> None:
        if (n := self._by_user.pop(who) - 1) > 0:
            self._by_user[who] = n
        self._pending.pop(ref_text, None)

    def run(self, ref_text: str, who: str, resolve: Callable[[], ImageInfo]) -> ImageInfo:
        """`resolve()`'s answer for `ref_text`, or the one a lookup under way gets, waited
        for on this thread until the lookup's own deadline (after `settle` waited: at once)."""
        until, future = self.start(ref_text, who, resolve)
        try:
            return future.result(max(0.0, until - time.monotonic()))
        except TimeoutError:
            raise RegistryError(f"{ref_text}: looked up meanwhile, without an answer in time", answered=False) from None

    async def settle(self, refs: Iterable[str], who: str, resolve: Callable[[str], Callable[[], ImageInfo]]) -> None:
        """Wait, without holding a thread, for the lookups of `refs` (started here when none
        is under way; `resolve(ref)` makes one) to end or reach their deadline. Refusals and
        answers are left for `run` to meet again (the answers in the caller's cache)."""
        waits = []
        for ref_text in dict.fromkeys(refs):
            try:
                until, future = self.start(ref_text, who, resolve(ref_text))
            except RegistryError:
                continue
            waits.append(asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), until - time.monotonic()))
        for outcome in await asyncio.gather(*waits, return_exceptions=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
