"""Swarm engine: each attempt one `replicated-job` service, pinned to the node kran chose.

Swarm gives membership, execution and logs; kran keeps the queue, placement, retries and
history. Around the engine's known job bugs (../shared/notes/docker-here.md): one service
per attempt with an idempotent name (`kran-<instance>-<job>-<attempt>`), restart
condition none (kran retries), labels to find them again after a restart, services
removed once their result and logs are stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, NotFound
from docker.types import Mount, Resources, RestartPolicy, ServiceMode

from kran.adapters.engines.containers import (
    ContainerPlan,
    Handles,
    Sandbox,
    create_once,
    docker_client,
    docker_time,
    explain,
    plan_container,
    seal,
    unreachable,
)
from kran.adapters.engines.docker_events import unix_socket
from kran.adapters.engines.process import read_exit_code, write_exit_code
from kran.adapters.engines.swarm_nodes import TO_SWARM, Returns, node_info
from kran.adapters.engines.swarm_writes import NodeWrites
from kran.domain.accounting import Usage
from kran.domain.cluster import NodeInfo
from kran.domain.outages import FREED_S, SIGNALLED, hms, reported_on_return
from kran.domain.retry import AttemptEnd
from kran.errors import EngineError, EngineUnavailable, InvalidInput
from kran.errors import NotFound as KranNotFound
from kran.ports import AttemptRef, EngineCapabilities, LaunchSpec

PREFIX = "swarm:"
HANDLES = Handles(PREFIX)
FINAL = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
NOT_STARTED = {"new", "pending", "allocated"}  # not yet given to a node
CHECK_EVERY_S = 0.2
NODES_EVERY_S = 2.0
PROBE_TIMEOUT_S = 5


class SwarmEngine:
    # app volumes are loop mounts on the server's machine: not on a swarm's nodes (yet)
    capabilities = EngineCapabilities(host_processes=False, containers=True, volumes=False, leaves_containers=True)

    def __init__(
        self,
        instance: str,
        base_url: str | None = None,
        kill_grace_s: float = 10.0,
        sandbox: Sandbox | None = None,
        disk_mb: int = 10**7,
    ) -> None:
        self.instance = instance
        self.kill_grace_s = kill_grace_s
        self.sandbox = sandbox or Sandbox()
        self.disk_mb = disk_mb
        self._base_url = base_url
        self._client: Any = None
        self._probe_client: Any = None
        self._lock = threading.Lock()
        self._tasks: tuple[float, dict[str, dict[str, Any]]] = (0.0, {})
        self._nodes: tuple[float, list[NodeInfo]] = (0.0, [])
        self._net: str | None = None
        self._health: tuple[float, str | None] = (0.0, None)
        self._writes = NodeWrites(lambda: docker_client(self._base_url), unix_socket(base_url))
        self._ended: dict[str, float] = {}  # service -> when its signalled end was first seen
        self._returns = Returns()  # nodes whose engine came back lately: settling

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(self._base_url)
            self._writes.start()  # a node's writes tell a restart (task_end)
        return self._client

    def close(self) -> None:
        """Stop following the manager's node events (the server's end does it by exiting)."""
        self._writes.close()

    # ---- inventory

    def nodes(self, fresh: bool = False) -> list[NodeInfo]:
        """The swarm's nodes; cached for a short while (every scheduler pass asks). A node
        whose engine came back less than SETTLE_S ago is `settling`: no new job goes there."""
        checked, nodes = self._nodes
        if fresh or time.monotonic() - checked > NODES_EVERY_S:
            try:
                nodes = [node_info(n.attrs, self.disk_mb) for n in self.client.nodes.list()]
                for n in nodes:
                    self._writes.saw(n.node_id, n.updated_at)
                    self._returns.listed(n)
            except (DockerException, OSError):
                nodes = [NodeInfo(**{**n.__dict__, "state": "unknown"}) for n in nodes]
            self._nodes = (time.monotonic(), nodes)
        return [self._returns.view(n) for n in nodes]

    def node(self, ref: str) -> Any:
        """A node by id, id prefix or hostname (InvalidInput when ambiguous)."""
        matches = [n for n in self.nodes(fresh=True) if ref in (n.node_id, n.hostname) or n.node_id.startswith(ref)]
        if not matches:
            raise KranNotFound(f"no node {ref!r} in the swarm")
        if len(matches) > 1:
            raise InvalidInput(f"{ref!r} names {len(matches)} nodes; use the node id", "node")
        return self.client.nodes.get(matches[0].node_id)

    def update_node(
        self, ref: str, availability: str | None = None, labels: dict[str, str | None] | None = None
    ) -> None:
        for tries_left in (2, 1, 0):  # the node's version moves when Swarm updates it meanwhile
            try:
                return self._update_node(ref, availability, labels)
            except APIError as e:
                if tries_left and "out of sequence" in str(e.explanation or e):
                    time.sleep(0.2)
                    continue
                raise EngineError(f"swarm refused the node update: {e.explanation or e}") from None

    def _update_node(self, ref: str, availability: str | None, labels: dict[str, str | None] | None) -> None:
        node = self.node(ref)
        spec = dict(node.attrs["Spec"])
        if availability:
            spec["Availability"] = TO_SWARM.get(availability, availability)
        if labels:
            merged = dict(spec.get("Labels") or {})
            for k, v in labels.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            spec["Labels"] = merged
        node.update(spec)
        self._nodes = (0.0, self._nodes[1])

    def remove_node(self, ref: str, force: bool) -> None:
        node = self.node(ref)
        try:
            node.remove(force=force)
        except APIError as e:
            raise EngineError(f"swarm refused to remove the node: {e.explanation or e}") from None
        self._nodes = (0.0, self._nodes[1])

    def join_command(self) -> str:
        try:
            swarm = self.client.swarm.attrs
            managers = [n for n in self.client.nodes.list(filters={"role": "manager"})]
        except (DockerException, OSError) as e:
            raise EngineError(f"swarm unreachable: {e}") from None
        addr = next(
            (m.attrs.get("ManagerStatus", {}).get("Addr") for m in managers if m.attrs.get("ManagerStatus")), None
        )
        return f"docker swarm join --token {swarm['JoinTokens']['Worker']} {addr}"

    # ---- engine

    def health(self) -> dict[str, str | None]:
        """The last probe's answer (the server probes every second)."""
        if self._health[0] == 0.0:
            self.probe()
        return {"swarm": self._health[1]}

    def probe(self) -> bool:
        reason = self._check_health()
        was = self._health
        if reason is not None and was[1] is not None and was[0] != 0.0:
            reason = was[1]  # still down: keep since when
        elif reason is not None:
            reason = f"{reason} (since {hms(time.time())} UTC)"
        self._health = (time.monotonic(), reason)
        return was[0] == 0.0 or (was[1] is None) != (reason is None)

    def warnings(self) -> list[str]:
        return []

    def unavailable(self, image: bool) -> str | None:
        return self.health()["swarm"] if image else "container jobs only"

    def handle_of_ended(self, attempt_dir: Path) -> str | None:
        return None  # a task that ended is still there for discover

    def _check_health(self) -> str | None:
        try:  # a client of its own with a short timeout: a hung manager is a down one
            if self._probe_client is None:
                self._probe_client = docker_client(self._base_url, timeout=PROBE_TIMEOUT_S)
            info = self._probe_client.info()
        except (DockerException, OSError, EngineError) as e:
            self._client = self._probe_client = None
            return f"swarm manager unreachable: {str(e)[:200]}"
        sw = info.get("Swarm") or {}
        if sw.get("LocalNodeState") != "active" or not sw.get("ControlAvailable"):
            return "this Docker Engine is not a swarm manager"
        return None

    def _network(self) -> str:
        """The overlay network of the jobs that ask for a network (one per instance)."""
        if self._net is not None:
            return self._net
        name = f"kran-{self.instance[:12]}-net"
        with self._lock:
            if not self.client.networks.list(names=[name]):
                try:
                    self.client.networks.create(
                        name, driver="overlay", attachable=False, labels={"kran.instance": self.instance}
                    )
                except APIError as e:
                    if e.status_code != 409:
                        raise
            self._net = name
        return name

    def launch(self, spec: LaunchSpec) -> str:
        plan = plan_container(spec, self.instance, self.sandbox, self.kill_grace_s)
        seal(plan, spec)  # the shared dir holds the attempt: its dirs the job's, as on the local engine
        try:
            service = create_once(
                lambda: self.client.services.create(plan.image, **self._service_args(plan)),
                lambda: self.client.services.get(plan.name),
            )
        except (APIError, DockerException, OSError) as e:
            if unreachable(e):  # the same attempt is launched again (create_once adopts its service)
                raise EngineUnavailable(f"swarm manager unreachable: {explain(e)}") from e
            raise EngineError(f"swarm could not start {plan.image}: {explain(e)}") from e
        self._tasks = (0.0, self._tasks[1])
        return HANDLES.of(service.id)

    def _service_args(self, plan: ContainerPlan) -> dict[str, Any]:
        """The plan, as `services.create` takes it: a one-task job pinned to its node."""
        mounts = [Mount(b.target, b.source, type="bind", read_only=b.read_only) for b in plan.binds]
        mounts += [Mount(t, None, type="tmpfs", tmpfs_size=mb << 20) for t, mb in plan.tmpfs_mb.items()]
        # limits only: kran accounts for reservations itself. Swarm's constraint enforcer
        # counts completed job tasks' reservations against the node on every node update
        # and then rejects running tasks (moby#52652).
        resources = Resources(
            cpu_limit=plan.millicpus * 1_000_000,
            mem_limit=plan.mem_mb << 20,
            generic_resources={"gpu": plan.gpus} if plan.gpus else None,
        )
        resources["Limits"]["Pids"] = plan.pids_limit  # API 1.41; the SDK has no argument for it
        return {
            # Args, as `docker run IMAGE ARGV`: the image's ENTRYPOINT stays (Command would replace it)
            "args": list(plan.args),
            "name": plan.name,
            "labels": plan.labels,
            # on the task containers too: Swarm leaves them behind (moby#42789), GC finds them so
            "container_labels": plan.container_labels,
            "env": list(plan.env),
            "workdir": plan.workdir,
            "mounts": mounts,
            "user": plan.user,
            "mode": ServiceMode("replicated-job", concurrency=1, replicas=1),
            "restart_policy": RestartPolicy(condition="none"),
            "constraints": [f"node.id=={plan.node}"] if plan.node and plan.node != "local" else [],
            "resources": resources,
            # no network: none attached, the task has only its loopback (as network_mode
            # "none"); an overlay's attach cost most of a short job's time (issue 23)
            "networks": [self._network()] if plan.network else [],
            "init": plan.init,
            "cap_drop": list(plan.cap_drop),
            "read_only": plan.read_only,
            # API 1.44 (Docker 25); an older engine ignores it: set no-new-privileges in its daemon.json
            "privileges": {"NoNewPrivileges": True} if plan.no_new_privileges else None,
            "stop_grace_period": int(plan.grace_s * 1e9),
        }

    def _task_index(self) -> dict[str, dict[str, Any]]:
        """Service id -> its (latest) task, refreshed at most every CHECK_EVERY_S."""
        checked, index = self._tasks
        if time.monotonic() - checked < CHECK_EVERY_S:
            return index
        tasks = self.client.api.tasks(filters={"label": f"kran.instance={self.instance}"})
        # task labels are the container's; filter by service instead when they lack ours
        if not tasks:
            ids = [s.id for s in self._ours()]
            tasks = self.client.api.tasks(filters={"service": ids}) if ids else []
        index = {}
        for t in sorted(tasks, key=lambda t: t.get("CreatedAt", "")):
            index[t["ServiceID"]] = t
        self._tasks = (time.monotonic(), index)
        return index

    def _ours(self) -> list[Any]:
        return list(self.client.services.list(filters={"label": f"kran.instance={self.instance}"}))

    def check(self, refs: Sequence[AttemptRef]) -> dict[tuple[int, int], AttemptEnd]:
        mine = [r for r in refs if HANDLES.owns(r.handle)]
        if not mine:
            return {}
        try:
            before = self._tasks[0]
            index = self._task_index()
            if self._tasks[0] == before:
                return {}  # nothing new since the last look
            services = {s.id: s.attrs for s in self._ours()}
        except (DockerException, OSError):
            return {}  # the manager is away: nothing can be said now
        nodes = self.nodes()
        if any(_signalled(index.get(HANDLES.object_id(r.handle) if r.handle else "")) for r in mine):
            nodes = self.nodes(fresh=True)  # when each node was last written tells a restart (task_end)
        down = {n.node_id: n for n in nodes if n.state == "down"}
        by_id = {n.node_id: n for n in nodes}
        # drained or down as Swarm said it (not "unknown": a list that failed says nothing)
        closed = {n.node_id: n for n in nodes if n.availability != "active" or n.state == "down"}
        out = {}
        for ref in mine:
            sid = HANDLES.object_id(ref.handle) if ref.handle else ""
            task = index.get(sid)
            if sid not in services:
                code = read_exit_code(ref.attempt_dir)
                out[(ref.job_id, ref.attempt)] = (
                    AttemptEnd(code)
                    if code is not None
                    else AttemptEnd(None, error="the service vanished", vanished=True)
                )
                continue
            if task is None:
                continue
            state = task["Status"]["State"]
            if state in FINAL:
                network = bool(_template(services[sid]).get("Networks"))
                if network and _signalled(task):
                    first = self._ended.setdefault(sid, time.monotonic())
                    if time.monotonic() - first < FREED_S:
                        continue  # the node's attachment is freed just after: wait to see that write too
                self._ended.pop(sid, None)
                node = by_id.get(task.get("NodeID", ""))
                writes = self._writes.of(task.get("NodeID", ""))
                end = out[(ref.job_id, ref.attempt)] = task_end(task, node.hostname if node else "?", writes, network)
                if end.engine_fault:  # its engine restarted: it settles before it takes a job
                    self._returns.came_back(task.get("NodeID", ""), end.inferred)
            elif task.get("NodeID") in down:
                host = down[task["NodeID"]].hostname
                out[(ref.job_id, ref.attempt)] = AttemptEnd(
                    None, error=f"node {host} is down", vanished=True, engine_fault=f"node {host} is down"
                )
            elif state in NOT_STARTED and (node := closed.get(_placed_on(services[sid]) or "")) is not None:
                # placed there, then drained (or down) before Swarm gave it the task: it never
                # started and never will there; back to the queue (the service goes with collect)
                why = f"node {node.hostname} stopped taking jobs before this one started"
                out[(ref.job_id, ref.attempt)] = AttemptEnd(None, error=why, vanished=True, engine_fault=why)
        self._ended = {sid: t for sid, t in self._ended.items() if sid in services}
        return out

    def kill(self, ref: AttemptRef) -> None:
        """Save the logs so far, then remove the service (its task gets SIGTERM, then
        SIGKILL after the grace period)."""
        if not ref.handle:
            return
        try:
            service = self.client.services.get(HANDLES.object_id(ref.handle))
        except NotFound:
            return
        except (DockerException, OSError) as e:
            raise EngineError(f"could not stop the service: {explain(e)}") from e
        self._save_logs(service, ref)
        try:
            service.remove()
        except NotFound:
            pass

    def cheap_collect(self, ref: AttemptRef) -> bool:
        return False

    def cheap_launch(self, image: bool) -> bool:
        return False  # a service created over the API

    def collect(self, ref: AttemptRef) -> Usage:
        if not ref.handle:
            return Usage()
        try:
            service = self.client.services.get(HANDLES.object_id(ref.handle))
        except NotFound:
            service = None
        if service is not None:
            self._save_logs(service, ref)
            task = self._task_index().get(service.id)
            if task and read_exit_code(ref.attempt_dir) is None:
                code = (task["Status"].get("ContainerStatus") or {}).get("ExitCode")
                if task["Status"]["State"] in ("complete", "failed") and code is not None:
                    write_exit_code(ref.attempt_dir, int(code))
            try:
                service.remove()
            except NotFound:
                pass
        for name in ("stdout", "stderr"):
            (ref.attempt_dir / name).touch(exist_ok=True)
        return Usage()

    def _save_logs(self, service: Any, ref: AttemptRef) -> None:
        for stream in ("stdout", "stderr"):
            try:
                data = b"".join(service.logs(stdout=stream == "stdout", stderr=stream == "stderr"))
            except (DockerException, OSError):
                continue
            if data:
                (ref.attempt_dir / stream).write_bytes(data)

    def stream_logs(self, ref: AttemptRef, stream: str, follow: bool) -> Iterator[bytes]:
        """The service's log so far; with follow, new output every half second until the
        task ends (`service logs --follow` never ends for a finished job)."""
        if not ref.handle:
            return
        sid = HANDLES.object_id(ref.handle)
        sent = 0
        while True:
            try:
                service = self.client.services.get(sid)
                task = self._task_index().get(sid)
                done = task is not None and task["Status"]["State"] in FINAL
                data = b"".join(service.logs(stdout=stream == "stdout", stderr=stream == "stderr"))
            except (DockerException, OSError):
                return
            if len(data) > sent:
                yield data[sent:]
                sent = len(data)
            if not follow or done:
                return
            time.sleep(CHECK_EVERY_S)

    def discover(self) -> list[AttemptRef]:

        out = []
        for s in self._ours():
            labels = s.attrs["Spec"].get("Labels", {})
            try:
                out.append(
                    AttemptRef(
                        int(labels["kran.job"]),
                        int(labels["kran.attempt"]),
                        HANDLES.of(s.id),
                        Path(labels["kran.dir"]),
                    )
                )
            except (KeyError, ValueError):
                continue
        return out


def _signalled(task: dict[str, Any] | None) -> bool:
    """A task that failed with SIGTERM's or SIGKILL's exit code."""
    status = (task or {}).get("Status") or {}
    return status.get("State") == "failed" and (status.get("ContainerStatus") or {}).get("ExitCode") in SIGNALLED


def _template(service: dict[str, Any]) -> dict[str, Any]:
    return dict((service.get("Spec") or {}).get("TaskTemplate") or {})


def _placed_on(service: dict[str, Any]) -> str | None:
    """The node kran placed a service's task on (its `node.id==` constraint)."""
    placement = _template(service).get("Placement") or {}
    for c in placement.get("Constraints") or []:
        key, _, value = c.partition("==")
        if key.strip() == "node.id":
            return str(value).strip()
    return None


def task_end(task: dict[str, Any], host: str, writes: Sequence[float] = (), network: bool = False) -> AttemptEnd:
    """How a task that reached a final state ended (on node `host`, which the manager wrote
    at `writes`; `network`: the task is on an overlay network)."""
    status = task["Status"]
    state = status["State"]
    code = (status.get("ContainerStatus") or {}).get("ExitCode") if state in ("complete", "failed") else None
    err = status.get("Err") if state != "complete" else None
    if state == "rejected":
        err = f"rejected by the node: {err}"
    if state == "failed" and str(err).startswith("No such container"):
        # the node's daemon went away and took the container: its agent says so when back
        why = f"the docker engine of node {host} restarted (the container went with it)"
        return AttemptEnd(None, error=why, vanished=True, engine_fault=why)
    if state == "failed" and reported_on_return(
        code, docker_time(task.get("CreatedAt")), docker_time(task.get("UpdatedAt")), writes, network
    ):
        why = f"the docker engine of node {host} restarted (exit {code} reported as the node came back)"
        return AttemptEnd(code, error=err or None, engine_fault=why, inferred=True)
    return AttemptEnd(code, error=err or None)
