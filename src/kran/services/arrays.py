"""Job arrays (issue 20.4): submit one, see it, kill it or one task; its tasks are made
(adapters.store.array_store.expand) as they may start, at the head of each scheduler pass."""

from __future__ import annotations

from dataclasses import replace

from kran.domain.arrays import ArrayRecord, parse_array
from kran.domain.auth import Principal, can_see
from kran.domain.jobs import JobSpec
from kran.errors import Conflict, InvalidInput, NotFound
from kran.ports import Arrays, Clock
from kran.services.jobs import JobService
from kran.services.wakeups import Wakeups


class ArrayService:
    def __init__(self, arrays: Arrays, jobs: JobService, clock: Clock, wakeups: Wakeups) -> None:
        self.arrays = arrays
        self.jobs = jobs
        self.clock = clock
        self.wakeups = wakeups

    def submit(self, spec: JobSpec, expr: str, owner: str, submitted_by: str | None, sees_all: bool) -> ArrayRecord:
        """Checked as one job is (account, limits, admission, dependencies); stored as one row."""
        try:
            indices = parse_array(expr)
        except ValueError as e:
            raise InvalidInput(f"array: {e}", "array") from None
        (checked,) = self.jobs.check([replace(spec, array=(0, indices.index_at(0), indices.count))], owner, sees_all)
        array_id = self.arrays.create(replace(checked, array=None), indices, owner, submitted_by, self.clock.now())
        self.wakeups.poke()
        got = self.arrays.get(array_id)
        assert got is not None
        return got

    def visible(self, array_id: int, who: Principal) -> ArrayRecord:
        a = self.arrays.get(array_id)
        if a is None or not can_see(who, a.owner, a.submitted_by):
            raise NotFound(f"array {array_id} not found")
        return a

    def list(self, who: Principal, mine: bool, limit: int) -> list[ArrayRecord]:
        if who.is_admin and not mine:
            return self.arrays.list(None, limit)
        return self.arrays.list(who.user, limit, who.user)

    def kill(self, array_id: int, who: Principal, index: int | None = None) -> ArrayRecord:
        a = self.visible(array_id, who)
        now = self.clock.now()
        if index is None:
            self.arrays.kill(array_id, now)
        else:
            if not a.indices.has(index):
                raise NotFound(f"array {array_id} has no task {index}")
            if a.kill_requested or a.state == "done":
                raise Conflict(f"array {array_id} already ended")
            self.arrays.kill_task(array_id, index, now)
        self.wakeups.wake.set()
        return self.visible(array_id, who)

    def expand(self, now: float) -> int:
        return self.arrays.expand(now)
