"""kran on a real 3-node Docker Swarm: placement, classes, capacity, drain, node failure,
kill -9 of the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc, cli_for

pytestmark = pytest.mark.timeout(600)


def _nodes(c: Any) -> dict[str, dict[str, Any]]:
    return {n["hostname"]: n for n in c.get("/api/v1/nodes").json()["nodes"]}


def _submit(c: Any, image: str, sh: str, **extra: Any) -> int:
    r = c.post("/api/v1/jobs", json={"image": image, "command": ["sh", "-c", sh], "cpus": "1", "mem": "64", **extra})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_refuses_without_a_shared_dir(tmp_path: Path) -> None:
    env = {**os.environ, "KRAN_SERVER_ENGINE": "swarm", "HOME": str(tmp_path)}
    r = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "kran"), "serve", "--data-dir", str(tmp_path / "d")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0 and "cluster.shared_dir" in (r.stderr + r.stdout)


def test_runs_on_the_nodes_with_classes_capacity_and_drain(
    swarm_server: ServerProc, swarm: Any, test_image: str
) -> None:
    server = swarm_server
    kran = cli_for(server)
    with server.api() as c:
        nodes = _nodes(c)
        assert sorted(nodes) == ["kran-sw0", "kran-sw1", "kran-sw2"]
        assert all(n["state"] == "ready" and n["total"]["cpus"] > 0 for n in nodes.values())

        # a job runs in a container on a node, its output and exit code come back
        job = server.wait_state(_submit(c, test_image, "echo hello from $(hostname); exit 3"), {"failed"})
        assert job["exit_code"] == 3 and job["node"]["hostname"] in nodes
        assert c.get(f"/api/v1/jobs/{job['id']}/logs").content.startswith(b"hello from")
        # no network: no interface but the loopback, no route
        job = server.wait_state(_submit(c, test_image, "ip -o link | cut -d: -f2; ip route"), {"succeeded"})
        assert c.get(f"/api/v1/jobs/{job['id']}/logs").text.split() == ["lo"]
        # with one: an overlay network with a route out
        job = server.wait_state(_submit(c, test_image, "ip route | grep -c default", network=True), {"succeeded"})
        assert c.get(f"/api/v1/jobs/{job['id']}/logs").text.strip() == "1"

        # heavyweight jobs only land on heavyweight nodes
        assert kran("node", "label", "kran-sw2", "kran.class=heavyweight").exit_code == 0
        heavy = [_submit(c, test_image, "sleep 0.2", node_class="heavyweight") for _ in range(4)]
        for j in heavy:
            assert server.wait_state(j, {"succeeded"})["node"]["hostname"] == "kran-sw2"
        assert _nodes(c)["kran-sw2"]["class"] == "heavyweight"
        r = c.post("/api/v1/jobs", json={"image": test_image, "command": ["true"], "node_class": "gpu"})
        waiting = c.get(f"/api/v1/jobs/{r.json()['id']}").json()
        assert waiting["state"] == "queued" and "no schedulable node of class gpu" in waiting["waiting_because"]
        c.post(f"/api/v1/jobs/{r.json()['id']}/kill")

        # a burst of 50 jobs: never more cpus in use on a node than it has
        burst = [_submit(c, test_image, "sleep 1") for _ in range(50)]
        most: Counter[str] = Counter()
        cpus = {n["id"]: n["total"]["cpus"] for n in nodes.values()}
        deadline = time.time() + 240
        while True:
            assert time.time() < deadline, "the burst did not finish"
            running = c.get("/api/v1/jobs", params={"state": "starting,running", "limit": 1000}).json()["jobs"]
            per_node = Counter(j["node"]["id"] for j in running)
            for node_id, n in per_node.items():
                assert n <= cpus[node_id], f"{n} jobs of 1 cpu on a node with {cpus[node_id]}"
                most[node_id] = max(most[node_id], n)
            if not running and all(c.get(f"/api/v1/jobs/{j}").json()["state"] == "succeeded" for j in burst[-3:]):
                break
            time.sleep(0.2)
        states = Counter(c.get(f"/api/v1/jobs/{j}").json()["state"] for j in burst)
        assert states == {"succeeded": 50}
        assert len(most) == 3  # spread over every node

        # drain: no new jobs there; running ones finish
        long = _submit(c, test_image, "echo started; sleep 3", node_class="heavyweight")
        server.wait_state(long, {"running"})
        deadline = time.time() + 60  # running in kran's eyes once its service exists; wait for the task itself
        while b"started" not in c.get(f"/api/v1/jobs/{long}/logs").content:
            assert time.time() < deadline, "the job's task did not start"
            time.sleep(0.2)
        drained = kran("node", "drain", "kran-sw2")
        assert drained.exit_code == 0, drained.output
        assert server.wait_state(long, {"succeeded"})["node"]["hostname"] == "kran-sw2"
        after = [_submit(c, test_image, "true") for _ in range(6)]
        assert all(server.wait_state(j, {"succeeded"})["node"]["hostname"] != "kran-sw2" for j in after)
        r = kran("nodes")
        assert "drain" in r.output and "heavyweight" in r.output
        assert kran("node", "activate", "kran-sw2").exit_code == 0
        assert kran("node", "label", "kran-sw2", "kran.class-").exit_code == 0
        assert "docker swarm join --token" in kran("node", "join-command").output
        r = kran("node", "remove", "kran-sw0")
        assert r.exit_code != 0  # a manager, and the swarm refuses: the error says why


def test_node_failure_loses_and_retries_elsewhere(swarm_server: ServerProc, swarm: Any, test_image: str) -> None:
    server = swarm_server
    victim = swarm.nodes[2]
    with server.api() as c:
        jobs = [_submit(c, test_image, "sleep 25", retries=1) for _ in range(6)]
        deadline = time.time() + 60
        on_victim: list[int] = []
        while not on_victim:
            assert time.time() < deadline, "no job landed on the victim node"
            for j in jobs:
                got = c.get(f"/api/v1/jobs/{j}").json()
                if got["state"] == "running" and got["node"]["hostname"] == victim.name:
                    on_victim.append(j)
            time.sleep(0.3)
        # the node dies: its dockerd, containerd and containers, all at once
        crashed = time.time()
        victim.crash()
        try:
            job = on_victim[0]
            while True:
                got = c.get(f"/api/v1/jobs/{job}").json()
                if got["attempts"][0]["state"] == "lost":
                    break
                assert time.time() - crashed < 30, f"not lost within 30 s: {got['attempts'][0]}"
                time.sleep(0.5)
            assert "down" in got["attempts"][0]["reason"]
            assert _nodes(c)[victim.name]["state"] == "down"
            done = server.wait_state(job, {"succeeded", "failed"}, timeout=90)
            assert done["state"] == "succeeded" and len(done["attempts"]) == 2
            assert done["node"]["hostname"] != victim.name
        finally:
            victim.start()
            swarm.wait_ready()


def test_kill_9_of_the_server_readopts_jobs_on_every_node(
    swarm_server: ServerProc, swarm: Any, test_image: str
) -> None:
    server = swarm_server
    since = str(int(time.time()) - 1)
    with server.api() as c:
        jobs = [_submit(c, test_image, "sleep 4", mem="32") for _ in range(6)]
        for j in jobs:
            server.wait_state(j, {"running"})
        hosts = {c.get(f"/api/v1/jobs/{j}").json()["node"]["hostname"] for j in jobs}
    assert len(hosts) >= 2
    server.kill9()
    server.start()
    with server.api() as c:
        for j in jobs:
            done = server.wait_state(j, {"succeeded"}, timeout=60)
            assert len(done["attempts"]) == 1
    # the swarm's own record: one service created per attempt, none launched twice
    created = swarm.manager.docker(
        "events", "--since", since, "--until", str(int(time.time()) + 1),
        "--filter", "type=service", "--filter", "event=create", "--format", "{{.Actor.Attributes.name}}",
    ).stdout.split()  # fmt: skip
    assert len(created) == len(set(created)) == len(jobs)
    # every attempt's service is removed once its result is stored (just after: allow a moment)
    deadline = time.monotonic() + 15
    while (left := swarm.manager.docker("service", "ls", "-q").stdout.split()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == []


@pytest.mark.parametrize("network", [False, True], ids=["no-network", "network"])
def test_a_node_daemon_restart_loses_no_job_and_runs_none_twice(
    swarm_server: ServerProc, swarm: Any, test_image: str, network: bool
) -> None:
    """One node's dockerd stopped (SIGTERM: it stops its tasks' containers) and started again
    5 s later, as a package upgrade does. The other nodes' jobs never notice; every job ends
    in a true state and none runs to its end twice. The node's jobs are re-queued without
    using a retry, whether its agent reported them gone ("No such container") or stopped
    ("non-zero exit (143)") as it registered again (docs/scheduling.md); jobs without a
    retry succeed too. A job that exits 143 by itself afterwards still fails as its own (with
    --network its task writes its node as it starts, which is not taken for a return)."""
    server = swarm_server
    victim = swarm.nodes[2]
    work = 'sleep 20; echo done > "$KRAN_WORKDIR/done"'
    small = {"cpus": "0.25", "mem": "32", "network": network}  # with a network: "exit (143)" reports more often
    with server.api() as c:
        jobs = [_submit(c, test_image, work, retries=1, **small) for _ in range(6)]
        once = [_submit(c, test_image, work, **small) for _ in range(3)]
        for j in jobs + once:
            server.wait_state(j, {"running"}, timeout=60)
        hosts = {j: c.get(f"/api/v1/jobs/{j}").json()["node"]["hostname"] for j in jobs + once}
        assert victim.name in hosts.values() and len(set(hosts.values())) == 3, hosts
        time.sleep(2)
        victim.stop()
        time.sleep(5)
        victim.start()
        done = [server.wait_state(j, {"succeeded", "failed", "lost", "killed"}, timeout=120) for j in jobs + once]
        swarm.wait_ready()
        own = server.wait_state(_submit(c, test_image, "kill -TERM $$", **small), {"succeeded", "failed"}, timeout=90)
        # alone on its node with --network, its end frees the node's attachment (a write of
        # the node just before the task's last update): still its own exit
        late = server.wait_state(_submit(c, test_image, "sleep 4; kill -TERM $$", **small), {"succeeded", "failed"})
    assert own["state"] == "failed" and own["exit_code"] == 143 and len(own["attempts"]) == 1, own
    assert late["state"] == "failed" and late["exit_code"] == 143 and len(late["attempts"]) == 1, late
    for job in done:
        markers = sum(
            (server.data_dir / "jobs" / str(job["id"]) / str(a["number"]) / "work" / "done").exists()
            for a in job["attempts"]
        )
        assert markers == (job["state"] == "succeeded"), job["attempts"]
        if hosts[job["id"]] != victim.name:
            assert job["state"] == "succeeded" and len(job["attempts"]) == 1, job
            continue
        # whether Swarm reported "No such container" or "non-zero exit (143)" as the node came
        # back: lost to the engine, re-queued without using a retry, succeeded on the next
        first = job["attempts"][0]
        assert "re-queued without using a retry" in first["reason"], job["attempts"]
        assert f"node {victim.name} restarted" in first["reason"] and job["state"] == "succeeded", (
            job["state"],
            job["attempts"],
        )
        # the node settles before it takes a job (given one in its first second back, a task
        # failed or never started), and the others have room
        assert job["attempts"][1]["node"] == job["node"]["id"] != first["node"], job["attempts"]
