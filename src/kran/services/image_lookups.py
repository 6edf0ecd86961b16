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
from collections import deque
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

    def why_not(self, ref_text: str, who: str) -> str:
        """Why `ref_text` has no answer now, after `settle`."""
        with self._lock:
            if ref_text in self._pending:
                return f"{ref_text}: looked up meanwhile, without an answer in time"
            if self._by_user.get(who, 0) >= LOOKUPS_PER_USER:
                return f"{ref_text}: {LOOKUPS_PER_USER} lookups of yours under way: size not looked up"
            if len(self._pending) >= IN_FLIGHT:
                return f"{ref_text}: {IN_FLIGHT} registry lookups under way: size not looked up"
        return f"{ref_text}: not looked up in time: size unknown"

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

    async def settle(
        self, refs: Iterable[str], who: str, resolve: Callable[[str], Callable[[], ImageInfo]]
    ) -> dict[str, ImageInfo | RegistryError]:
        """The answers (or refusals) to the lookups of `refs`, awaited holding no thread until
        they end or LOOKUP_WAIT_S passed: each one under way joined, the others started in
        order as the caps allow (a batch's third reference once one of its first two ends;
        `resolve(ref)` makes a lookup). Past a cap while none of these lookups is under
        way, the rest are left without an answer (`why_not`)."""
        left = deque(dict.fromkeys(refs))
        deadline = time.monotonic() + LOOKUP_WAIT_S
        running: dict[asyncio.Future[ImageInfo], str] = {}
        answers: dict[str, ImageInfo | RegistryError] = {}
        while left or running:
            while left:
                try:
                    _, future = self.start(left[0], who, resolve(left[0]))
                except RegistryError:
                    break  # past a cap: the rest start as these lookups end (one try each time: a batch may name 100k)
                waited = asyncio.wrap_future(future)
                waited.add_done_callback(_retrieved)
                running[waited] = left.popleft()
            if (remaining := deadline - time.monotonic()) <= 0 or not running:
                return answers  # (nothing under way: the caps are held by lookups this one does not wait on)
            done, _ = await asyncio.wait(running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for waited in done:
                ref_text = running.pop(waited)
                outcome = None if waited.cancelled() else waited.exception()
                if outcome is None and not waited.cancelled():
                    answers[ref_text] = waited.result()
                elif isinstance(outcome, RegistryError):
                    answers[ref_text] = outcome
        return answers


def _retrieved(future: asyncio.Future[ImageInfo]) -> None:
    """(an answer nobody reads is no "exception never retrieved" in the log)"""
    if not future.cancelled():
        future.exception()
