"""Placement at scale, no engine (issue 23.6): kran's pure placement code on generated nodes.

    .venv/bin/python bench/placement.py [--nodes 1000] [--queued 100000] [--window 1000]

N synthetic nodes (16-64 cpus, 64-512 GiB, a third with GPUs, four classes, each holding a
few of 20 images) and a queue of M jobs (1-8 cpus, 1-32 GiB, some GPU jobs, some of a
class, 20 images). The dispatcher's passes are replayed as it runs them: each pass takes
the next `window` queued jobs in order and places what fits (domain.placement.place_jobs)
until the nodes are full. Prints the time per placed job, and the time of a pass once the
cluster is full (what every pass costs while the queue waits).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kran.domain.placement import Candidate, NodeCapacity, has_room, place_jobs  # noqa: E402
from kran.domain.resources import Range, ResourceRequest, Resources  # noqa: E402

CLASSES = ("", "", "big", "gpu")


def make_nodes(n: int, rng: random.Random) -> list[NodeCapacity]:
    nodes = []
    for i in range(n):
        gpus = rng.choice((0, 0, 4))
        cls = "gpu" if gpus else rng.choice(CLASSES[:3])
        images = frozenset(f"img{rng.randrange(20)}" for _ in range(3))
        total = Resources(rng.choice((16, 32, 64)) * 1000, rng.choice((64, 128, 512)) * 1024, gpus, 10**6)
        nodes.append(NodeCapacity(f"n{i}", total, node_class=cls, images=images))
    return nodes


def make_jobs(m: int, rng: random.Random) -> list[Candidate]:
    out = []
    for j in range(m):
        cpus = rng.choice((1, 1, 2, 4, 8)) * 1000
        gpus = 1 if rng.random() < 0.05 else 0
        cls = "gpu" if gpus else rng.choice((None, None, None, "big"))
        mem = rng.choice((1, 4, 32)) * 1024
        req = ResourceRequest(Range(cpus, cpus), Range(mem, mem), Range(gpus, gpus), Range(0, 0))
        out.append(Candidate(j, req, 0.0, None, cls, f"img{rng.randrange(20)}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--queued", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=1000)
    args = ap.parse_args()
    rng = random.Random(1)
    nodes, queue = make_nodes(args.nodes, rng), make_jobs(args.queued, rng)
    placed, passes, offset = 0, 0, 0
    started = time.perf_counter()
    while offset < len(queue) and any(has_room(n) for n in nodes):
        window = queue[offset : offset + args.window]
        placement = place_jobs(window, nodes, reserve_after_s=3600.0)
        by_id = {n.node_id: n for n in nodes}
        for a in placement.assignments:
            by_id[a.node_id].allocated = by_id[a.node_id].allocated + a.allocation
        placed += len(placement.assignments)
        passes += 1
        offset += args.window
        if not placement.assignments:
            break
    spent = time.perf_counter() - started
    full_started = time.perf_counter()
    place_jobs(queue[offset : offset + args.window], nodes, reserve_after_s=3600.0)
    full = time.perf_counter() - full_started
    print(f"{args.nodes} nodes, {args.queued} queued, window {args.window}: {placed} placed in {passes} passes")
    print(f"  per placed job: {spent / max(placed, 1) * 1000:.3f} ms ({spent:.2f} s in all)")
    print(f"  a pass of {args.window} once the nodes are full: {full * 1000:.1f} ms")


if __name__ == "__main__":
    main()
