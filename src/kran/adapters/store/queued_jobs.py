"""How many jobs are queued, for the queue bound (a submission past it is refused).

SQLite: one server owns the data dir, so a number kept by the units of work (each commit
adds its `queued`) is right, and a submit costs no COUNT. PostgreSQL may have several
servers: the number is counted in the submitting transaction, after the submitters' turn
(an advisory lock held to its commit), so two servers never both take the last places.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from kran.adapters.store.database import Database, Turn, UnitOfWork
from kran.adapters.store.tables import jobs
from kran.domain.states import JobState


def _count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(jobs).where(jobs.c.state == JobState.QUEUED)).scalar_one())


class QueuedJobs:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._kept: int | None = None  # SQLite only: None until first counted
        if db.single_server:
            db.after_commit(self._committed)

    def _committed(self, uow: UnitOfWork) -> None:
        if self._kept is not None:
            self._kept += uow.queued

    def before_insert(self, uow: UnitOfWork) -> int:
        """The number in a unit of work about to add queued jobs; it holds until that commits."""
        if not self._db.single_server:
            uow.take_turn(Turn.SUBMIT)
            return _count(uow.conn)
        if self._kept is None:  # in the writer's turn: no commit comes between count and keep
            self._kept = _count(uow.conn)
        return self._kept

    def now(self) -> int:
        if self._db.single_server:
            with self._db.unit_of_work() as uow:
                return self.before_insert(uow)
        with self._db.connect() as conn:
            return _count(conn)
