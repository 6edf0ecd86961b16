"""/api/v1/images and /api/v1/registries: inspect, warm, status, pin, GC; registry logins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kran.api.deps import Caller, Images
from kran.api.responses import Out
from kran.api.schemas import Body
from kran.domain.auth import Principal
from kran.domain.images import parse_size
from kran.errors import Forbidden, InvalidInput

router = APIRouter(tags=["images"])


class Warm(Body):
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(..., max_length=500)
    nodes: list[str] | None = Field(None, description="node ids or hostnames; default: every node (of the class)")
    node_class: str | None = Field(None, description="every node of this class")


class Ref(Body):
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(..., max_length=500)


class Gc(Body):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = False
    target: str | None = Field(None, description="remove down to this size (overrides the low-water mark), e.g. 0")
    node: str | None = None


class Login(Body):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(..., min_length=1, max_length=255)
    password: str = Field(..., min_length=1, max_length=4096)


class ImageLayer(Out):
    digest: str
    size: int


class ImageInfo(Out):
    ref: str
    digest: str = Field(description="of the platform's manifest")
    index_digest: str | None = Field(description="of the index, when the reference named one")
    media_type: str
    size: int = Field(description="compressed bytes: config plus layers")
    layers: list[ImageLayer]
    size_class: str | None = Field(alias="class", description="its size class (null: a normal image)")
    nodes: list[str] = Field(description="the nodes that hold it")
    pinned: bool


class ImageWarm(Out):
    ref: str
    nodes: list[str] = Field(description="the nodes it is pulled on")


class NodePull(Out):
    node: str
    hostname: str
    state: str = Field(description="pulling | done | failed | present | absent")
    present: bool
    done: int = Field(description="bytes pulled")
    total: int
    error: str | None


class ImageStatus(Out):
    ref: str
    nodes: list[NodePull]


class PinList(Out):
    pins: list[str]


class Pinned(Out):
    ref: str
    pinned: bool


class Unpinned(Pinned):
    was_pinned: bool


class GcRemoval(Out):
    node: str
    image: str
    refs: list[str]
    size: int = Field(..., description="the image's size as Docker reports it, shared layers included")
    freed: int = Field(..., description="bytes its removal frees: its layers no image left uses")
    reason: str
    error: str | None = Field(None, description="why it could not be removed (only then)")


class GcNode(Out):
    node: str
    before: int = Field(..., description="bytes of the node's image layers, each layer once")
    target: int = Field(..., description="the low-water mark, or the target asked for")
    after: int = Field(..., description="bytes left: measured after a real GC, estimated by a dry run")
    short: str | None = Field(..., description="why it stays above the target (what is kept); null when it does not")


class GcResult(Out):
    dry_run: bool
    removed: list[GcRemoval]
    nodes: list[GcNode] = Field(..., description="each node where GC chose images or fell short of the target")


class Registry(Out):
    host: str
    username: str
    created_at: float


class RegistryList(Out):
    registries: list[Registry]


class RegistryLogin(Out):
    host: str
    username: str


class RegistryLogout(Out):
    host: str
    removed: bool


def _admin(who: Principal) -> None:
    if not who.is_admin:
        raise Forbidden("this needs an admin")


@router.get(
    "/api/v1/images/inspect", response_model=ImageInfo, summary="Digest, size, layers, class, which nodes hold it"
)
async def inspect(images: Images, who: Caller, ref: str = Query(..., max_length=500)) -> dict[str, Any]:
    answers = await images.settle([ref], who.user)  # (awaited holding no thread)
    return await run_in_threadpool(images.inspect, ref, who.user, answers)


@router.post(
    "/api/v1/images/warm",
    status_code=202,
    response_model=ImageWarm,
    summary="Pull an image on nodes in parallel (admin)",
)
def warm(body: Warm, images: Images, who: Caller) -> dict[str, Any]:
    _admin(who)
    return {"ref": body.ref, "nodes": images.warm_nodes(body.ref, body.nodes, body.node_class)}


@router.get(
    "/api/v1/images/status", response_model=ImageStatus, summary="Per node: present, pulling (bytes done/total), failed"
)
def status(images: Images, who: Caller, ref: str = Query(..., max_length=500)) -> dict[str, Any]:
    return {"ref": ref, "nodes": images.warm_status(ref)}


@router.get("/api/v1/images/pins", response_model=PinList, summary="Pinned images (never garbage-collected)")
def pins(images: Images, who: Caller) -> dict[str, Any]:
    return {"pins": images.pins()}


@router.post("/api/v1/images/pins", status_code=201, response_model=Pinned, summary="Pin an image (admin)")
def pin(body: Ref, images: Images, who: Caller) -> dict[str, Any]:
    _admin(who)
    images.pin(who, body.ref)
    return {"ref": body.ref, "pinned": True}


@router.delete("/api/v1/images/pins", response_model=Unpinned, summary="Unpin an image (admin)")
def unpin(images: Images, who: Caller, ref: str = Query(..., max_length=500)) -> dict[str, Any]:
    _admin(who)
    return {"ref": ref, "pinned": False, "was_pinned": images.unpin(ref)}


@router.post(
    "/api/v1/images/gc",
    response_model=GcResult,
    response_model_exclude_unset=True,  # `error` only where a removal failed, as before
    summary="Image disk GC now (admin); dry_run lists what would go",
)
def gc(body: Gc, images: Images, who: Caller) -> dict[str, Any]:
    _admin(who)
    try:
        target = parse_size(body.target) if body.target is not None else None
    except ValueError as e:
        raise InvalidInput(f"target: {e}", "target") from None
    removed, nodes = images.gc(body.node, body.dry_run, target)
    return {"dry_run": body.dry_run, "removed": removed, "nodes": nodes}


@router.get(
    "/api/v1/registries",
    response_model=RegistryList,
    summary="Registries kran has credentials for (never the passwords)",
)
def list_registries(images: Images, who: Caller) -> dict[str, Any]:
    _admin(who)
    return {"registries": images.list_logins()}


@router.post(
    "/api/v1/registries/{host}/login",
    response_model=RegistryLogin,
    summary="Store credentials for a registry (admin); checked first",
)
def login(host: str, body: Login, images: Images, who: Caller) -> dict[str, Any]:
    _admin(who)
    images.login(host, body.username, body.password)
    return {"host": host, "username": body.username}


@router.delete(
    "/api/v1/registries/{host}", response_model=RegistryLogout, summary="Forget a registry's credentials (admin)"
)
def logout(host: str, images: Images, who: Caller) -> dict[str, Any]:
    _admin(who)
    return {"host": host, "removed": images.logout(host)}
