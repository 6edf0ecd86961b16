"""The image manager against a real registry (htpasswd auth), on the local engine and on
the 3-node swarm: sizes and classes, credentials, pulling with progress, pull timeout,
heavyweight routing, locality, warm, pins and disk GC."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HEAVY_BYTES, ServerProc, cli_for
from tests.registry import PASSWORD, USER, StallingRegistry

pytestmark = pytest.mark.timeout(600)


def _login(kran: Any, host: str) -> None:
    r = kran("registry", "login", host, "--username", USER, "--password-stdin", input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output


def test_sizes_classes_and_credentials(make_server: Any, registry: Any, docker_client: Any) -> None:
    server: ServerProc = make_server(KRAN_IMAGE_HEAVYWEIGHT_THRESHOLD="2M", KRAN_IMAGE_PULL_TIMEOUT_S="3")
    kran = cli_for(server)
    host = registry.host
    r = kran("image", "inspect", f"{host}/busybox")
    assert r.exit_code != 0 and "unauthorized" in r.output
    r = kran("registry", "login", host, "--username", USER, "--password-stdin", input="wrong\n")
    assert r.exit_code != 0 and "refused the credentials" in r.output
    _login(kran, host)
    listed = kran("registry", "list").output
    assert host in listed and USER in listed and PASSWORD not in listed
    with server.api() as c:
        assert PASSWORD not in c.get("/api/v1/registries").text
    assert PASSWORD not in server.log.read_text()

    small = json.loads(kran("image", "inspect", f"{host}/busybox", "-o", "json").output)
    heavy = json.loads(kran("image", "inspect", f"{host}/heavy:latest", "-o", "json").output)
    multi = json.loads(kran("image", "inspect", f"{host}/multi", "-o", "json").output)
    assert 500_000 < small["size"] < 2 << 20 and small["class"] is None
    assert heavy["size"] > HEAVY_BYTES and heavy["class"] == "heavyweight"
    # a manifest list: the amd64 entry (heavy) is what counts
    assert multi["index_digest"] and multi["digest"] == heavy["digest"] and multi["class"] == "heavyweight"
    r = kran("image", "inspect", f"{host}/nope:1")
    assert r.exit_code != 0 and "not found" in r.output

    try:
        _local_engine_pulls(server, host, small)
    finally:
        try:
            docker_client.images.remove(f"{host}/busybox:latest", force=True)
        except Exception:
            pass


def _local_engine_pulls(server: ServerProc, host: str, small: dict[str, Any]) -> None:
    with server.api() as c:
        # a registry image on the local engine: pulled (the job passes through `pulling`), then run
        job = c.post("/api/v1/jobs", json={"image": f"{host}/busybox:latest", "command": ["true"]}).json()["id"]
        done = server.wait_state(job, {"succeeded", "failed"})
        assert done["state"] == "succeeded", done["reason"]
        assert done["image_digest"] == small["digest"] and done["image_class"] is None
        states = [e["to"] for e in c.get("/api/v1/events", params={"job": job}).json()["events"]]
        assert "pulling" in states and states.index("pulling") < states.index("running")
        # a heavyweight image needs a heavyweight node: this machine is none
        job = c.post("/api/v1/jobs", json={"image": f"{host}/heavy:latest", "command": ["true"]}).json()["id"]
        got = c.get(f"/api/v1/jobs/{job}").json()
        assert (
            got["node_class"] == "heavyweight" and "no schedulable node of class heavyweight" in got["waiting_because"]
        )
        c.post(f"/api/v1/jobs/{job}/kill")
        # an unknown image is refused at submit, with the registry's answer
        r = c.post("/api/v1/jobs", json={"image": f"{host}/nope:1", "command": ["true"]})
        assert r.status_code == 422 and "not found" in r.json()["error"]
        # a schedule's job is classified when it is added, as a submit's (its fires had no
        # class: a heavyweight image went to any node; an unknown one failed at each fire)
        heavy_job = {"image": f"{host}/heavy:latest", "command": ["true"]}
        c.post("/api/v1/schedules", json={"name": "heavy", "cron": "0 3 * * *", "job": heavy_job}).raise_for_status()
        fired = c.post("/api/v1/schedules/heavy/run-now").json()["job_id"]
        assert c.get(f"/api/v1/jobs/{fired}").json()["node_class"] == "heavyweight"
        c.post(f"/api/v1/jobs/{fired}/kill")
        nope = {"image": f"{host}/nope:1", "command": ["true"]}
        r = c.post("/api/v1/schedules", json={"name": "nope", "cron": "0 3 * * *", "job": nope})
        assert r.status_code == 422 and "not found" in r.json()["error"]

        # a registry that never sends the layers: the pull times out, the attempt fails with why
        stall = StallingRegistry("127.0.0.1")
        try:
            job = c.post("/api/v1/jobs", json={"image": f"{stall.host}/slow:1", "command": ["true"]}).json()["id"]
            done = server.wait_state(job, {"failed"}, timeout=60)
            assert "timed out after 3s" in done["reason"] and stall.host in done["reason"]
        finally:
            stall.stop()


@pytest.fixture
def swarm_images_server(make_server: Any, swarm: Any, swarm_registry: Any, tmp_path: Path) -> ServerProc:
    hosts = ",".join(f"{n.name}={n.sock}" for n in swarm.nodes)
    server: ServerProc = make_server(
        KRAN_SERVER_ENGINE="swarm",
        KRAN_LOCAL_DOCKER_HOST=swarm.manager.sock,
        KRAN_CLUSTER_SHARED_DIR=str(tmp_path),
        KRAN_CLUSTER_NODE_DOCKER_HOSTS=hosts,
        KRAN_IMAGE_HEAVYWEIGHT_THRESHOLD="2M",
        KRAN_IMAGE_GC_INTERVAL_S="3600",
        KRAN_IMAGE_INSECURE_REGISTRIES=swarm_registry.host,
        KRAN_LOCAL_JOB_USER="",
    )
    _login(cli_for(server), swarm_registry.host)
    return server


def _node_refs(node: Any) -> str:
    return node.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout


def test_on_the_swarm_routing_locality_warm_and_gc(
    swarm_images_server: ServerProc, swarm: Any, swarm_registry: Any
) -> None:
    server, kran, host = swarm_images_server, cli_for(swarm_images_server), swarm_registry.host
    small, heavy = f"{host}/busybox:latest", f"{host}/heavy:latest"
    sw0, sw1, sw2 = swarm.nodes
    try:
        assert kran("node", "label", sw2.name, "kran.class=heavyweight").exit_code == 0
        with server.api() as c:
            # heavyweight image -> class heavyweight -> the heavyweight node, pulled there first
            job = c.post("/api/v1/jobs", json={"image": heavy, "command": ["true"], "cpus": "1"}).json()["id"]
            done = server.wait_state(job, {"succeeded", "failed"}, timeout=90)
            assert done["state"] == "succeeded", done["reason"]
            assert done["node"]["hostname"] == sw2.name and done["image_class"] == "heavyweight"
            assert "pulling" in [e["to"] for e in c.get("/api/v1/events", params={"job": job}).json()["events"]]

            # warm on one node, then locality: a job goes where its image already is
            r = kran("image", "warm", small, "--nodes", sw1.name)
            assert r.exit_code == 0, r.output
            assert small in _node_refs(sw1) and small not in _node_refs(sw0)
            for i in range(3):
                job = c.post("/api/v1/jobs", json={"image": small, "command": ["true"], "cpus": "1"}).json()["id"]
                got = server.wait_state(job, {"succeeded"}, timeout=60)["node"]["hostname"]
                assert got == sw1.name, (i, kran("image", "status", small).output)

            # warm everywhere, in parallel; status per node
            r = kran("image", "warm", heavy)
            assert r.exit_code == 0, r.output
            status = json.loads(kran("image", "status", heavy, "-o", "json").output)
            assert {s["hostname"]: s["present"] for s in status} == {sw0.name: True, sw1.name: True, sw2.name: True}
            info = json.loads(kran("image", "inspect", heavy, "-o", "json").output)
            assert len(info["nodes"]) == 3

            # GC: pinned and in-use images stay; the rest goes, least recently used first
            assert kran("image", "pin", "kran-test/busybox:latest").exit_code == 0
            job = c.post("/api/v1/jobs", json={"image": heavy, "command": ["sleep", "30"]}).json()["id"]
            server.wait_state(job, {"running"}, timeout=60)
            on = c.get(f"/api/v1/jobs/{job}").json()["node"]["hostname"]
            node = next(n for n in swarm.nodes if n.name == on)
            r = kran("image", "gc", "--dry-run", "--target", "0", "--node", on, "-o", "json")
            listed = [ref for row in json.loads(r.output) for ref in row["refs"]]
            assert heavy not in listed and "kran-test/busybox:latest" not in listed
            before = _node_refs(node)
            r = kran("image", "gc", "--target", "0", "--node", on, "-o", "json")
            assert r.exit_code == 0, r.output
            after = _node_refs(node)
            assert heavy in after and "kran-test/busybox:latest" in after
            assert (small in before) <= (small not in after)  # removed where it was
            c.post(f"/api/v1/jobs/{job}/kill")
            server.wait_state(job, {"killed"}, timeout=60)
    finally:
        kran("node", "label", sw2.name, "kran.class-")
        for n in swarm.nodes:
            n.docker("rmi", small, heavy, check=False)
        time.sleep(0.1)


def test_gc_removes_the_task_containers_swarm_leaves(swarm_images_server: ServerProc, swarm: Any) -> None:
    server, kran = swarm_images_server, cli_for(swarm_images_server)
    with server.api() as c:
        jobs = [
            c.post("/api/v1/jobs", json={"image": "kran-test/busybox:latest", "command": ["true"]}).json()["id"]
            for _ in range(3)
        ]
        for j in jobs:
            server.wait_state(j, {"succeeded"}, timeout=60)

        instance = c.get("/api/v1/status").json()["instance"]

    def left() -> int:  # this server's (other tests' servers leave their own)
        label = f"label=kran.instance={instance}"
        return sum(
            len(n.docker("ps", "-aq", "--filter", "status=exited", "--filter", label).stdout.split())
            for n in swarm.nodes
        )

    assert left() >= 1  # Swarm keeps finished job tasks' containers (moby#42789)
    assert kran("image", "gc", "--dry-run").exit_code == 0  # a dry run leaves them
    assert left() >= 1
    assert kran("image", "gc").exit_code == 0
    assert left() == 0


def test_an_image_on_the_node_is_not_pulled_again(server: ServerProc, test_image: str) -> None:
    untagged = test_image.removesuffix(":latest")  # listed by the engine as name:latest
    with server.api() as c:
        job = c.post("/api/v1/jobs", json={"image": untagged, "command": ["true"]}).json()["id"]
        done = server.wait_state(job, {"succeeded", "failed"})
        assert done["state"] == "succeeded", done["reason"]
        assert "pulling" not in [e["to"] for e in c.get("/api/v1/events", params={"job": job}).json()["events"]]


MIB = 1 << 20


def _build(node: Any, tag: str, parent: str, size: int, tmp: Path) -> None:
    """An image of `parent` plus one layer of `size` random bytes, built on the node."""
    ctx = tmp / f"ctx-{tag.replace('/', '_').replace(':', '_')}-{time.monotonic_ns()}"
    ctx.mkdir()
    (ctx / "data").write_bytes(os.urandom(size))
    (ctx / "Dockerfile").write_text(f"FROM {parent}\nCOPY data /data-{ctx.name}\n")
    node.docker("build", "-q", "-t", tag, str(ctx))


@pytest.mark.parametrize("engine", ["local", "swarm"])
def test_gc_counts_shared_layers_once(engine: str, make_server: Any, swarm: Any, tmp_path: Path) -> None:
    """Images on one base, one tagged twice, a dangling one: GC counts each layer once, so
    a dry run lists everything removable and a real GC gets to its target in one pass,
    measured by Docker's own `system df` (the local engine on a Docker Engine of its own,
    so the host's images of other tests stay)."""
    import docker

    if engine == "swarm":
        node, name = swarm.nodes[0], swarm.nodes[0].name
        hosts = ",".join(f"{n.name}={n.sock}" for n in swarm.nodes)
        server = make_server(
            KRAN_SERVER_ENGINE="swarm",
            KRAN_LOCAL_DOCKER_HOST=swarm.manager.sock,
            KRAN_CLUSTER_SHARED_DIR=str(tmp_path),
            KRAN_CLUSTER_NODE_DOCKER_HOSTS=hosts,
            KRAN_IMAGE_GC_INTERVAL_S="3600",
            KRAN_LOCAL_JOB_USER="",
        )
    else:
        node, name = swarm.nodes[1], "local"
        server = make_server(KRAN_LOCAL_DOCKER_HOST=swarm.nodes[1].sock, KRAN_IMAGE_GC_INTERVAL_S="3600")
    kran = cli_for(server)
    layers = docker.DockerClient(base_url=node.sock)

    def df() -> int:
        return int(layers.df()["LayersSize"])

    others = {r for r in _node_refs(node).split() if "<none>" not in r}
    ours = [f"kran-gc/{x}:1" for x in ("base", "a", "a2", "b", "c", "x")]
    try:
        for ref in others:  # the images other tests need on the node stay
            assert kran("image", "pin", ref).exit_code == 0
        _build(node, "kran-gc/base:1", "kran-test/busybox:latest", 2 * MIB, tmp_path)
        for x in ("a", "b", "c"):
            _build(node, f"kran-gc/{x}:1", "kran-gc/base:1", MIB // 2, tmp_path)
        node.docker("tag", "kran-gc/a:1", "kran-gc/a2:1")
        _build(node, "kran-gc/x:1", "kran-test/busybox:latest", MIB // 4, tmp_path)
        _build(node, "kran-gc/x:1", "kran-test/busybox:latest", MIB // 4, tmp_path)  # the first one: <none>
        assert kran("image", "pin", "kran-gc/c:1").exit_code == 0
        node.docker("create", "--name", "kran-gc-hold", "kran-gc/b:1", "true")

        def gc(dry_run: bool, target: int) -> dict[str, Any]:
            with server.api() as c:
                r = c.post("/api/v1/images/gc", json={"dry_run": dry_run, "target": str(target), "node": name})
                assert r.status_code == 200, r.text
                return dict(r.json())

        # a dry run to 0 lists everything not pinned, not in use, not being pulled
        before = df()
        plan = gc(True, 0)
        listed = {ref for row in plan["removed"] for ref in row["refs"]}
        assert {"kran-gc/base:1", "kran-gc/a:1", "kran-gc/a2:1", "kran-gc/x:1"} <= listed
        assert not listed & ({"kran-gc/b:1", "kran-gc/c:1"} | others)
        assert any(not row["refs"] for row in plan["removed"])  # the dangling one
        freed = {ref: row["freed"] for row in plan["removed"] for ref in row["refs"]}
        assert freed["kran-gc/a:1"] == MIB // 2 and freed["kran-gc/base:1"] == 0  # b and c keep the base
        (summary,) = plan["nodes"]
        assert summary["before"] == before and df() == before  # measured as Docker does; nothing removed
        assert sum(row["freed"] for row in plan["removed"]) == before - summary["after"]
        assert "pinned" in summary["short"] and "in use by a container" in summary["short"]
        with server.api() as c:  # the gauge counts the same way
            metrics = c.get("/metrics").text
        gauge = re.search(rf'^kran_image_disk_bytes{{node="{summary["node"]}"}} (\S+)$', metrics, re.M)
        assert gauge and float(gauge.group(1)) == before, metrics[-2000:]

        # a real GC to a target only the base's removal reaches gets there in one pass
        node.docker("rm", "kran-gc-hold")
        assert kran("image", "unpin", "kran-gc/c:1").exit_code == 0
        target = before - (2 * MIB + 3 * (MIB // 2))
        done = gc(False, target)
        after = df()
        assert after <= target, done
        assert before - after == sum(row["freed"] for row in done["removed"]) and done["nodes"][0]["after"] == after
        assert not any(row.get("error") for row in done["removed"]), done
        gone = {ref for row in done["removed"] for ref in row["refs"]}
        assert gone & set(_node_refs(node).split()) == set()

        # and to 0: only what is pinned is left, and the answer says so
        done = gc(False, 0)
        left = set(_node_refs(node).split()) - {"<none>:<none>"}
        assert left == others and not left & set(ours)
        assert done["nodes"][0]["after"] == df() and "pinned" in done["nodes"][0]["short"]
    finally:
        node.docker("rm", "-f", "kran-gc-hold", check=False)
        node.docker("rmi", "-f", *ours, check=False)
