"""Which queued jobs start where: a pure function over queue and node capacity.

Rule (documented in docs/scheduling.md): jobs are taken in queue order (priority high
to low, then submission order). Each job that fits on some node starts there, even if
an earlier job does not fit (backfill: no head-of-line blocking). To keep big jobs from
starving, a job that has waited longer than `reserve_after_s` becomes a *reservation*:
no job behind it in queue order starts until it has started, so freed capacity
accumulates for it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from kran.domain.resources import ResourceRequest, Resources, format_cpus


@dataclass(frozen=True)
class Candidate:
    job_id: int
    request: ResourceRequest
    waited_s: float
    exclusive: str | None = None  # a lock only one running job may hold (an app volume)
    node_class: str | None = None  # only nodes of this class (node label kran.class)
    image: str | None = None  # nodes holding it are preferred (no pull)
    budgets: tuple[Hashable, ...] = ()  # keys of the running limits it counts in (domain.limits)
    lock: str | None = None  # a second lock like `exclusive` (a singleton job's owner and name)


@dataclass
class NodeCapacity:
    node_id: str
    total: Resources
    allocated: Resources = field(default_factory=Resources)
    schedulable: bool = True
    node_class: str = ""
    images: frozenset[str] = frozenset()  # image references (tags, digests) the node holds

    @property
    def free(self) -> Resources:
        return self.total - self.allocated


@dataclass(frozen=True)
class Assignment:
    job_id: int
    node_id: str
    allocation: Resources


@dataclass(frozen=True)
class Placement:
    assignments: list[Assignment]
    reserved_for: int | None  # job id holding a reservation, if any


def place_jobs(
    candidates: list[Candidate],
    nodes: list[NodeCapacity],
    *,
    reserve_after_s: float,
    held: set[str] | None = None,
    pack: bool = False,
    budgets: dict[Hashable, list[int]] | None = None,
) -> Placement:
    """Assign candidates (already in queue order) to nodes without oversubscribing.

    Among nodes that fit (and are of the job's class, if it names one), nodes that hold
    the job's image come first (locality: no pull); then the one with the most free cpus
    is chosen (spread), or with `pack` the one with the fewest. A candidate
    whose `exclusive` lock (or `lock`) is in `held` (or taken earlier in this pass) waits, without
    reserving capacity. `held` is updated with the locks taken.

    Limits: `budgets` maps a key to what it may still start, [jobs, millicpus, mem_mb,
    gpus]; a candidate starts only within every budget it names (else it waits without
    reserving: a limit, not capacity, holds it), its grant is capped by them, and they are
    charged with it.

    Cost (issue 23.6): a candidate looks only at the nodes of its class, as plain integers;
    a request that fit nowhere in this pass fits nowhere for the rest of it (free capacity
    only shrinks within a pass), so a later candidate asking as much or more (the same
    class) is passed over without a look.
    """
    # per schedulable node: [cpus, mem, gpus, disk] free, in node order (the tie-break)
    free: dict[str, list[int]] = {}
    by_class: dict[str, list[str]] = {}
    for n in nodes:
        if n.schedulable:
            f = n.free
            free[n.node_id] = [f.millicpus, f.mem_mb, f.gpus, f.disk_mb]
            by_class.setdefault(n.node_class, []).append(n.node_id)
    every = list(free)
    images = {n.node_id: n.images for n in nodes}
    held = held if held is not None else set()
    failed: dict[str | None, list[tuple[int, int, int, int]]] = {}  # minimums that fit nowhere
    out: list[Assignment] = []
    for cand in candidates:
        if (cand.exclusive is not None and cand.exclusive in held) or (cand.lock is not None and cand.lock in held):
            continue
        r = cand.request
        need = (r.cpus.min, r.mem_mb.min, r.gpus.min, r.disk_mb.min)
        cap = _cap([budgets[k] for k in cand.budgets if k in budgets]) if cand.budgets and budgets else None
        if cap is not None and not _fits_cap(cap, need):
            continue
        known = failed.get(cand.node_class, ())
        if any(all(n >= k for n, k in zip(need, seen, strict=True)) for seen in known):
            fits = None
        else:
            fits = _best_node(cand, need, every if cand.node_class is None else by_class.get(cand.node_class, []),
                              free, images, pack, cap)  # fmt: skip
            if fits is None:
                failed.setdefault(cand.node_class, []).append(need)
        if fits is not None:
            node_id, grant = fits
            left = free[node_id]
            left[0] -= grant.millicpus
            left[1] -= grant.mem_mb
            left[2] -= grant.gpus
            left[3] -= grant.disk_mb
            out.append(Assignment(cand.job_id, node_id, grant))
            if cap is not None and budgets is not None:
                for k in cand.budgets:
                    b = budgets.get(k)
                    if b is not None:
                        b[0] -= 1
                        b[1] -= grant.millicpus
                        b[2] -= grant.mem_mb
                        b[3] -= grant.gpus
            if cand.exclusive is not None:
                held.add(cand.exclusive)
            if cand.lock is not None:
                held.add(cand.lock)
        elif cand.waited_s >= reserve_after_s:
            return Placement(out, cand.job_id)
    return Placement(out, None)


def _best_node(
    cand: Candidate,
    need: tuple[int, int, int, int],
    node_ids: list[str],
    free: dict[str, list[int]],
    images: dict[str, frozenset[str]],
    pack: bool,
    cap: list[int] | None = None,
) -> tuple[str, Resources] | None:
    """The node a candidate goes to and what it is granted there, or None."""
    c_min, m_min, g_min, d_min = need
    best: tuple[str, list[int], tuple[bool, int]] | None = None
    for node_id in node_ids:
        f = free[node_id]
        if f[0] < c_min or f[1] < m_min or f[2] < g_min or f[3] < d_min:
            continue
        key = (cand.image is not None and cand.image in images[node_id], -f[0] if pack else f[0])
        if best is None or key > best[2]:
            best = (node_id, f, key)
    if best is None:
        return None
    node_id, f, _ = best
    if cap is not None:  # a limit's budget: [jobs, millicpus, mem_mb, gpus]
        f = [min(f[0], cap[1]), min(f[1], cap[2]), min(f[2], cap[3]), f[3]]
    grant = cand.request.grant(Resources(*f))
    assert grant is not None  # it fits: every minimum is within f
    return node_id, grant


def _fits_cap(cap: list[int], need: tuple[int, int, int, int]) -> bool:
    return cap[0] >= 1 and cap[1] >= need[0] and cap[2] >= need[1] and cap[3] >= need[2]


def held_back(cand: Candidate, held: set[str] | None, budgets: dict[Hashable, list[int]] | None) -> bool:
    """Waits for a lock or a limit's budget, not for room."""
    if held and ((cand.exclusive and cand.exclusive in held) or (cand.lock and cand.lock in held)):
        return True
    if not (cand.budgets and budgets):
        return False
    cap = _cap([budgets[k] for k in cand.budgets if k in budgets])
    r = cand.request
    return cap is not None and not _fits_cap(cap, (r.cpus.min, r.mem_mb.min, r.gpus.min, r.disk_mb.min))


def _cap(budgets: list[list[int]]) -> list[int] | None:
    """The least of each budget's parts, or None without any."""
    if not budgets:
        return None
    return [min(b[i] for b in budgets) for i in range(4)]


def has_room(node: NodeCapacity) -> bool:
    """Could any job still fit? Every job asks for some cpu and some memory."""
    free = node.free
    return node.schedulable and free.millicpus > 0 and free.mem_mb > 0


def fits_anywhere(request: ResourceRequest, nodes: list[NodeCapacity], node_class: str | None = None) -> bool:
    """Could the job ever run? Without a node of its class yet, it may: nodes join later."""
    if node_class is not None:
        nodes = [n for n in nodes if n.node_class == node_class]
        if not nodes:
            return True
    return any(n.total.covers(request.minimum) for n in nodes)


def shortfall(request: ResourceRequest, free: Resources) -> str | None:
    """'needs 8 cpus, node has 2 free' for the first resource that does not fit."""
    need = request.minimum
    if need.millicpus > free.millicpus:
        have = format_cpus(max(free.millicpus, 0))
        return f"needs {format_cpus(need.millicpus)} cpus, node has {have} free"
    for name, unit in (("mem_mb", "MiB memory"), ("gpus", "gpus"), ("disk_mb", "MiB disk")):
        n, f = getattr(need, name), getattr(free, name)
        if n > f:
            return f"needs {n} {unit}, node has {max(f, 0)} free"
    return None


def explain_wait(
    *,
    request: ResourceRequest,
    nodes: list[NodeCapacity],
    ahead: int,
    not_before_in_s: float | None,
    reserved_for: int | None,
    waiting_on: str | None = None,
    node_class: str | None = None,
) -> str:
    """Why a queued job has not started yet, in words."""
    if waiting_on:
        return waiting_on
    if node_class is not None:
        nodes = [n for n in nodes if n.node_class == node_class]
        if not any(n.schedulable for n in nodes):
            return f"no schedulable node of class {node_class}"
    if not_before_in_s is not None and not_before_in_s > 0:
        return f"retry backoff, eligible in {not_before_in_s:.0f}s"
    reasons = []
    for n in nodes:
        if not n.schedulable:
            continue
        why = shortfall(request, n.free)
        if why is None:
            if reserved_for is not None:
                return f"capacity is reserved for job {reserved_for}, which has waited longest"
            return f"fits now; {ahead} job(s) ahead in the queue" if ahead else "about to start"
        reasons.append(why if len(nodes) == 1 else f"{n.node_id}: {why}")
    return "; ".join(reasons) if reasons else "no schedulable node"
