"""Cluster nodes as kran sees them: inventory, classes, what can be scheduled."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kran.domain.resources import Resources

CLASS_LABEL = "kran.class"  # node label naming its class: heavyweight, normal, gpu, ...
CLASS_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,62}")


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    hostname: str
    role: str  # manager | worker
    availability: str  # active | pause | drain
    state: str  # ready | settling (back from a restart, takes no new job yet) | down | disconnected | unknown
    addr: str
    labels: dict[str, str] = field(default_factory=dict)
    node_class: str = ""
    total: Resources = field(default_factory=Resources)
    updated_at: float | None = None  # the manager last wrote the node (a swarm node's agent registering writes it)

    @property
    def schedulable(self) -> bool:
        return self.availability == "active" and self.state == "ready"


def check_class(name: str) -> str:
    if not CLASS_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a node class (a-z 0-9 _ . -)")
    return name
