"""Nodes: what kran places on (NodeDirectory), and the operators' node actions (NodeAdmin)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kran.domain.auth import Principal
from kran.domain.cluster import NodeInfo
from kran.domain.placement import NodeCapacity
from kran.domain.resources import Resources
from kran.domain.states import JobState
from kran.errors import Conflict, EngineError, Forbidden, InvalidInput
from kran.ports import Cluster, Store


@dataclass
class NodeDirectory:
    """The engine's nodes (this machine alone for the local engine). `image_refs` (node ->
    the image references it holds) is the image manager's inventory, shared, read at each pass."""

    cluster: Cluster
    store: Store
    image_refs: dict[str, frozenset[str]] = field(default_factory=dict)

    def totals(self) -> list[NodeCapacity]:
        """Nodes with their total capacity only (no store read)."""
        return [
            NodeCapacity(n.node_id, n.total, schedulable=n.schedulable, node_class=n.node_class)
            for n in self.cluster.nodes()
        ]

    def with_load(self) -> list[NodeCapacity]:
        """Nodes with what is allocated on them and the images they hold."""
        allocated = self.store.allocated_by_node()
        nodes = self.totals()
        held = dict(self.image_refs)
        for n in nodes:
            n.allocated = allocated.get(n.node_id, Resources())
            n.images = held.get(n.node_id, frozenset())
        return nodes

    def hostnames(self) -> dict[str, str]:
        return {n.node_id: n.hostname for n in self.cluster.nodes()}

    def capacity(self) -> Resources:
        """All nodes together."""
        return sum((n.total for n in self.totals()), start=Resources())

    def largest(self) -> Resources:
        """The most of each resource one node has (what no job may ask more than)."""
        totals = [n.total for n in self.totals()] or [Resources()]
        return Resources(*(max(getattr(t, f) for t in totals) for f in ("millicpus", "mem_mb", "gpus", "disk_mb")))


@dataclass(frozen=True)
class NodeView:
    info: NodeInfo
    used: Resources
    running_jobs: list[int]


class NodeAdmin:
    def __init__(self, nodes: NodeDirectory, store: Store) -> None:
        self.nodes = nodes
        self.store = store

    def list_nodes(self) -> list[NodeView]:
        infos = self.nodes.cluster.nodes(fresh=True)
        allocated = self.store.allocated_by_node()
        active = self.store.list_jobs([JobState.STARTING, JobState.RUNNING], limit=100_000)
        jobs: dict[str, list[int]] = {}
        for j in active:
            jobs.setdefault(j.node or "", []).append(j.id)
        return [NodeView(n, allocated.get(n.node_id, Resources()), sorted(jobs.get(n.node_id, []))) for n in infos]

    def _cluster(self, who: Principal) -> Cluster:
        if not who.is_admin:
            raise Forbidden("changing nodes needs an admin")
        return self.nodes.cluster

    def label_node(self, who: Principal, node: str, labels: dict[str, str | None]) -> None:
        for k in labels:
            if not k or len(k) > 128 or any(c.isspace() or c == "=" for c in k):
                raise InvalidInput(f"{k!r} is not a label key", "labels")
        _act(lambda c: c.update_node(node, labels=labels), self._cluster(who))

    def set_availability(self, who: Principal, node: str, availability: str) -> None:
        """drain: no new jobs (running ones finish: kran never moves them); active: schedulable again."""
        _act(lambda c: c.update_node(node, availability=availability), self._cluster(who))

    def remove_node(self, who: Principal, node: str, force: bool) -> None:
        cluster = self._cluster(who)
        found = [
            v for v in self.list_nodes() if node in (v.info.node_id, v.info.hostname) or v.info.node_id.startswith(node)
        ]
        if found and found[0].running_jobs and not force:
            ids = ", ".join(str(i) for i in found[0].running_jobs[:10])
            raise Conflict(f"jobs {ids} run on node {node}: drain it and wait, or remove it with --force")
        _act(lambda c: c.remove_node(node, force), cluster)

    def join_command(self, who: Principal) -> str:
        cluster = self._cluster(who)
        try:
            return cluster.join_command()
        except EngineError as e:
            raise Conflict(str(e)) from None


def _act(action: Callable[[Cluster], None], cluster: Cluster) -> None:
    try:
        action(cluster)
    except EngineError as e:
        raise Conflict(str(e)) from None
