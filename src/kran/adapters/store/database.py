"""The store's database: the SQLAlchemy engine and its transactions, shared by every store
module (jobs, schedules, apps, images, identities, workflows).

Every write goes through `unit_of_work()`. Correctness rests on the database: each job
state change is a compare-and-set on (id, state, attempt) (transitions.py), names and fire
times on unique constraints, a read-then-insert bound on `UnitOfWork.take_turn`. So two
servers on one PostgreSQL database are as safe as one. On SQLite, writers of this process
also take turns on a lock: SQLite has one writer at a time anyway, and waiting for a turn
beats SQLITE_BUSY. That lock is a SQLite detail, not the correctness argument.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, event, func, select
from sqlalchemy.engine import Engine as SAEngine

from kran.adapters.store.checkpoint import WalCheckpointer
from kran.adapters.store.disk_full import DiskFullHook


class Turn(IntEnum):
    """What transactions take turns for (UnitOfWork.take_turn): advisory lock keys, with
    kran's prefix so that they do not meet another application's on a shared database."""

    MIGRATE = 0x6B72616E_01  # two servers starting at once: one migrates, the other waits
    SUBMIT = 0x6B72616E_02  # the queue bound: count, then insert


@dataclass
class UnitOfWork:
    """One transaction (Database.unit_of_work). `queued`: how it changes the number of
    queued jobs, heard by the after-commit listeners once it is committed."""

    conn: Connection
    queued: int = 0

    def take_turn(self, turn: Turn) -> None:
        """Until this transaction ends, others that take the same turn wait: for a decision
        that reads rows and then inserts (a count bound), which no compare-and-set guards.
        PostgreSQL: a transaction-scoped advisory lock. SQLite: the writer turn is held."""
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(select(func.pg_advisory_xact_lock(int(turn))))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint.py's thread does it, not a commit
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    def __init__(self, url: str) -> None:
        self.engine: SAEngine = create_engine(url, pool_size=20, max_overflow=20)
        # SQLite: one server owns the data dir (it is locked), and so the data
        self.single_server = self.engine.dialect.name == "sqlite"
        if self.single_server:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._disk_full = DiskFullHook(self.engine)
        self._writer_turn: AbstractContextManager[Any] = threading.RLock() if self.single_server else nullcontext()
        self._committed: list[Callable[[UnitOfWork], None]] = []
        self._checkpointer = WalCheckpointer(self.engine, self._writer_turn) if self.single_server else None

    @staticmethod
    def for_data_dir(data_dir: Path) -> Database:
        return Database(f"sqlite:///{data_dir / 'kran.db'}")

    def on_storage_full(self, listener: Callable[[str], None]) -> None:
        """`listener(message)` hears of every write refused for lack of space."""
        self._disk_full.listeners.append(listener)

    def after_commit(self, listener: Callable[[UnitOfWork], None]) -> None:
        """`listener(uow)` hears of every unit of work committed, in the writer's turn."""
        self._committed.append(listener)

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """One transaction: all of it is committed or none (an exception rolls it back)."""
        with self._writer_turn:
            with self.engine.begin() as conn:
                uow = UnitOfWork(conn)
                yield uow
            for listener in self._committed:
                listener(uow)
            if self._checkpointer is not None:
                self._checkpointer.committed()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads (each statement sees what was committed before it)."""
        with self.engine.connect() as conn:
            yield conn

    def migrate(self, revision: str = "head") -> None:
        cfg = Config(str(Path(__file__).with_name("alembic.ini")))
        with self._writer_turn, self.engine.begin() as conn:
            UnitOfWork(conn).take_turn(Turn.MIGRATE)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.engine.dispose()
