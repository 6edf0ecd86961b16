"""Nodes: the inventory with what kran placed where, and the operators' node actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kran.domain.auth import Principal
from kran.domain.cluster import NodeInfo
from kran.domain.resources import Resources
from kran.domain.states import JobState
from kran.errors import Conflict, EngineError, Forbidden, InvalidInput
from kran.ports import Cluster
from kran.services.runtime import LOCAL_NODE, Runtime


@dataclass(frozen=True)
class NodeView:
    info: NodeInfo
    used: Resources
    running_jobs: list[int]


def list_nodes(rt: Runtime) -> list[NodeView]:
    if rt.cluster is None:
        infos = [NodeInfo(LOCAL_NODE, rt.hostnames()[LOCAL_NODE], "local", "active", "ready", "", {}, "", rt.capacity)]
    else:
        infos = rt.cluster.nodes(fresh=True)
    allocated = rt.store.allocated_by_node()
    active = rt.store.list_jobs([JobState.STARTING, JobState.RUNNING], limit=100_000)
    jobs: dict[str, list[int]] = {}
    for j in active:
        jobs.setdefault(j.node or "", []).append(j.id)
    return [NodeView(n, allocated.get(n.node_id, Resources()), sorted(jobs.get(n.node_id, []))) for n in infos]


def _cluster(rt: Runtime, who: Principal) -> Cluster:
    if not who.is_admin:
        raise Forbidden("changing nodes needs an admin")
    if rt.cluster is None:
        raise Conflict("this server runs the local engine: it has no cluster nodes to change")
    return rt.cluster


def label_node(rt: Runtime, who: Principal, node: str, labels: dict[str, str | None]) -> None:
    for k in labels:
        if not k or len(k) > 128 or any(c.isspace() or c == "=" for c in k):
            raise InvalidInput(f"{k!r} is not a label key", "labels")
    _act(lambda c: c.update_node(node, labels=labels), _cluster(rt, who))


def set_availability(rt: Runtime, who: Principal, node: str, availability: str) -> None:
    """drain: no new jobs (running ones finish: kran never moves them); active: schedulable again."""
    _act(lambda c: c.update_node(node, availability=availability), _cluster(rt, who))


def remove_node(rt: Runtime, who: Principal, node: str, force: bool) -> None:
    cluster = _cluster(rt, who)
    found = [v for v in list_nodes(rt) if node in (v.info.node_id, v.info.hostname) or v.info.node_id.startswith(node)]
    if found and found[0].running_jobs and not force:
        ids = ", ".join(str(i) for i in found[0].running_jobs[:10])
        raise Conflict(f"jobs {ids} run on node {node}: drain it and wait, or remove it with --force")
    _act(lambda c: c.remove_node(node, force), cluster)


def join_command(rt: Runtime, who: Principal) -> str:
    cluster = _cluster(rt, who)
    try:
        return cluster.join_command()
    except EngineError as e:
        raise Conflict(str(e)) from None


def _act(action: Callable[[Cluster], None], cluster: Cluster) -> None:
    try:
        action(cluster)
    except EngineError as e:
        raise Conflict(str(e)) from None
