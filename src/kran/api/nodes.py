"""/api/v1/nodes: the inventory; label, drain, activate, remove, join command (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import ConfigDict, Field

from kran.api.deps import Caller, NodeAdminDep
from kran.api.responses import Out, Resources
from kran.api.schemas import Body
from kran.services.nodes import NodeView

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])


class NodeLabels(Body):
    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str | None] = Field(..., description="K: V to set, K: null to remove")


class Node(Out):
    id: str
    hostname: str
    role: str = Field(description="manager | worker | local")
    node_class: str = Field(alias="class", description="its kran.class label ('' when none)")
    labels: dict[str, str]
    state: str = Field(
        description="ready | settling (its engine just came back: no new job for 10 s) | down | disconnected | unknown"
    )
    availability: str = Field(description="active | pause | drain")
    schedulable: bool
    total: Resources
    used: Resources
    running_jobs: list[int]


class NodeList(Out):
    nodes: list[Node]


class JoinCommand(Out):
    command: str


class NodeLabelsSet(Out):
    node: str
    labels: dict[str, str | None]


class NodeAvailability(Out):
    node: str
    availability: str


class NodeRemoved(Out):
    node: str
    removed: bool


def node_json(v: NodeView) -> dict[str, Any]:
    n = v.info
    return {
        "id": n.node_id,
        "hostname": n.hostname,
        "role": n.role,
        "class": n.node_class,
        "labels": n.labels,
        "state": n.state,
        "availability": n.availability,
        "schedulable": n.schedulable,
        "total": n.total.as_dict(),
        "used": v.used.as_dict(),
        "running_jobs": v.running_jobs,
    }


@router.get("", response_model=NodeList, summary="Nodes: class, labels, state, capacity used/total, running jobs")
def list_nodes(node_admin: NodeAdminDep, who: Caller) -> dict[str, Any]:
    return {"nodes": [node_json(v) for v in node_admin.list_nodes()]}


@router.get(
    "/join-command", response_model=JoinCommand, summary="The `docker swarm join` line for a new machine (admin)"
)
def join_command(node_admin: NodeAdminDep, who: Caller) -> dict[str, Any]:
    return {"command": node_admin.join_command(who)}


@router.post(
    "/{node}/labels", response_model=NodeLabelsSet, summary="Set or remove node labels, e.g. kran.class (admin)"
)
def label_node(node: str, body: NodeLabels, node_admin: NodeAdminDep, who: Caller) -> dict[str, Any]:
    node_admin.label_node(who, node, body.labels)
    return {"node": node, "labels": body.labels}


@router.post(
    "/{node}/drain", response_model=NodeAvailability, summary="No new jobs on the node; running ones finish (admin)"
)
def drain_node(node: str, node_admin: NodeAdminDep, who: Caller) -> dict[str, Any]:
    node_admin.set_availability(who, node, "drain")
    return {"node": node, "availability": "drain"}


@router.post("/{node}/activate", response_model=NodeAvailability, summary="Schedule jobs on the node again (admin)")
def activate_node(node: str, node_admin: NodeAdminDep, who: Caller) -> dict[str, Any]:
    node_admin.set_availability(who, node, "active")
    return {"node": node, "availability": "active"}


@router.delete(
    "/{node}", response_model=NodeRemoved, summary="Remove a node from the swarm (admin; refused while jobs run)"
)
def remove_node(node: str, node_admin: NodeAdminDep, who: Caller, force: bool = Query(False)) -> dict[str, Any]:
    node_admin.remove_node(who, node, force)
    return {"node": node, "removed": True}
