"""/api/v1/nodes: the inventory; label, drain, activate, remove, join command (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import ConfigDict, Field

from kran.api.deps import caller, runtime
from kran.api.responses import Out, Resources
from kran.api.schemas import Body
from kran.domain.auth import Principal
from kran.services import nodes
from kran.services.runtime import Runtime

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])
Rt = Annotated[Runtime, Depends(runtime)]
Caller = Annotated[Principal, Depends(caller)]


class NodeLabels(Body):
    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str | None] = Field(..., description="K: V to set, K: null to remove")


class Node(Out):
    id: str
    hostname: str
    role: str = Field(description="manager | worker | local")
    node_class: str = Field(alias="class", description="its kran.class label ('' when none)")
    labels: dict[str, str]
    state: str = Field(description="ready | down | disconnected | unknown")
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


def node_json(v: nodes.NodeView) -> dict[str, Any]:
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
def list_nodes(rt: Rt, who: Caller) -> dict[str, Any]:
    return {"nodes": [node_json(v) for v in nodes.list_nodes(rt)]}


@router.get(
    "/join-command", response_model=JoinCommand, summary="The `docker swarm join` line for a new machine (admin)"
)
def join_command(rt: Rt, who: Caller) -> dict[str, Any]:
    return {"command": nodes.join_command(rt, who)}


@router.post(
    "/{node}/labels", response_model=NodeLabelsSet, summary="Set or remove node labels, e.g. kran.class (admin)"
)
def label_node(node: str, body: NodeLabels, rt: Rt, who: Caller) -> dict[str, Any]:
    nodes.label_node(rt, who, node, body.labels)
    return {"node": node, "labels": body.labels}


@router.post(
    "/{node}/drain", response_model=NodeAvailability, summary="No new jobs on the node; running ones finish (admin)"
)
def drain_node(node: str, rt: Rt, who: Caller) -> dict[str, Any]:
    nodes.set_availability(rt, who, node, "drain")
    return {"node": node, "availability": "drain"}


@router.post("/{node}/activate", response_model=NodeAvailability, summary="Schedule jobs on the node again (admin)")
def activate_node(node: str, rt: Rt, who: Caller) -> dict[str, Any]:
    nodes.set_availability(rt, who, node, "active")
    return {"node": node, "availability": "active"}


@router.delete(
    "/{node}", response_model=NodeRemoved, summary="Remove a node from the swarm (admin; refused while jobs run)"
)
def remove_node(node: str, rt: Rt, who: Caller, force: bool = Query(False)) -> dict[str, Any]:
    nodes.remove_node(rt, who, node, force)
    return {"node": node, "removed": True}
