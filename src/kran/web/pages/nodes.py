"""Nodes: class, labels, state, capacity used of total, images present; drain and activate
(admin). The table refreshes itself every 5 s (htmx, /ui/nodes/table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kran.api.nodes import node_json
from kran.services.suite import Services
from kran.web.render import mib, page
from kran.web.session import Act, Look, Viewer, services

router = APIRouter()
# node ids (Swarm's) and hostnames: nothing else reaches the cluster
NodeRef = Annotated[str, Path(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]


@dataclass(frozen=True)
class Bar:
    name: str
    used: float
    total: float
    text: str


def _count(n: float) -> str:
    return f"{n:g}"


def bars(used: Mapping[str, float], total: Mapping[str, float]) -> list[Bar]:
    """Used of total per resource, as the figures shown beside each meter; GPUs only where
    the node has some."""
    out = []
    for key, name, fmt in (("cpus", "CPUs", _count), ("mem_mb", "Memory", mib), ("gpus", "GPUs", _count)):
        if key == "gpus" and not total.get(key):
            continue
        u, t = float(used.get(key, 0)), float(total.get(key, 0))
        out.append(Bar(name, u, t, f"{fmt(u)} of {fmt(t)}"))
    u, t = float(used.get("disk_mb", 0)), float(total.get("disk_mb", 0))
    out.append(Bar("Disk", u, t, f"{mib(u)} of {mib(t)}"))
    return out


def state_text(state: str, availability: str) -> str:
    """`ready`, or with what keeps jobs off it: `ready · drain`, `down`."""
    return state if availability == "active" else f"{state} · {availability}"


def node_row(node: dict[str, Any], held: frozenset[str] | None) -> dict[str, Any]:
    """One node as the table shows it (`node` as the API's node_json gives it; `held`:
    the references its Docker holds, None when kran has no inventory of it)."""
    tags = None if held is None else sorted(r for r in held if "@" not in r)
    return {
        **node,
        "state_text": state_text(node["state"], node["availability"]),
        "bars": bars(node["used"], node["total"]),
        "images": tags,
        # the local engine's one node is this machine: nothing to drain
        "changeable": node["role"] != "local",
        "drained": node["availability"] != "active",
    }


def _rows(suite: Services) -> tuple[list[dict[str, Any]], dict[str, object]]:
    """The nodes, and the server's health (each engine up, or down since when and why)."""
    views = suite.node_admin.list_nodes()
    held = suite.images.images_by_node()  # the cached inventory: no image listing here
    return [node_row(node_json(v), held.get(v.info.node_id)) for v in views], suite.queries.health()


@router.get("/nodes")
async def nodes_page(request: Request, viewer: Look) -> Response:
    return page_of(request, viewer, "nodes.html", *await run_in_threadpool(_rows, services(request)))


@router.get("/nodes/table")
async def nodes_table(request: Request, viewer: Look) -> Response:
    """The table alone, for the page's refresh every 5 s."""
    return page_of(request, viewer, "_nodes_table.html", *await run_in_threadpool(_rows, services(request)))


def page_of(
    request: Request, viewer: Viewer, name: str, rows: list[dict[str, Any]], status: dict[str, object]
) -> Response:
    return page(request, name, viewer, nodes=rows, local=any(not r["changeable"] for r in rows), server=status)


async def _set(request: Request, viewer: Viewer, node: str, availability: str) -> Response:
    await run_in_threadpool(services(request).node_admin.set_availability, viewer.who, node, availability)
    return RedirectResponse("/ui/nodes", status_code=303)


@router.post("/nodes/{node}/drain")
async def drain(request: Request, node: NodeRef, viewer: Act) -> Response:
    return await _set(request, viewer, node, "drain")


@router.post("/nodes/{node}/activate")
async def activate(request: Request, node: NodeRef, viewer: Act) -> Response:
    return await _set(request, viewer, node, "active")
