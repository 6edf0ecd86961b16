"""The image manager: sizes and classes from the registry, per-node inventory, pulls with
progress (`pulling`), warm, pins, disk GC."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

from kran.domain.auth import Principal
from kran.domain.disk import mark_bytes
from kran.domain.images import ImageInfo, ImageRef, NodeImage, canonical, gc_choice, layers_size, parse_ref, size_class
from kran.domain.jobs import JobSpec
from kran.domain.records import StartedAttempt
from kran.domain.states import JobState
from kran.errors import EngineError, EngineUnavailable, InvalidInput, NotFound, RegistryError
from kran.ports import Clock, ImageStore, NodeImages, Registry, Store
from kran.services.image_answers import RecentAnswers
from kran.services.image_lookups import Lookups
from kran.services.nodes import NodeDirectory
from kran.settings import ImageSection

log = logging.getLogger("kran.images")
HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?")
Answers = dict[str, ImageInfo | RegistryError]  # what `settle` got, by reference
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
    unreachable: bool = False  # it failed because the node's engine did not answer
    started: float = field(default_factory=time.time)
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class ImageState:
    inventory: dict[str, tuple[float, list[NodeImage]]] = field(default_factory=dict)
    refs: dict[str, frozenset[str]] = field(default_factory=dict)  # node -> its images' tags and digests
    last_used: dict[tuple[str, str], float] = field(default_factory=dict)
    pulls: dict[tuple[str, str], Pull] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# ---- registry: size, digest, class


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


# ---- pulls: for a starting attempt, or to warm nodes


# ---- disk GC


class ImageManager:
    """Owns the image state: registry answers, node inventories, pulls in progress."""

    def __init__(
        self,
        registry: Registry,
        image_store: ImageStore,
        node_images: NodeImages,
        nodes: NodeDirectory,
        store: Store,
        clock: Clock,
        pool: Executor,
        cfg: ImageSection,  # the [image] settings
        sweep_exited: bool = False,
    ) -> None:
        self.registry = registry
        self.image_store = image_store
        self.node_images = node_images
        self.nodes = nodes
        self.store = store
        self.clock = clock
        self.pool = pool
        self.cfg = cfg
        self.sweep_exited = sweep_exited  # the engine leaves exited containers behind (Swarm)
        self._st = ImageState(refs=nodes.image_refs)  # the directory reads the inventory's refs
        self._lookups = Lookups()
        self._answers = RecentAnswers()

    def lookup(self, ref_text: str, who: str, answers: Answers | None = None) -> ImageInfo | None:
        """The registry's answer for the reference (cached a minute, a refusal FAILED_TTL_S),
        or None when kran does not look this registry up (Docker Hub unless
        image.lookup_docker_hub). Lookups under way are shared and capped per user
        (services.image_lookups). With `answers` (what `settle` got: a request thread never
        waits on a registry) only an answer known now is given."""
        ref = self._looked_up(ref_text)
        if ref is None:
            return None
        known = answers.get(ref_text) if answers is not None else None
        if known is None:
            known = self._answers.known(ref_text)
        if isinstance(known, RegistryError):
            raise RegistryError(str(known), known.answered)
        if known is not None:
            return known
        if answers is not None:
            raise RegistryError(self._lookups.why_not(ref_text, who), answered=False)
        return self._lookups.run(ref_text, who, self._resolver(ref_text, ref))

    async def settle(self, refs: list[str], who: str) -> Answers:
        """Await, holding no thread, the registry lookups of the images that `classify` will
        need (a request thread waited on each before: a user's parallel submits of a slow
        registry's image held the whole pool)."""
        answers: Answers = {}
        parsed: dict[str, ImageRef] = {}
        for ref_text in refs:
            try:
                ref = self._looked_up(ref_text)
            except InvalidInput:
                continue  # (classify says why)
            if ref is None:
                continue
            if (known := self._answers.known(ref_text)) is not None:
                answers[ref_text] = known  # (kept here: a batch's lookups may outlast the cache)
            else:
                parsed[ref_text] = ref
        answers.update(await self._lookups.settle(parsed, who, lambda r: self._resolver(r, parsed[r])))
        return answers

    def _looked_up(self, ref_text: str) -> ImageRef | None:
        try:
            ref = parse_ref(ref_text)
        except ValueError as e:
            raise InvalidInput(f"image: {e}", "image") from None
        return ref if ref.explicit_registry or self.cfg.lookup_docker_hub else None

    def _resolver(self, ref_text: str, ref: ImageRef) -> Callable[[], ImageInfo]:
        """A registry lookup of `ref` whose answer is kept under `ref_text`."""
        return self._answers.keeping(ref_text, lambda: self.registry.resolve(ref))

    def classify(self, spec: JobSpec, who: str, answers: Answers | None = None) -> JobSpec:
        """At submit: the image's digest, size and class; the class becomes the job's node
        class unless the job named one. A registry that refuses (auth, unknown image) refuses
        the job; one that cannot be reached leaves the size unknown."""
        if not spec.image:
            return spec
        try:
            info = self.lookup(spec.image, who, answers)
        except RegistryError as e:
            if e.answered:
                raise InvalidInput(f"image: {e}", "image") from None
            log.warning("image size unknown: %s", e)
            return spec
        if info is None:
            return spec
        cls = size_class(info.size, self.cfg.size_classes)
        return replace(
            spec,
            image_digest=info.digest,
            image_size=info.size,
            image_class=cls,
            node_class=spec.node_class or cls,
        )

    def inspect(self, ref_text: str, who: str, answers: Answers | None = None) -> dict[str, Any]:
        try:
            info = self.lookup(ref_text, who, answers)
        except RegistryError as e:
            raise InvalidInput(str(e), "ref") from None
        if info is None:
            raise InvalidInput(
                f"{ref_text}: kran looks up only references naming a registry host"
                " (Docker Hub: image.lookup_docker_hub)",
                "ref",
            )
        holders = [
            node for node, refs in self.images_by_node(fresh=True).items() if _holds(refs, ref_text, info.digest)
        ]
        return {
            "ref": ref_text,
            "digest": info.digest,
            "index_digest": info.index_digest,
            "media_type": info.media_type,
            "size": info.size,
            "layers": [{"digest": d, "size": s} for d, s in info.layers],
            "class": size_class(info.size, self.cfg.size_classes),
            "nodes": holders,
            "pinned": ref_text in self.image_store.pins(),
        }

    def inventory(self, node: str, fresh: bool = False) -> list[NodeImage]:
        if node not in self.node_images.nodes():
            return []
        st = self._st
        cached = st.inventory.get(node)
        if fresh or cached is None or time.monotonic() - cached[0] > INVENTORY_TTL_S:
            try:
                images = self.node_images.images(node)
            except EngineError as e:
                log.warning("%s", e)
                return cached[1] if cached else []
            st.inventory[node] = (time.monotonic(), images)
            st.refs[node] = frozenset(r for i in images for r in i.refs)  # read by every scheduler pass
            return images
        return cached[1]

    def layer_bytes(self) -> dict[str, int]:
        """Node -> bytes its image layers take, each layer once (from the cached inventory)."""
        return {node: layers_size(images) for node, (_, images) in list(self._st.inventory.items())}

    def images_by_node(self, fresh: bool = False) -> dict[str, frozenset[str]]:
        """Node -> the references it holds (from the cached inventory unless `fresh`)."""
        out = {}
        for node in self.node_images.nodes():
            if fresh or node in self._st.inventory:
                out[node] = self._node_refs(node, fresh)
        return out

    def inventories(self) -> dict[str, list[NodeImage] | None]:
        """Node -> its images as inventory() gives them (cached a while), None where its
        Docker API has not answered yet (for the dashboard)."""
        out: dict[str, list[NodeImage] | None] = {}
        for node in self.node_images.nodes():
            found = self.inventory(node)
            out[node] = found if node in self._st.inventory else None
        return out

    def registry_answers(self) -> dict[str, ImageInfo]:
        """What registries said of the references kran looked up, by canonical reference,
        however old (no registry call)."""
        return {canonical(ref): info for ref, info in self._answers.all().items()}

    def pulls_in_progress(self) -> list[Pull]:
        """Pulls running now, for jobs and warms alike."""
        return [p for p in list(self._st.pulls.values()) if p.state == "pulling"]

    def refresh_inventory(self) -> None:
        """In the pool, periodically: every node's images."""
        for node in self.node_images.nodes():
            self.inventory(node, fresh=True)

    def ensure_on_node(self, s: StartedAttempt) -> None:
        """Before the launch: the attempt's image on its node, pulled here (with progress in
        the job: `pulling`) unless it is there, or waited for if a warm is pulling it."""
        image = s.spec.image
        if not image or s.node not in self.node_images.nodes():
            return
        st = self._st
        st.last_used[(s.node, canonical(image))] = time.time()  # as the inventory names it
        if _holds(self._node_refs(s.node), image, s.spec.image_digest):
            return
        pull, mine = self._start_pull(s.node, image)
        total = s.spec.image_size or 0
        self.image_store.set_pull(
            s.job_id,
            s.attempt,
            {"image": image, "node": s.node, "done": 0, "total": total},
            f"pulling {image} on {s.node}" + (f" ({total} bytes)" if total else ""),
            self.clock.now(),
        )
        last = [0.0]

        def progress(done: int, known: int) -> None:
            pull.done, pull.total = done, max(known, total)
            if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                last[0] = time.monotonic()
                progress_row = {"image": image, "node": s.node, "done": done, "total": max(known, total)}
                self.image_store.set_pull(s.job_id, s.attempt, progress_row, None, self.clock.now())

        try:
            if mine:
                self._run_pull(pull, progress)
            elif not pull.finished.wait(self.cfg.pull_timeout_s):
                raise EngineError(f"pull of {image} on node {s.node} timed out after {self.cfg.pull_timeout_s:g}s")
            if pull.state == "failed":
                kind = EngineUnavailable if pull.unreachable else EngineError
                raise kind(pull.error or f"pull of {image} on node {s.node} failed")
        finally:
            done_text = f"pulled {image} on {s.node}" if pull.state == "done" else None
            self.image_store.set_pull(s.job_id, s.attempt, None, done_text, self.clock.now())

    def _node_refs(self, node: str, fresh: bool = False) -> frozenset[str]:
        self.inventory(node, fresh)
        return self._st.refs.get(node, frozenset())

    def _start_pull(self, node: str, ref: str) -> tuple[Pull, bool]:
        """The pull of `ref` on `node` in progress, or a new one (True: the caller runs it)."""
        st = self._st
        with st.lock:
            current = st.pulls.get((node, ref))
            if current is not None and current.state == "pulling":
                return current, False
            pull = st.pulls[(node, ref)] = Pull(node, ref)
        return pull, True

    def _run_pull(self, pull: Pull, progress: Callable[[int, int], None] | None = None) -> None:
        creds = self.image_store.credentials()
        registry = parse_ref(pull.ref).registry

        def report(done: int, known: int) -> None:
            pull.done, pull.total = done, max(known, pull.total)
            if progress is not None:
                progress(done, known)

        try:
            self.node_images.pull(pull.node, pull.ref, creds.get(registry), report, self.cfg.pull_timeout_s)
            pull.state = "done"
            pull.done = pull.total
            log.info("pulled %s on node %s", pull.ref, pull.node)
        except EngineError as e:
            pull.state, pull.error = "failed", str(e)
            pull.unreachable = isinstance(e, EngineUnavailable)
            log.warning("%s", e)
        finally:
            self.inventory(pull.node, fresh=True)
            pull.finished.set()

    def warm_nodes(self, ref: str, nodes: list[str] | None, node_class: str | None) -> list[str]:
        """Pull `ref` on these nodes (or all of a class, or all) in parallel; returns the nodes."""
        try:
            parse_ref(ref)
        except ValueError as e:
            raise InvalidInput(f"ref: {e}", "ref") from None
        managed = self.node_images.nodes()
        known = {n.node_id: n for n in self.nodes.totals()}
        names = self.nodes.hostnames()
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
            pull, mine = self._start_pull(node, ref)
            if mine:
                self.pool.submit(self._run_pull, pull)
        return targets

    def warm_status(self, ref: str) -> list[dict[str, Any]]:
        st = self._st
        names = self.nodes.hostnames()
        out = []
        for node in self.node_images.nodes():
            pull = st.pulls.get((node, ref))
            present = canonical(ref) in self._node_refs(node)
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

    def gc(
        self, node: str | None = None, dry_run: bool = False, target: int | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Per node: above the high-water mark (or always, with `target`), remove least
        recently used images that are not pinned, not used by a starting or running job or
        a container and not being pulled, until their layers take at most the low-water
        mark (or `target`). Returns the removals and, per node where GC acted or fell short,
        the layers' bytes before, the target, after, and why it stopped above the target."""
        nodes = self.node_images.nodes()
        if node is not None:
            names = self.nodes.hostnames()
            node = next((n for n in nodes if node in (n, names.get(n))), None)
            if node is None:
                raise NotFound("no such managed node")
            nodes = [node]
        pins = self.image_store.pins()
        active = self.store.list_jobs([JobState.STARTING, JobState.RUNNING], limit=100_000)
        st = self._st
        out: list[dict[str, Any]] = []
        summaries: list[dict[str, Any]] = []
        for n in nodes:
            try:
                capacity = self.node_images.disk_size(n)
            except EngineError as e:
                log.warning("%s", e)
                continue
            high = mark_bytes(self.cfg.gc_high, capacity)
            low = target if target is not None else mark_bytes(self.cfg.gc_low, capacity)
            if high is None or low is None:
                continue
            if not dry_run and self.sweep_exited:  # first: their containers hold images
                self.node_images.remove_exited(n, frozenset(str(j.id) for j in active))
            keep = {canonical(p): "pinned" for p in pins}
            keep |= {canonical(j.spec.image): "in use by a job" for j in active if j.node == n and j.spec.image}
            keep |= {
                canonical(r): "being pulled" for (pn, r), p in st.pulls.items() if pn == n and p.state == "pulling"
            }
            images = [
                replace(i, last_used=max([i.last_used] + [st.last_used.get((n, canonical(r)), 0.0) for r in i.refs]))
                for i in self.inventory(n, fresh=True)
            ]
            plan = gc_choice(images, high, low, keep=keep, force=target is not None)
            for img, freed, reason in plan.chosen:
                entry = {
                    "node": n,
                    "image": img.image_id,
                    "refs": list(img.refs),
                    "size": img.size,
                    "freed": freed,
                    "reason": reason,
                }
                if not dry_run:
                    try:
                        if self._used_now(n, img):  # a job started with it since the choice
                            raise EngineError("a job started with it meanwhile: kept")
                        self.node_images.remove(n, img.image_id)
                    except EngineError as e:
                        entry["error"] = str(e)
                    log.info(
                        "image GC on %s removed %s %s (frees %d bytes): %s",
                        n,
                        img.image_id[:19],
                        img.refs,
                        freed,
                        reason,
                    )
                out.append(entry)
            left = plan.left if dry_run or not plan.chosen else layers_size(self.inventory(n, fresh=True))
            if plan.chosen or plan.short:
                short = plan.short if left > low else None
                summaries.append({"node": n, "before": plan.usage, "target": low, "after": left, "short": short})
                if short and not dry_run:
                    log.warning("image GC on %s: %s", n, short)
        return out, summaries

    def _used_now(self, node: str, img: NodeImage) -> bool:
        active = self.store.list_jobs([JobState.STARTING, JobState.RUNNING], limit=100_000)
        used = {canonical(j.spec.image) for j in active if j.node == node and j.spec.image}
        return bool(used & {canonical(r) for r in img.refs}) or any(
            j.spec.image_digest and any(j.spec.image_digest in r for r in img.refs) for j in active if j.node == node
        )

    def pin(self, who: Principal, ref: str) -> None:
        try:
            parse_ref(ref)
        except ValueError as e:
            raise InvalidInput(f"ref: {e}", "ref") from None
        self.image_store.pin(ref, who.user, self.clock.now())

    def unpin(self, ref: str) -> bool:
        return self.image_store.unpin(ref)

    def pins(self) -> list[str]:
        return sorted(self.image_store.pins())

    def tick(self) -> None:
        """Every node's image inventory, then disk GC where a node is above its high-water mark."""
        self.refresh_inventory()
        self.gc()

    # ---- registry credentials: stored encrypted, checked against the registry before
    # they are kept, used for lookups and pulls, never logged or returned

    def login(self, host: str, username: str, password: str) -> None:
        if not HOST.fullmatch(host):
            raise InvalidInput(f"{host!r} is not a registry host[:port]", "host")
        try:
            self.registry.check_login(host, (username, password))
        except RegistryError as e:
            raise InvalidInput(str(e), "password") from None
        self.image_store.set_credentials(host, username, password, self.clock.now())
        self._answers.forget()

    def logout(self, host: str) -> bool:
        return self.image_store.delete_credentials(host)

    def list_logins(self) -> list[dict[str, Any]]:
        return self.image_store.registries()
