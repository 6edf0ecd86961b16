"""The node list of an engine without a cluster: this machine, one node, nothing to change."""

from __future__ import annotations

import socket

from kran.domain.cluster import NodeInfo
from kran.domain.resources import Resources
from kran.errors import EngineError

LOCAL_NODE = "local"
NO_NODES = "this server runs the local engine: it has no cluster nodes to change"


class ThisMachine:
    """ports.Cluster for the local engine: its one node is this machine, with the capacity
    detected (or configured) at start; node operations are refused."""

    def __init__(self, capacity: Resources, hostname: str | None = None) -> None:
        self.node = NodeInfo(
            LOCAL_NODE, hostname or socket.gethostname(), "local", "active", "ready", "", {}, "", capacity
        )

    def nodes(self, fresh: bool = False) -> list[NodeInfo]:
        return [self.node]

    def update_node(
        self, ref: str, availability: str | None = None, labels: dict[str, str | None] | None = None
    ) -> None:
        raise EngineError(NO_NODES)

    def remove_node(self, ref: str, force: bool) -> None:
        raise EngineError(NO_NODES)

    def join_command(self) -> str:
        raise EngineError(NO_NODES)
