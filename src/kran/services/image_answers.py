"""Registries' recent answers by reference: kept a minute, a refusal (or no answer in time)
FAILED_TTL_S, for the submits that follow; a registry login forgets them all."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kran.domain.images import ImageInfo
from kran.errors import RegistryError

log = logging.getLogger("kran.images")
INFO_TTL_S = 60.0
FAILED_TTL_S = 5.0  # a registry's refusal, or no answer in time: for the submits that waited on it
MAX_FAILED = 4096  # refusals kept before the stale ones are dropped


class RecentAnswers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info: dict[str, tuple[float, ImageInfo]] = {}
        self._failed: dict[str, tuple[float, RegistryError]] = {}
        self._logins = 0  # registry logins so far: answers of lookups begun before the last are not kept

    def known(self, ref_text: str) -> ImageInfo | RegistryError | None:
        """A registry's recent answer (or refusal) for the reference."""
        now = time.monotonic()
        if (cached := self._info.get(ref_text)) and now - cached[0] < INFO_TTL_S:
            return cached[1]
        if (failed := self._failed.get(ref_text)) and now - failed[0] < FAILED_TTL_S:
            return failed[1]
        return None

    def all(self) -> dict[str, ImageInfo]:
        """Every answer kept, however old."""
        return {ref: info for ref, (_, info) in list(self._info.items())}

    def keeping(self, ref_text: str, resolve: Callable[[], ImageInfo]) -> Callable[[], ImageInfo]:
        """`resolve`, keeping its answer, or its refusal, before its waiters hear it."""

        def kept() -> ImageInfo:
            logins = self._logins
            try:
                info = resolve()
            except RegistryError as e:
                self._refused(ref_text, e, logins)
                raise
            except Exception as e:  # (an answer no check foresaw, or a fault here: size unknown, not a 500)
                log.warning("looking up %s: %r", ref_text, e)
                unread = RegistryError(f"{ref_text}: the lookup failed ({type(e).__name__})", answered=False)
                self._refused(ref_text, unread, logins)
                raise unread from None
            with self._lock:
                if self._logins == logins:
                    self._info[ref_text] = (time.monotonic(), info)
                    self._failed.pop(ref_text, None)
            return info

        return kept

    def forget(self) -> None:
        """A registry login: the answers were given without its credentials (and a lookup
        under way, asked without them, keeps its answer to itself)."""
        with self._lock:
            self._logins += 1
            self._info.clear()
            self._failed.clear()

    def _refused(self, ref_text: str, e: RegistryError, logins: int) -> None:
        now = time.monotonic()
        with self._lock:
            if self._logins != logins:
                return
            if len(self._failed) >= MAX_FAILED:  # (refs are anyone's to name)
                self._failed = {r: f for r, f in self._failed.items() if now - f[0] < FAILED_TTL_S}
            self._failed[ref_text] = (now, e)
