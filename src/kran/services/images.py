"""The image manager: sizes and classes from the registry, per-node inventory, pulls with
progress (`pulling`), warm, pins, disk GC."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kran.domain.auth import Principal
from kran.domain.disk import mark_bytes
from kran.domain.images import ImageInfo, NodeImage, canonical, gc_choice, parse_ref, size_class
from kran.domain.jobs import JobSpec
from kran.domain.records import StartedAttempt
from kran.domain.states import JobState
from kran.errors import EngineError, InvalidInput, NotFound, RegistryError
from kran.services.runtime import Runtime

log = logging.getLogger("kran.images")
INFO_TTL_S = 60.0
INVENTORY_TTL_S = 30.0
PROGRESS_EVERY_S = 1.0


@dataclass
class Pull:
    """A pull in progress (or ended) on one node: jobs and warms share it."""

    node: str
    ref: str
    state: str = "pulling"  # pulling | done | failed
    done: int = 0
    total: int = 0
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class ImageState:
    info: dict[str, tuple[float, ImageInfo]] = field(default_factory=dict)
    inventory: dict[str, tuple[float, list[NodeImage]]] = field(default_factory=dict)
    refs: dict[str, frozenset[str]] = field(default_factory=dict)  # node -> its images' tags and digests
    last_used: dict[tuple[str, str], float] = field(default_factory=dict)
    pulls: dict[tuple[str, str], Pull] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def state(rt: Runtime) -> ImageState:
    st: ImageState = rt.image_state
    return st


# ---- registry: size, digest, class


def lookup(rt: Runtime, ref_text: str) -> ImageInfo | None:
    """The registry's answer for the reference (cached a minute), or None when kran does
    not look this registry up (Docker Hub unless image.lookup_docker_hub)."""
    try:
        ref = parse_ref(ref_text)
    except ValueError as e:
        raise InvalidInput(f"image: {e}", "image") from None
    if not ref.explicit_registry and not rt.settings.lookup_docker_hub:
        return None
    st = state(rt)
    cached = st.info.get(ref_text)
    if cached and time.monotonic() - cached[0] < INFO_TTL_S:
        return cached[1]
    info = rt.registry.resolve(ref)
    st.info[ref_text] = (time.monotonic(), info)
    return info


def classify(rt: Runtime, spec: JobSpec) -> JobSpec:
    """At submit: the image's digest, size and class; the class becomes the job's node
    class unless the job named one. A registry that refuses (auth, unknown image) refuses
    the job; one that cannot be reached leaves the size unknown."""
    if not spec.image:
        return spec
    try:
        info = lookup(rt, spec.image)
    except RegistryError as e:
        if e.answered:
            raise InvalidInput(f"image: {e}", "image") from None
        log.warning("image size unknown: %s", e)
        return spec
    if info is None:
        return spec
    cls = size_class(info.size, rt.settings.size_classes)
    return replace(
        spec,
        image_digest=info.digest,
        image_size=info.size,
        image_class=cls,
        node_class=spec.node_class or cls,
    )


def inspect(rt: Runtime, ref_text: str) -> dict[str, Any]:
    try:
        info = lookup(rt, ref_text)
    except RegistryError as e:
        raise InvalidInput(str(e), "ref") from None
    if info is None:
        raise InvalidInput(
            f"{ref_text}: kran looks up only references naming a registry host (Docker Hub: image.lookup_docker_hub)",
            "ref",
        )
    holders = [node for node, refs in images_by_node(rt, fresh=True).items() if _holds(refs, ref_text, info.digest)]
    return {
        "ref": ref_text,
        "digest": info.digest,
        "index_digest": info.index_digest,
        "media_type": info.media_type,
        "size": info.size,
        "layers": [{"digest": d, "size": s} for d, s in info.layers],
        "class": size_class(info.size, rt.settings.size_classes),
        "nodes": holders,
        "pinned": ref_text in (rt.image_store.pins() if rt.image_store else set()),
    }


def _holds(refs: frozenset[str], ref: str, digest: str | None) -> bool:
    """The node has `ref` by its tag, or the same repository at the digest."""
    ref = canonical(ref)
    if ref in refs:
        return True
    repo = ref.split("@")[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return digest is not None and f"{repo}@{digest}" in refs


# ---- inventory


def inventory(rt: Runtime, node: str, fresh: bool = False) -> list[NodeImage]:
    if node not in rt.node_images.nodes():
        return []
    st = state(rt)
    cached = st.inventory.get(node)
    if fresh or cached is None or time.monotonic() - cached[0] > INVENTORY_TTL_S:
        try:
            images = rt.node_images.images(node)
        except EngineError as e:
            log.warning("%s", e)
            return cached[1] if cached else []
        st.inventory[node] = (time.monotonic(), images)
        st.refs[node] = frozenset(r for i in images for r in i.refs)  # read by every scheduler pass
        return images
    return cached[1]


def images_by_node(rt: Runtime, fresh: bool = False) -> dict[str, frozenset[str]]:
    """Node -> the references it holds (from the cached inventory unless `fresh`)."""
    out = {}
    for node in rt.node_images.nodes():
        if fresh or node in state(rt).inventory:
            out[node] = _node_refs(rt, node, fresh)
    return out


def refresh_inventory(rt: Runtime) -> None:
    """In the pool, periodically: every node's images."""
    for node in rt.node_images.nodes():
        inventory(rt, node, fresh=True)


# ---- pulls: for a starting attempt, or to warm nodes


def ensure_on_node(rt: Runtime, s: StartedAttempt) -> None:
    """Before the launch: the attempt's image on its node, pulled here (with progress in
    the job: `pulling`) unless it is there, or waited for if a warm is pulling it."""
    image = s.spec.image
    if not image or s.node not in rt.node_images.nodes():
        return
    st = state(rt)
    st.last_used[(s.node, image)] = time.time()
    if _holds(_node_refs(rt, s.node), image, s.spec.image_digest):
        return
    pull, mine = _start_pull(rt, s.node, image)
    total = s.spec.image_size or 0
    rt.image_store.set_pull(
        s.job_id,
        s.attempt,
        {"image": image, "node": s.node, "done": 0, "total": total},
        f"pulling {image} on {s.node}" + (f" ({total} bytes)" if total else ""),
        rt.clock.now(),
    )
    last = [0.0]

    def progress(done: int, known: int) -> None:
        pull.done, pull.total = done, max(known, total)
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            progress_row = {"image": image, "node": s.node, "done": done, "total": max(known, total)}
            rt.image_store.set_pull(s.job_id, s.attempt, progress_row, None, rt.clock.now())

    try:
        if mine:
            _run_pull(rt, pull, progress)
        elif not pull.finished.wait(rt.settings.pull_timeout_s):
            raise EngineError(f"pull of {image} on node {s.node} timed out after {rt.settings.pull_timeout_s:g}s")
        if pull.state == "failed":
            raise EngineError(pull.error or f"pull of {image} on node {s.node} failed")
    finally:
        done_text = f"pulled {image} on {s.node}" if pull.state == "done" else None
        rt.image_store.set_pull(s.job_id, s.attempt, None, done_text, rt.clock.now())


def _node_refs(rt: Runtime, node: str, fresh: bool = False) -> frozenset[str]:
    inventory(rt, node, fresh)
    return state(rt).refs.get(node, frozenset())


def _start_pull(rt: Runtime, node: str, ref: str) -> tuple[Pull, bool]:
    """The pull of `ref` on `node` in progress, or a new one (True: the caller runs it)."""
    st = state(rt)
    with st.lock:
        current = st.pulls.get((node, ref))
        if current is not None and current.state == "pulling":
            return current, False
        pull = st.pulls[(node, ref)] = Pull(node, ref)
    return pull, True


def _run_pull(rt: Runtime, pull: Pull, progress: Callable[[int, int], None] | None = None) -> None:
    creds = rt.image_store.credentials()
    registry = parse_ref(pull.ref).registry

    def report(done: int, known: int) -> None:
        pull.done, pull.total = done, max(known, pull.total)
        if progress is not None:
            progress(done, known)

    try:
        rt.node_images.pull(pull.node, pull.ref, creds.get(registry), report, rt.settings.pull_timeout_s)
        pull.state = "done"
        pull.done = pull.total
        log.info("pulled %s on node %s", pull.ref, pull.node)
    except EngineError as e:
        pull.state, pull.error = "failed", str(e)
        log.warning("%s", e)
    finally:
        inventory(rt, pull.node, fresh=True)
        pull.finished.set()


def warm_nodes(rt: Runtime, ref: str, nodes: list[str] | None, node_class: str | None) -> list[str]:
    """Pull `ref` on these nodes (or all of a class, or all) in parallel; returns the nodes."""
    try:
        parse_ref(ref)
    except ValueError as e:
        raise InvalidInput(f"ref: {e}", "ref") from None
    managed = rt.node_images.nodes()
    known = {n.node_id: n for n in rt.node_totals()}
    names = rt.hostnames()
    if nodes:
        by_name = {names.get(n, n): n for n in managed} | {n: n for n in managed}
        missing = [n for n in nodes if n not in by_name]
        if missing:
            raise NotFound(f"no managed node {', '.join(missing)} (nodes: {', '.join(sorted(by_name))})")
        targets = [by_name[n] for n in nodes]
    else:
        targets = [n for n in managed if node_class is None or (n in known and known[n].node_class == node_class)]
        if not targets:
            raise InvalidInput(f"no node of class {node_class}", "class")
    for node in targets:
        pull, mine = _start_pull(rt, node, ref)
        if mine:
            rt.pool.submit(_run_pull, rt, pull)
    return targets


def warm_status(rt: Runtime, ref: str) -> list[dict[str, Any]]:
    st = state(rt)
    names = rt.hostnames()
    out = []
    for node in rt.node_images.nodes() if rt.node_images else []:
        pull = st.pulls.get((node, ref))
        present = canonical(ref) in _node_refs(rt, node)
        out.append(
            {
                "node": node,
                "hostname": names.get(node, node),
                "state": pull.state if pull else ("present" if present else "absent"),
                "present": present,
                "done": pull.done if pull else 0,
                "total": pull.total if pull else 0,
                "error": pull.error if pull else None,
            }
        )
    return out


# ---- disk GC


def gc(rt: Runtime, node: str | None = None, dry_run: bool = False, target: int | None = None) -> list[dict[str, Any]]:
    """Per node: above the high-water mark (or always, with `target`), remove least
    recently used images that are not pinned, not used by a starting or running job and
    not being pulled, until under the low-water mark (or `target`)."""
    nodes = rt.node_images.nodes()
    if node is not None:
        names = rt.hostnames()
        node = next((n for n in nodes if node in (n, names.get(n))), None)
        if node is None:
            raise NotFound("no such managed node")
        nodes = [node]
    pins = rt.image_store.pins() if rt.image_store else set()
    active = rt.store.list_jobs([JobState.STARTING, JobState.RUNNING], limit=100_000)
    st = state(rt)
    out = []
    for n in nodes:
        try:
            used, capacity = rt.node_images.disk(n)
        except EngineError as e:
            log.warning("%s", e)
            continue
        high = mark_bytes(rt.settings.gc_high, capacity)
        low = target if target is not None else mark_bytes(rt.settings.gc_low, capacity)
        if high is None or low is None:
            continue
        keep = {canonical(p) for p in pins}
        keep |= {canonical(j.spec.image) for j in active if j.node == n and j.spec.image}
        keep |= {canonical(ref) for (pn, ref), p in st.pulls.items() if pn == n and p.state == "pulling"}
        images = [
            replace(i, last_used=max([i.last_used] + [st.last_used.get((n, r), 0.0) for r in i.refs]))
            for i in inventory(rt, n, fresh=True)
        ]
        for img, reason in gc_choice(images, used, high, low, keep=frozenset(keep), force=target is not None):
            entry = {"node": n, "image": img.image_id, "refs": list(img.refs), "size": img.size, "reason": reason}
            if not dry_run:
                try:
                    rt.node_images.remove(n, img.image_id)
                except EngineError as e:
                    entry["error"] = str(e)
                log.info(
                    "image GC on %s removed %s %s (%d bytes): %s", n, img.image_id[:19], img.refs, img.size, reason
                )
            out.append(entry)
        if not dry_run:
            if rt.cluster is not None:  # the local engine removes its containers itself when collecting
                busy = frozenset(str(j.id) for j in active)
                rt.node_images.remove_exited(n, f"kran.instance={rt.instance}", busy)
            inventory(rt, n, fresh=True)
    return out


def pin(rt: Runtime, who: Principal, ref: str) -> None:
    try:
        parse_ref(ref)
    except ValueError as e:
        raise InvalidInput(f"ref: {e}", "ref") from None
    rt.image_store.pin(ref, who.user, rt.clock.now())


def unpin(rt: Runtime, ref: str) -> bool:
    return bool(rt.image_store and rt.image_store.unpin(ref))
