"""Preemption in the scheduler's pass (issue 20.6; domain/preemption.py decides): when a
waiting job fits nowhere, running `--preemptible` jobs it outranks are stopped (SIGTERM,
grace, SIGKILL, through the kill path with reason `preempt`), and the room they leave is
kept for it (a reservation) until it starts."""

from __future__ import annotations

import logging

from kran.domain.placement import Candidate, NodeCapacity
from kran.domain.preemption import Running, Waiting, choose_victims
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
        # those stopping have not stopped yet: from the store (victims being killed are no
        # longer `preemptible`, so that list never showed them: every pass while a victim
        # saved its work stopped one more; and a restart forgets nothing)
        if self.accounts.stopping_for_preemption():
            return
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
            chosen = choose_victims(self.mode, w, nodes, candidates)
            if chosen is not None:
                node, victims = chosen
                log.info("preempting jobs %s on %s for job %s", victims, node, cand.job_id)
                self.store.request_kill(victims, "preempt", self.clock.now())
                self.waiting_for[cand.job_id] = set(victims)
                return
