"""Preemption in the scheduler's pass (issue 20.6; domain/preemption.py decides): when a
waiting job fits nowhere, running `--preemptible` jobs it outranks are stopped (SIGTERM,
grace, SIGKILL, through the kill path with reason `preempt`), and the room they leave is
kept for it (a reservation) until it starts."""

from __future__ import annotations

import logging

from kran.domain.placement import Candidate, NodeCapacity
from kran.domain.preemption import Running, Waiting, after_stopping, choose_victims, take_room
from kran.ports import Accounts, Clock, Store
from kran.services.fairness import Standing

log = logging.getLogger("kran.preempt")


class Preemptor:
    def __init__(self, mode: str, accounts: Accounts, store: Store, clock: Clock) -> None:
        self.mode = mode
        self.accounts = accounts
        self.store = store
        self.clock = clock
        self.waiting_for: dict[int, set[int]] = {}  # waiting job -> the jobs stopped for it

    @property
    def on(self) -> bool:
        return self.mode != "off"

    def keeps_room_for(self, job_id: int) -> bool:
        """A job jobs were stopped for: it reserves the room they leave."""
        return job_id in self.waiting_for

    def after_pass(
        self,
        unplaced: list[tuple[Candidate, int, int | None]],
        started: set[int],
        nodes: list[NodeCapacity],
        standing: Standing | None,
    ) -> None:
        """`unplaced`: candidates (with their priority and association) this pass could not start, in queue
        order, none held by a limit or a lock. One preemption at a time."""
        for job_id in list(self.waiting_for):
            if job_id in started:
                del self.waiting_for[job_id]
        # the room of those still stopping (from the store: victims being killed are no
        # longer `preemptible`, and a restart forgets nothing) counts as free: a job that
        # fits there waits for it, no one more is stopped for it (every pass while a victim
        # saved its work stopped one more, before); others may still have jobs stopped
        stopping = self.accounts.stopping_for_preemption()
        after = after_stopping(nodes, stopping)
        if not stopping:
            self.waiting_for.clear()
        running = self.accounts.preemptible()
        if not unplaced or not running:
            return
        candidates = [
            Running(job, node, alloc, prio, started, standing.factor(assoc) if standing else 1.0)
            for job, assoc, node, alloc, prio, started in running
        ]
        for cand, priority, assoc in unplaced:
            factor = standing.factor(assoc) if standing is not None else 1.0
            w = Waiting(cand.job_id, cand.request, priority, cand.node_class, factor)
            if take_room(w, after):
                continue
            chosen = choose_victims(self.mode, w, after, candidates)
            if chosen is not None:
                node, victims = chosen
                log.info("preempting jobs %s on %s for job %s", victims, node, cand.job_id)
                self.store.request_kill(victims, "preempt", self.clock.now())
                self.waiting_for[cand.job_id] = set(victims)
                return
