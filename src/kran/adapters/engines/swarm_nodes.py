"""A swarm node, as the manager describes it, in kran's terms (NodeInfo)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from kran.adapters.engines.containers import docker_time
from kran.domain.cluster import CLASS_LABEL, NodeInfo
from kran.domain.resources import Resources as Amounts

# kran's drain is Slurm's: no new jobs, running ones finish. Swarm's "drain" stops the
# node's tasks and starts them again elsewhere (a job would run twice); its "pause" is ours.
TO_SWARM = {"drain": "pause"}
FROM_SWARM = {"pause": "drain"}
# a node whose engine came back (a restart its tasks' ends told, or down, then ready) takes
# no new job this long: a task given to it in its first second failed, or never started
SETTLE_S = 10.0
SETTLE_AGAIN_S = 60.0  # how often a restart read from timing alone (AttemptEnd.inferred) settles a node


def node_info(attrs: dict[str, Any], disk_mb: int) -> NodeInfo:
    desc, spec, status = attrs.get("Description", {}), attrs.get("Spec", {}), attrs.get("Status", {})
    res = desc.get("Resources", {})
    gpus = 0
    for g in res.get("GenericResources") or []:
        d = g.get("DiscreteResourceSpec") or {}
        if d.get("Kind") == "gpu":
            gpus += int(d.get("Value", 0))
        if (g.get("NamedResourceSpec") or {}).get("Kind") == "gpu":
            gpus += 1
    labels = dict(spec.get("Labels") or {})
    return NodeInfo(
        node_id=attrs["ID"],
        hostname=desc.get("Hostname", ""),
        role=spec.get("Role", "worker"),
        availability=FROM_SWARM.get(spec.get("Availability", "active"), spec.get("Availability", "active")),
        state=status.get("State", "unknown"),
        addr=status.get("Addr", ""),
        labels=labels,
        node_class=labels.get(CLASS_LABEL, ""),
        total=Amounts(int(res.get("NanoCPUs", 0)) // 1_000_000, int(res.get("MemoryBytes", 0)) >> 20, gpus, disk_mb),
        updated_at=docker_time(attrs.get("UpdatedAt")),
    )


class Returns:
    """Nodes whose engine came back lately: `settling` (no new job) for SETTLE_S."""

    def __init__(self) -> None:
        self._back: dict[str, float] = {}  # node id -> when its engine was seen coming back (monotonic)
        self._was: dict[str, str] = {}  # node id -> its state in the last listing

    def listed(self, node: NodeInfo) -> None:
        """A node as a listing showed it: ready after it was not is back."""
        if node.state == "ready" and self._was.get(node.node_id, "ready") != "ready":
            self._back[node.node_id] = time.monotonic()
        self._was[node.node_id] = node.state

    def came_back(self, node_id: str, inferred: bool) -> None:
        """An attempt on the node ended with its engine's restart. One read from timing alone
        settles the node at most once a minute (a job's own signal exit just after another
        task's attachment reads so too: a user's jobs made so must not keep a node from
        everyone)."""
        now = time.monotonic()
        if not inferred or now - self._back.get(node_id, -SETTLE_AGAIN_S) >= SETTLE_AGAIN_S:
            self._back[node_id] = now

    def view(self, node: NodeInfo) -> NodeInfo:
        back = self._back.get(node.node_id)
        if back is None or node.state != "ready" or time.monotonic() - back >= SETTLE_S:
            return node
        return replace(node, state="settling")
