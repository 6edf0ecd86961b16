"""Image warm benchmark: `kran image warm` of one image on 3 nodes in parallel vs. the
same pulls one node after the other (`docker pull`), in one run.

    .venv/bin/python bench/images.py [--mb 64]

Builds the tests' 3-node swarm and a registry (htpasswd auth) on its bridge, pushes an
image of busybox plus MB of random data, then times both ways, removing the image from
the nodes in between. Needs root, dockerd, docker-registry, skopeo, htpasswd.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dispatch import IMAGE, admin_client, start_server  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.registry import PASSWORD, USER, build_heavy, start_registry  # noqa: E402
from tests.swarm_cluster import NET, SwarmCluster  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    args = ap.parse_args()
    build_heavy(docker.from_env(), IMAGE, "kran-bench/big:latest", args.mb << 20)
    cluster = SwarmCluster(3).up(images=(IMAGE,))
    registry = start_registry(f"{NET}.1", free_port(), Path(tempfile.mkdtemp(prefix="kran-bench-reg-")))
    try:
        registry.push("kran-bench/big:latest", "big:latest")
        ref = f"{registry.host}/big:latest"
        hosts = ",".join(f"{n.name}={n.sock}" for n in cluster.nodes)
        server = start_server(
            2,
            KRAN_SERVER_ENGINE="swarm",
            KRAN_LOCAL_DOCKER_HOST=cluster.manager.sock,
            KRAN_CLUSTER_SHARED_DIR=tempfile.gettempdir(),
            KRAN_CLUSTER_NODE_DOCKER_HOSTS=hosts,
            KRAN_IMAGE_INSECURE_REGISTRIES=registry.host,
        )
        try:
            with admin_client(server) as c:
                c.post(f"/api/v1/registries/{registry.host}/login", json={"username": USER, "password": PASSWORD})
                t0 = time.perf_counter()
                c.post("/api/v1/images/warm", json={"ref": ref}).raise_for_status()
                while True:
                    rows = c.get("/api/v1/images/status", params={"ref": ref}).json()["nodes"]
                    if all(r["state"] in ("done", "failed") for r in rows):
                        break
                    time.sleep(0.05)
                warm_s = time.perf_counter() - t0
                if any(r["state"] == "failed" for r in rows):
                    raise SystemExit(f"warm failed: {rows}")
        finally:
            server.stop()
        for n in cluster.nodes:
            n.docker("rmi", ref)
        for n in cluster.nodes:
            subprocess.run(
                ["docker", "-H", n.sock, "login", registry.host, "-u", USER, "--password-stdin"],
                input=PASSWORD, text=True, check=True, capture_output=True,
            )  # fmt: skip
        t0 = time.perf_counter()
        for n in cluster.nodes:
            n.docker("pull", ref)
        seq_s = time.perf_counter() - t0
    finally:
        registry.stop()
        cluster.down()
    print(f"warm {ref} ({args.mb} MiB of data) on {len(cluster.nodes)} nodes")
    print(f"  kran image warm (parallel): {warm_s:.2f} s")
    print(f"  docker pull, node after node: {seq_s:.2f} s")
    print(f"  ratio warm/sequential: {warm_s / seq_s:.2f}")


if __name__ == "__main__":
    main()
