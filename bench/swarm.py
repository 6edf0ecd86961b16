"""Swarm dispatch benchmark: kran on a real 3-node swarm vs. `docker run` on the same
nodes at the same concurrency, in one run.

    .venv/bin/python bench/swarm.py [--jobs 60] [--cpus 0.5]

Builds the 3-node swarm of the tests (network namespaces, tests/swarm_cluster.py), then
- kran: N busybox `true` jobs (batch submit) on `engine = "swarm"`, until all ended;
- direct: the same containers with `docker -H <node> run --rm --network none`, round robin
  over the nodes, as many at once as kran runs (node cpus / job cpus, summed over the nodes);
- services: the same jobs as bare swarm `replicated-job` services with no network (as
  kran's jobs that ask for none), at the same concurrency: the engine's own floor.
Prints both makespans and the ratio. Needs root, dockerd and the kran-test/busybox image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dispatch import IMAGE, admin_client, direct, start_server, wait_all_final  # noqa: E402
from tests.swarm_cluster import SwarmCluster  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--cpus", type=float, default=0.5)
    args = ap.parse_args()
    cluster = SwarmCluster(3).up(images=(IMAGE,))
    try:
        node_cpus = int(cluster.manager.docker("info", "--format", "{{.NCPU}}").stdout)
        concurrency = int(node_cpus / args.cpus) * len(cluster.nodes)
        job = {"image": IMAGE, "command": ["true"], "cpus": str(args.cpus), "mem": "32"}
        # the data dir is a fresh dir under the temp dir, which stands in for the shared (NFS) path
        server = start_server(
            node_cpus,
            KRAN_SERVER_ENGINE="swarm",
            KRAN_LOCAL_DOCKER_HOST=cluster.manager.sock,
            KRAN_CLUSTER_SHARED_DIR=tempfile.gettempdir(),
        )
        try:
            with admin_client(server) as c:
                t0 = time.perf_counter()
                c.post("/api/v1/jobs/batch", json={"jobs": [job] * args.jobs}).raise_for_status()
                wait_all_final(c, args.jobs)
                kran_s = time.perf_counter() - t0
                bad = {k: v for k, v in c.get("/status").json()["jobs_by_state"].items() if k != "succeeded"}
                if bad:
                    raise SystemExit(f"some jobs did not succeed: {bad}")
        finally:
            server.stop()
        argvs = [
            ["docker", "-H", cluster.nodes[i % len(cluster.nodes)].sock, "run", "--rm", "--network", "none", "--init",
             "--cpus", str(args.cpus), "-m", "32m", IMAGE, "true"]
            for i in range(args.jobs)
        ]  # fmt: skip
        direct_s, _ = direct(argvs, concurrency)
        services_s = raw_services(cluster, args.jobs, concurrency, args.cpus)
    finally:
        cluster.down()
    print(f"swarm, {args.jobs} jobs, {len(cluster.nodes)} nodes, concurrency {concurrency}")
    print(f"  kran (one replicated-job service per attempt): {kran_s:.1f} s ({args.jobs / kran_s:.1f} jobs/s)")
    print(f"  docker run on the nodes directly:               {direct_s:.1f} s ({args.jobs / direct_s:.1f} jobs/s)")
    print(f"  swarm services directly (no network):         {services_s:.1f} s ({args.jobs / services_s:.1f} jobs/s)")
    print(f"  makespan ratio kran/docker run: {kran_s / direct_s:.2f}")
    print(f"  makespan ratio kran/swarm services with the same network: {kran_s / services_s:.2f}")


def raw_services(cluster: SwarmCluster, n: int, concurrency: int, cpus: float) -> float:
    """The same jobs as bare replicated-job services without a network (what kran creates
    for a job that asks for none, without kran), polled every 50 ms."""
    import docker
    from docker.types import Resources, RestartPolicy, ServiceMode

    client = docker.DockerClient(base_url=cluster.manager.sock)
    nodes = [n.id for n in client.nodes.list()]

    def one(i: int) -> None:
        s = client.services.create(
            IMAGE, command=["true"], name=f"bench-{i}",
            mode=ServiceMode("replicated-job", concurrency=1, replicas=1),
            restart_policy=RestartPolicy(condition="none"), constraints=[f"node.id=={nodes[i % len(nodes)]}"],
            resources=Resources(cpu_limit=int(cpus * 1e9), mem_limit=32 << 20),
        )  # fmt: skip
        while True:
            tasks = client.api.tasks(filters={"service": s.id})
            if tasks and tasks[0]["Status"]["State"] in ("complete", "failed", "rejected"):
                break
            time.sleep(0.05)
        s.remove()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
