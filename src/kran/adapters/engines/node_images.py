"""Each node's Docker API, for the image manager: inventory, pulls with progress, removal,
disk use. On the local engine that is the one Docker Engine; on a swarm, the nodes named
in `cluster.node_docker_hosts` (Swarm itself does not tell which node holds which image).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.utils import parse_repository_tag

from kran.adapters.engines.containers import unreachable
from kran.domain.images import NodeImage, chain_ids, history_sizes, resolve_layers
from kran.errors import EngineError, EngineUnavailable


class NodeDockers:
    def __init__(self, urls: Callable[[], dict[str, str | None]], instance: str) -> None:
        """`urls`: node id -> Docker API URL (None: the environment's default)."""
        self._urls = urls
        self._key, self._value = "kran.instance", instance  # the label of this server's job containers
        self._label = f"{self._key}={instance}"
        self._layer_cache: dict[tuple[Any, str], tuple[list[str], list[int] | None]] = {}
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def nodes(self) -> list[str]:
        return list(self._urls())

    def _url(self, node: str) -> str | None:
        urls = self._urls()
        if node not in urls:
            raise EngineError(f"no Docker API known for node {node} (cluster.node_docker_hosts)")
        return urls[node]

    def _client(self, node: str) -> Any:
        url = self._url(node)
        with self._lock:
            client = self._clients.get(url or "")
            if client is None:
                client = self._clients[url or ""] = _connect(node, url)
        return client

    def images(self, node: str) -> list[NodeImage]:
        """The node's images with their layers (chain id and bytes, for GC) and how many
        containers use each, not counting the exited ones of this server's jobs (GC sweeps
        them first)."""
        client = self._client(node)
        try:
            found = client.api.images()
            containers = client.api.containers(all=True)
            layers = [self._layers(client, i["Id"]) for i in found]
        except (DockerException, OSError) as e:
            raise EngineError(f"node {node}: cannot list images: {e}") from None
        with self._lock:  # forget images that are gone
            for key in [k for k in self._layer_cache if k[0] is client and k[1] not in {i["Id"] for i in found}]:
                del self._layer_cache[key]
        in_use = Counter(
            c.get("ImageID")
            for c in containers
            if not (c.get("State") == "exited" and (c.get("Labels") or {}).get(self._key) == self._value)
        )
        sized = resolve_layers(
            [(chains, sizes, int(i.get("Size", 0))) for i, (chains, sizes) in zip(found, layers, strict=True)]
        )
        return [
            NodeImage(
                image_id=i["Id"],
                refs=tuple(r for r in (i.get("RepoTags") or []) + (i.get("RepoDigests") or []) if "<none>" not in r),
                size=int(i.get("Size", 0)),
                last_used=float(i.get("Created", 0)),
                layers=ls,
                containers=in_use.get(i["Id"], 0),
            )
            for i, ls in zip(found, sized, strict=True)
        ]

    def _layers(self, client: Any, image_id: str) -> tuple[list[str], list[int] | None]:
        """An image's chain ids and, where its history tells, each layer's bytes (an image
        id's layers never change: asked once)."""
        with self._lock:
            cached = self._layer_cache.get((client, image_id))
        if cached is None:
            try:
                diff_ids = client.api.inspect_image(image_id).get("RootFS", {}).get("Layers") or []
                history = [int(h.get("Size", 0)) for h in reversed(client.api.history(image_id))]
            except (ImageNotFound, NotFound):  # removed meanwhile: no layers of its own
                return [], []
            cached = (chain_ids(diff_ids), history_sizes(diff_ids, history))
            with self._lock:
                self._layer_cache[(client, image_id)] = cached
        return cached

    def pull(
        self,
        node: str,
        ref: str,
        auth: tuple[str, str] | None,
        on_progress: Callable[[int, int], None],
        timeout_s: float,
    ) -> None:
        """Pull `ref` on the node, reporting (bytes done, bytes known so far) as layers arrive."""
        repo, tag = parse_repository_tag(ref)
        layers: dict[str, tuple[int, int]] = {}
        errors: list[str] = []
        lost: list[bool] = []  # the daemon stopped answering (not the registry refusing)
        # a client of its own: closing it is how a stuck pull is abandoned (dockerd cancels it)
        client = _connect(node, self._url(node))
        auth_config = {"username": auth[0], "password": auth[1]} if auth else None

        def consume() -> None:
            try:
                events = client.api.pull(repo, tag=tag or "latest", stream=True, decode=True, auth_config=auth_config)
                for event in events:
                    if "error" in event:
                        errors.append(str(event["error"]))
                        return
                    layer, detail = event.get("id"), event.get("progressDetail") or {}
                    status = event.get("status", "")
                    if layer and detail.get("total") and status.startswith("Downloading"):
                        layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
                    elif layer and status in ("Download complete", "Pull complete") and layer in layers:
                        layers[layer] = (layers[layer][1], layers[layer][1])
                    on_progress(sum(d for d, _ in layers.values()), sum(t for _, t in layers.values()))
            except (DockerException, OSError, ValueError) as e:
                errors.append(_explain(e))
                lost.append(unreachable(e))

        worker = threading.Thread(target=consume, name=f"pull-{node}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            client.close()
            worker.join(5)
            raise EngineError(f"pull of {ref} on node {node} timed out after {timeout_s:g}s")
        client.close()
        if errors:
            kind = EngineUnavailable if any(lost) else EngineError
            raise kind(f"pull of {ref} on node {node} failed: {errors[0]}")

    def remove(self, node: str, image_id: str) -> None:
        """Remove an image and every name it has (an image tagged twice is not removed by
        its id alone). Never forced: one a container uses stays, with its last name."""
        api = self._client(node).api
        try:
            info = api.inspect_image(image_id)
            for ref in (info.get("RepoTags") or []) + (info.get("RepoDigests") or []):
                if "<none>" not in ref:
                    api.remove_image(ref, force=False, noprune=False)
            api.remove_image(image_id, force=False, noprune=False)
        except (ImageNotFound, NotFound):
            pass  # gone with its last name
        except APIError as e:
            if "dependent child images" in _explain(e):
                return  # untagged; it goes with the last image built on it (its layers are theirs too)
            raise EngineError(f"node {node}: cannot remove {image_id[:19]}: {_explain(e)}") from None

    def disk_size(self, node: str) -> int | None:
        """Bytes of the disk holding the node's Docker data, where the server can see it."""
        try:
            root = self._client(node).info().get("DockerRootDir", "")
        except (DockerException, OSError) as e:
            raise EngineError(f"node {node}: cannot read disk use: {e}") from None
        if root and os.path.isdir(root):  # readable from here when the node shares this machine's disks
            st = os.statvfs(root)
            return st.f_blocks * st.f_frsize
        return None

    def remove_exited(self, node: str, keep_jobs: frozenset[str]) -> int:
        """Exited containers of this server's jobs (job tasks Swarm leaves behind, moby#42789),
        except those of jobs in `keep_jobs` (still being collected)."""
        client = self._client(node)
        n = 0
        try:
            for c in client.containers.list(all=True, filters={"status": "exited", "label": self._label}):
                if c.labels.get("kran.job") in keep_jobs:
                    continue
                c.remove()
                n += 1
        except (DockerException, OSError):
            pass
        return n


def _connect(node: str, url: str | None) -> Any:
    try:
        return docker.DockerClient(base_url=url, timeout=60) if url else docker.from_env(timeout=60)
    except DockerException as e:
        raise EngineUnavailable(f"node {node}: Docker Engine unreachable: {e}") from None


def _explain(e: Exception) -> str:
    return str(getattr(e, "explanation", None) or e)[:300]
