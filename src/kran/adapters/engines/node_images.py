"""Each node's Docker API, for the image manager: inventory, pulls with progress, removal,
disk use. On the local engine that is the one Docker Engine; on a swarm, the nodes named
in `cluster.node_docker_hosts` (Swarm itself does not tell which node holds which image).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.utils import parse_repository_tag

from kran.domain.images import NodeImage
from kran.errors import EngineError


class NodeDockers:
    def __init__(self, urls: Callable[[], dict[str, str | None]], instance: str) -> None:
        """`urls`: node id -> Docker API URL (None: the environment's default)."""
        self._urls = urls
        self._label = f"kran.instance={instance}"  # on the containers of this server's jobs
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
        try:
            found = self._client(node).api.images()
        except (DockerException, OSError) as e:
            raise EngineError(f"node {node}: cannot list images: {e}") from None
        return [
            NodeImage(
                image_id=i["Id"],
                refs=tuple(i.get("RepoTags") or ()) + tuple(i.get("RepoDigests") or ()),
                size=int(i.get("Size", 0)),
                last_used=float(i.get("Created", 0)),
            )
            for i in found
        ]

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

        worker = threading.Thread(target=consume, name=f"pull-{node}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            client.close()
            worker.join(5)
            raise EngineError(f"pull of {ref} on node {node} timed out after {timeout_s:g}s")
        client.close()
        if errors:
            raise EngineError(f"pull of {ref} on node {node} failed: {errors[0]}")

    def remove(self, node: str, image_id: str) -> None:
        try:
            self._client(node).api.remove_image(image_id, force=False, noprune=False)
        except (ImageNotFound, NotFound):
            pass
        except APIError as e:
            raise EngineError(f"node {node}: cannot remove {image_id[:19]}: {_explain(e)}") from None

    def disk(self, node: str) -> tuple[int, int | None]:
        """(bytes used by image layers, size of the disk holding Docker's data or None)."""
        client = self._client(node)
        try:
            used = int(client.df().get("LayersSize") or 0)
            root = client.info().get("DockerRootDir", "")
        except (DockerException, OSError) as e:
            raise EngineError(f"node {node}: cannot read disk use: {e}") from None
        capacity = None
        if root and os.path.isdir(root):  # readable from here when the node shares this machine's disks
            st = os.statvfs(root)
            capacity = st.f_blocks * st.f_frsize
        return used, capacity

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
        raise EngineError(f"node {node}: Docker Engine unreachable: {e}") from None


def _explain(e: Exception) -> str:
    return str(getattr(e, "explanation", None) or e)[:300]
