"""A full disk under the store is StorageFull (HTTP 507), not a driver error: the
transaction was rolled back, nothing was half-stored. One SQLAlchemy `handle_error` hook."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

from kran.errors import StorageFull

SQLITE_FULL = 13
PG_DISK_FULL = "53100"


def is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or PG_DISK_FULL in (
        getattr(exc, "pgcode", None),
        getattr(exc, "sqlstate", None),
    )


class DiskFullHook:
    """Turns the engine's disk-full errors into StorageFull and tells the listeners."""

    def __init__(self, engine: Engine) -> None:
        self.listeners: list[Callable[[str], None]] = []
        event.listen(engine, "handle_error", self._error)

    def _error(self, ctx: ExceptionContext) -> None:
        if is_disk_full(ctx.original_exception):
            message = str(ctx.original_exception)
            for listener in self.listeners:
                listener(message)
            raise StorageFull(f"the store's disk is full ({message}): nothing was stored") from None
