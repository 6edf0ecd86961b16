"""Images: the images on the nodes (size, class, which nodes hold them), pins, pulls in
progress (refreshed every 2 s: /ui/images/pulls) and what image GC would remove (admin)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kran.domain.auth import Principal
from kran.domain.images import ImageInfo, NodeImage, canonical, parse_size, size_class
from kran.domain.records import JobFind
from kran.domain.states import JobState
from kran.errors import Forbidden, InvalidInput, KranError, http_status
from kran.services.images import Pull
from kran.services.suite import Services
from kran.web.render import page
from kran.web.session import Act, Look, Viewer, services

router = APIRouter()
MAX_PULLS = 500


def _admin(who: Principal) -> None:
    """The API's rule for pins and GC."""
    if not who.is_admin:
        raise Forbidden("this needs an admin")


def image_rows(
    inventories: Mapping[str, Sequence[NodeImage] | None],
    answers: Mapping[str, ImageInfo],
    classes: Sequence[tuple[str, int]],
    pins: Iterable[str],
    names: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Each image on any node once (by image id): its tags, size on disk, the registry's
    size and class where kran looked it up, the nodes that hold it, the pins that keep it."""
    found: dict[str, dict[str, Any]] = {}
    for node, images in inventories.items():
        for img in images or ():
            row = found.setdefault(img.image_id, {"id": img.image_id, "refs": set(), "size": img.size, "nodes": []})
            row["refs"].update(img.refs)
            row["nodes"].append(names.get(node, node))
    pin_list = list(pins)
    out = []
    for row in found.values():
        refs = sorted(row.pop("refs"))
        tags = [r for r in refs if "@" not in r]
        held = {canonical(r) for r in refs}
        info = next((answers[canonical(r)] for r in tags if canonical(r) in answers), None)
        out.append(
            {
                **row,
                "tags": tags,
                "digests": [r for r in refs if "@" in r],
                "nodes": sorted(row["nodes"]),
                "registry_size": info.size if info else None,
                "looked_up": info is not None,
                "class": size_class(info.size, classes) if info else None,
                "pins": sorted(p for p in pin_list if canonical(p) in held),
                "pin_ref": tags[0] if tags else (refs[0] if refs else None),
            }
        )
    return sorted(out, key=lambda r: (not r["tags"], r["tags"][:1] or [r["id"]]))


def pull_rows(
    jobs: Sequence[tuple[int, str, Mapping[str, Any]]], warms: Iterable[Pull], names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Pulls in progress: the jobs' (id, owner, their `pull`), then warms no listed job waits on."""
    out = []
    for job_id, owner, p in jobs:
        node = str(p.get("node", ""))
        done, total = int(p.get("done") or 0), int(p.get("total") or 0)
        out.append({"job": job_id, "owner": owner, "image": p.get("image", ""), "node": names.get(node, node),
                    "done": done, "total": total})  # fmt: skip
    seen = {(str(p.get("node")), str(p.get("image"))) for _, _, p in jobs}
    for w in warms:
        if (w.node, w.ref) not in seen:
            out.append({"job": None, "owner": None, "image": w.ref, "node": names.get(w.node, w.node),
                        "done": w.done, "total": w.total})  # fmt: skip
    return out


def _pulls(suite: Services, who: Principal) -> list[dict[str, Any]]:
    find = JobFind(states=(JobState.STARTING,), sort="id", descending=False, limit=MAX_PULLS)
    starting, _ = suite.queries.page(who, find)
    jobs = [(j.id, j.owner, j.pull) for j in starting if j.pull]
    # warms are an admin's; a user sees the pulls of their own jobs only
    warms = suite.images.pulls_in_progress() if who.is_admin else []
    return pull_rows(jobs, warms, suite.nodes.hostnames())


def _gc_preview(suite: Services, node: str, target: str) -> dict[str, Any]:
    """What `kran image gc --dry-run [--node N] [--target T]` would remove."""
    try:
        size = parse_size(target) if target.strip() else None
    except ValueError as e:
        raise InvalidInput(f"target: {e}", "target") from None
    removed, nodes = suite.images.gc(node or None, True, size)
    names = suite.nodes.hostnames()
    for entry in (*removed, *nodes):
        entry["hostname"] = names.get(entry["node"], entry["node"])
    return {"removed": removed, "nodes": nodes, "freed": sum(r["freed"] for r in removed)}


def _view(suite: Services, who: Principal) -> dict[str, Any]:
    images = suite.images
    inventories = images.inventories()
    pins = images.pins()
    names = suite.nodes.hostnames()
    return {
        "images": image_rows(inventories, images.registry_answers(), images.cfg.size_classes, pins, names),
        "pins": pins,
        "nodes": [
            {"id": n, "hostname": names.get(n, n), "answered": inv is not None} for n, inv in inventories.items()
        ],
        "classes": images.cfg.size_classes,
        "gc_high": images.cfg.gc_high,
        "gc_low": images.cfg.gc_low,
        "pulls": _pulls(suite, who),
    }


async def _page(
    request: Request, viewer: Viewer, status: int = 200, *, error: str | None = None, gc: dict[str, Any] | None = None
) -> Response:
    ctx = await run_in_threadpool(_view, services(request), viewer.who)
    return page(request, "images.html", viewer, status, error=error, gc=gc, **ctx)


@router.get("/images")
async def images_page(
    request: Request,
    viewer: Look,
    gc: bool = False,
    node: str = Query("", max_length=200),
    target: str = Query("", max_length=40),
) -> Response:
    preview = None
    if gc:
        _admin(viewer.who)
        try:
            found = await run_in_threadpool(_gc_preview, services(request), node, target)
            preview = {**found, "node": node, "target": target}
        except KranError as e:
            preview = {"error": str(e), "node": node, "target": target}
            return await _page(request, viewer, http_status(e), gc=preview)
    return await _page(request, viewer, gc=preview)


@router.get("/images/pulls")
async def pulls_section(request: Request, viewer: Look) -> Response:
    """The pulls in progress alone, for the page's refresh every 2 s."""
    pulls = await run_in_threadpool(_pulls, services(request), viewer.who)
    return page(request, "_images_pulls.html", viewer, pulls=pulls)


async def _ref(request: Request) -> str:
    form = await request.form()
    ref = form.get("ref")
    return ref.strip() if isinstance(ref, str) else ""


@router.post("/images/pin")
async def pin(request: Request, viewer: Act) -> Response:
    _admin(viewer.who)
    ref = await _ref(request)
    try:
        if not ref:
            raise InvalidInput("ref: name the image to pin (e.g. registry.example/app:1.2)", "ref")
        await run_in_threadpool(services(request).images.pin, viewer.who, ref)
    except KranError as e:
        return await _page(request, viewer, http_status(e), error=str(e))
    return RedirectResponse("/ui/images#pins", status_code=303)


@router.post("/images/unpin")
async def unpin(request: Request, viewer: Act) -> Response:
    _admin(viewer.who)
    ref = await _ref(request)
    if not ref or len(ref) > 500:
        return await _page(request, viewer, 422, error="ref: name a pinned image to unpin")
    await run_in_threadpool(services(request).images.unpin, ref)
    return RedirectResponse("/ui/images#pins", status_code=303)
