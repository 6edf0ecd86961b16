"""A swarm node, as the manager describes it, in kran's terms (NodeInfo)."""

from __future__ import annotations

from typing import Any

from kran.adapters.engines.containers import docker_time
from kran.domain.cluster import CLASS_LABEL, NodeInfo
from kran.domain.resources import Resources as Amounts

# kran's drain is Slurm's: no new jobs, running ones finish. Swarm's "drain" stops the
# node's tasks and starts them again elsewhere (a job would run twice); its "pause" is ours.
TO_SWARM = {"drain": "pause"}
FROM_SWARM = {"pause": "drain"}


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
