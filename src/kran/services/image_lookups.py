"""Registry lookups under way: one per reference, at most LOOKUPS_PER_USER per user.

An image names its registry: one user naming slow ones held every lookup slot, and
everyone's images went without a size (and a class) meanwhile. Past a user's share the
size stays unknown, as for a registry that cannot be reached. Submits of one reference at
once share one lookup and its answer (many at once left all but the first two without a
size)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kran.domain.images import ImageInfo
from kran.errors import RegistryError

LOOKUP_WAIT_S = 120.0  # a submit waits this long at most for a lookup of its image under way
LOOKUPS_PER_USER = 2  # registry lookups of one user at once (of the registry client's 8 in all)


@dataclass
class _Lookup:
    """One registry lookup under way, which submits of the same reference wait for."""

    done: threading.Event = field(default_factory=threading.Event)
    answer: ImageInfo | RegistryError | None = None


class Lookups:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[str, int] = {}  # user -> lookups under way
        self._pending: dict[str, _Lookup] = {}  # reference -> its lookup under way

    def run(self, ref_text: str, who: str, resolve: Callable[[], ImageInfo]) -> ImageInfo:
        """`resolve()`'s answer for `ref_text`, or the one a lookup under way gets."""
        with self._lock:
            shared = self._pending.get(ref_text)
            if shared is None:
                if self._by_user.get(who, 0) >= LOOKUPS_PER_USER:
                    why = f"{ref_text}: {LOOKUPS_PER_USER} lookups of yours under way: size not looked up"
                    raise RegistryError(why, answered=False)
                self._by_user[who] = self._by_user.get(who, 0) + 1
                mine = self._pending[ref_text] = _Lookup()
        if shared is not None:  # another submit looks it up: its answer is this one's
            if not shared.done.wait(LOOKUP_WAIT_S) or shared.answer is None:
                raise RegistryError(f"{ref_text}: looked up meanwhile, without an answer in time", answered=False)
            if isinstance(shared.answer, RegistryError):  # (refused: refused alike)
                raise RegistryError(str(shared.answer), answered=shared.answer.answered) from None
            return shared.answer
        try:
            mine.answer = resolve()
            return mine.answer
        except RegistryError as e:
            mine.answer = e
            raise
        finally:
            with self._lock:
                if (n := self._by_user.pop(who) - 1) > 0:
                    self._by_user[who] = n
                self._pending.pop(ref_text, None)
            mine.done.set()
