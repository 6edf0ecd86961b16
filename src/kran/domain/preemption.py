"""Preemption (issue 20.6), off by default: which running `--preemptible` jobs to stop so
that a waiting job can start. A pure decision.

Policies (queue.preemption): `priority`: a job may preempt preemptible jobs of lower
priority; `fairshare`: also jobs of the same priority whose account and user are over their
share (fair-share factor below 0.5) for a job whose are not (0.5 or more). Victims are
taken on one node, lowest priority first, then the most recently started (the least work
lost), until the waiting job fits; the node needing the fewest victims wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
        if not _serves(node, waiting):
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


def after_stopping(nodes: list[NodeCapacity], stopping: list[tuple[str, Resources]]) -> list[NodeCapacity]:
    """The nodes as they will be once the jobs being stopped, (node, allocation), have
    stopped: their room counts as free."""
    coming: dict[str, Resources] = {}
    for node_id, alloc in stopping:
        coming[node_id] = coming.get(node_id, Resources()) + alloc
    return [replace(n, allocated=n.allocated - coming[n.node_id]) if n.node_id in coming else n for n in nodes]


def take_room(waiting: Waiting, nodes: list[NodeCapacity]) -> bool:
    """Does `waiting` fit on one of `nodes` without stopping anything? It then takes that
    room in the list, so the next waiting job does not count on it too."""
    need = waiting.request.minimum
    for i, n in enumerate(nodes):
        if _serves(n, waiting) and n.free.covers(need):
            nodes[i] = replace(n, allocated=n.allocated + need)
            return True
    return False


def _serves(node: NodeCapacity, waiting: Waiting) -> bool:
    return node.schedulable and (waiting.node_class is None or node.node_class == waiting.node_class)
