"""The node directory over any ports.Cluster: the local engine's one node is a null cluster,
not a None checked in each caller."""

from __future__ import annotations

import pytest

from kran.adapters.engines.this_machine import ThisMachine
from kran.domain.auth import Principal, Role
from kran.domain.cluster import NodeInfo
from kran.domain.resources import Resources
from kran.errors import Conflict, InvalidInput
from kran.services.admission import Admission
from kran.services.nodes import NodeAdmin, NodeDirectory
from tests.services.fakes import FakeEngine, FakeStore, spec


class TwoNodes(ThisMachine):
    """A cluster of a wide node and a big-memory one."""

    def nodes(self, fresh: bool = False) -> list[NodeInfo]:
        return [
            NodeInfo("n1", "wide", "worker", "active", "ready", "", {}, "", Resources(16_000, 8192, 0, 100)),
            NodeInfo("n2", "deep", "worker", "active", "ready", "", {}, "", Resources(2_000, 65536, 1, 500)),
        ]


def test_this_machine_is_one_node_that_cannot_be_changed() -> None:
    nodes = NodeDirectory(ThisMachine(Resources(4000, 4096, 0, 1000), "here"), FakeStore())  # type: ignore[arg-type]
    assert [n.node_id for n in nodes.totals()] == ["local"] and nodes.hostnames() == {"local": "here"}
    assert nodes.capacity() == nodes.largest() == Resources(4000, 4096, 0, 1000)
    admin = NodeAdmin(nodes, FakeStore())  # type: ignore[arg-type]
    who = Principal("admin", Role.ADMIN)
    for act in (lambda: admin.set_availability(who, "local", "drain"), lambda: admin.join_command(who)):
        with pytest.raises(Conflict, match="local engine: it has no cluster nodes"):
            act()


def test_a_cluster_adds_up_its_nodes_and_admission_names_the_largest_of_each() -> None:
    nodes = NodeDirectory(TwoNodes(Resources()), FakeStore())  # type: ignore[arg-type]
    assert nodes.capacity() == Resources(18_000, 73728, 1, 600)
    assert nodes.largest() == Resources(16_000, 65536, 1, 500)
    adm = Admission(FakeEngine(), nodes, True)  # type: ignore[arg-type]
    adm.check([spec(cpus="10"), spec(mem="60000")])  # each fits one of the nodes
    with pytest.raises(InvalidInput, match=r"more than the largest node has \(16 cpus, 65536 MiB"):
        adm.check([spec(cpus="10", mem="60000")])  # but not both on one
