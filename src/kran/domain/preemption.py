"""Preemption (issue 20.6), off by default: which running `--preemptible` jobs to stop so
that a waiting job can start. A pure decision.

Policies (queue.preemption): `priority`: a job may preempt preemptible jobs of lower
priority; `fairshare`: also jobs of the same priority whose account and user are over their
share (fair-share factor below 0.5) for a job whose are not (0.5 or more). Victims are
taken on one node, lowest priority first, then the most recently started (the least work
lost), until the waiting job fits; the node needing the fewest victims wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from kran.domain.placement import NodeCapacity
from kran.domain.resources import ResourceRequest, Resources

MODES = ("off", "priority", "fairshare")


@dataclass(frozen=True)
class Running:
    job_id: int
    node_id: str
    alloc: Resources
    priority: int
    started_at: float
    factor: float = 1.0  # the fair-share factor of what it is charged to


@dataclass(frozen=True)
class Waiting:
    job_id: int
    request: ResourceRequest
    priority: int
    node_class: str | None = None
    factor: float = 1.0


def may_preempt(mode: str, waiting: Waiting, victim: Running) -> bool:
    if mode == "off":
        return False
    if victim.priority < waiting.priority:
        return True
    return mode == "fairshare" and victim.priority == waiting.priority and victim.factor < 0.5 <= waiting.factor


def choose_victims(
    mode: str, waiting: Waiting, nodes: list[NodeCapacity], running: list[Running]
) -> tuple[str, list[int]] | None:
    """(node, job ids to stop) so that `waiting` fits there once they have stopped, or None."""
    need = waiting.request.minimum
    best: tuple[tuple[int, int], str, list[int]] | None = None
    for node in nodes:
        if not node.schedulable or (waiting.node_class is not None and node.node_class != waiting.node_class):
            continue
        if not node.total.covers(need):
            continue
        free = node.free
        if free.covers(need):
            return None  # it fits without stopping anything: not a case for preemption
        here = sorted(
            (r for r in running if r.node_id == node.node_id and may_preempt(mode, waiting, r)),
            key=lambda r: (r.priority, -r.started_at),
        )
        chosen: list[Running] = []
        for r in here:
            chosen.append(r)
            free = free + r.alloc
            if free.covers(need):
                key = (len(chosen), sum(c.priority for c in chosen))
                if best is None or key < best[0]:
                    best = (key, node.node_id, [c.job_id for c in chosen])
                break
    return None if best is None else (best[1], best[2])
