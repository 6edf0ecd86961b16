"""A real Docker registry (Debian's docker-registry, htpasswd auth) for the tests, with
test images pushed into it by skopeo, and a stalling registry for pull timeouts."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

USER, PASSWORD = "kran", "s3cret-pw"


@dataclass
class Registry:
    host: str  # addr:port
    root: Path
    proc: subprocess.Popen[bytes]

    def push(self, image: str, dest: str) -> None:
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PASSWORD}",
             f"docker-daemon:{image}", f"docker://{self.host}/{dest}"],
            check=True, capture_output=True,
        )  # fmt: skip

    def manifest(self, repo: str, tag: str) -> tuple[str, int, bytes]:
        r = httpx.get(
            f"http://{self.host}/v2/{repo}/manifests/{tag}",
            auth=(USER, PASSWORD),
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        r.raise_for_status()
        return r.headers["docker-content-digest"], len(r.content), r.content

    def put_index(self, repo: str, tag: str, entries: list[tuple[str, int, str]]) -> None:
        """A manifest list: (digest, size, architecture) per entry."""
        body = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": d,
                    "size": n,
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for d, n, arch in entries
            ],
        }
        r = httpx.put(
            f"http://{self.host}/v2/{repo}/manifests/{tag}",
            auth=(USER, PASSWORD),
            content=json.dumps(body).encode(),
            headers={"Content-Type": body["mediaType"]},
        )
        r.raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_registry(addr: str, port: int, storage: Path) -> Registry:
    root = Path(tempfile.mkdtemp(prefix="kran-registry-"))
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True).stdout
    (root / "htpasswd").write_text(htpasswd)
    (root / "config.yml").write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {addr}:{port}
auth:
  htpasswd:
    realm: kran-test
    path: {root / "htpasswd"}
"""
    )
    with open(root / "registry.log", "ab") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log)
    reg = Registry(f"{addr}:{port}", root, proc)
    for _ in range(100):
        try:
            if httpx.get(f"http://{reg.host}/v2/", timeout=1).status_code == 401:
                return reg
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    reg.stop()
    raise RuntimeError(f"registry did not start: {(root / 'registry.log').read_text()[-1000:]}")


def build_heavy(docker_client: Any, base: str, tag: str, size: int) -> None:
    """`base` plus `size` bytes of random data (does not compress)."""
    ctx = Path(tempfile.mkdtemp())
    (ctx / "blob").write_bytes(__import__("os").urandom(size))
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY blob /blob\n")
    docker_client.images.build(path=str(ctx), tag=tag, rm=True)
    shutil.rmtree(ctx)


class StallingRegistry:
    """Answers /v2/ and manifests at once, then never sends a blob: pulls hang."""

    def __init__(self, addr: str) -> None:
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        layer_digest = "sha256:" + "ab" * 32
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(config),
                    "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                },
                "layers": [
                    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 100_000,
                     "digest": layer_digest}
                ],
            }
        ).encode()  # fmt: skip
        self.stop_event = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                if "/manifests/" in self.path:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
                    self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(outer.manifest).hexdigest())
                    self.send_header("Content-Length", str(len(outer.manifest)))
                    self.end_headers()
                    if self.command == "GET":
                        self.wfile.write(outer.manifest)
                elif self.path.rstrip("/") == "/v2":
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    outer.stop_event.wait(120)  # a blob: never comes

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((addr, 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"{addr}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
