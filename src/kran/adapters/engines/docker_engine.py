"""Docker engine: one container per attempt, through the docker SDK.

Containers are named `kran-<instance>-<job>-<attempt>` (so a repeated launch of the same
attempt finds the existing container instead of starting a second one) and labelled
with instance, job and attempt, which is how they are found again after a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, Mount

from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.containers import (
    ContainerPlan,
    Handles,
    Sandbox,
    create_once,
    docker_client,
    explain,
    plan_container,
    seal,
)
from kran.adapters.engines.process import read_exit_code, write_exit_code
from kran.domain.accounting import Usage
from kran.domain.retry import AttemptEnd
from kran.errors import EngineError
from kran.ports import AttemptRef, EngineCapabilities, LaunchSpec

PREFIX = "docker:"
HANDLES = Handles(PREFIX)


FINAL = ("exited", "dead")


class DockerEngine:
    capabilities = EngineCapabilities(host_processes=False, containers=True, volumes=True)

    def __init__(
        self,
        instance: str,
        base_url: str | None = None,
        kill_grace_s: float = 10.0,
        cgroups: Cgroups | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.cgroups = cgroups or Cgroups(None, "not configured")
        self.sandbox = sandbox or Sandbox()
        self.instance = instance
        self.kill_grace_s = kill_grace_s
        self._base_url = base_url
        self._client: Any = None
        self._health: tuple[float, str | None] = (0.0, "not checked yet")
        self._disk: tuple[float, int | None] = (0.0, None)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(self._base_url)
        return self._client

    def health(self) -> dict[str, str | None]:
        """Never blocks once checked: a stale answer is refreshed in the background."""
        checked, reason = self._health
        if checked == 0.0:
            self._check_health()
        elif time.monotonic() - checked > 5 and self._lock.acquire(blocking=False):
            threading.Thread(target=self._check_health, args=(True,), daemon=True).start()
        return {"docker": self._health[1]}

    def unavailable(self, image: bool) -> str | None:
        return self.health()["docker"] if image else "container jobs only"

    def handle_of_ended(self, attempt_dir: Path) -> str | None:
        return None  # a container that ended is still there for discover

    def _check_health(self, locked: bool = False) -> None:
        try:
            self.client.ping()
            reason = None
        except (DockerException, EngineError, OSError) as e:
            reason = f"Docker Engine unreachable: {str(e)[:200]}"
            self._client = None
        finally:
            if locked:
                self._lock.release()
        self._health = (time.monotonic(), reason)

    def image_disk_bytes(self) -> int | None:
        """Sum of image sizes (shared layers counted once per image), refreshed every 30 s."""
        checked, value = self._disk
        if time.monotonic() - checked > 30 and self.health()["docker"] is None:
            try:
                value = sum(int(i.attrs.get("Size", 0)) for i in self.client.images.list())
            except (DockerException, OSError):
                value = None
            self._disk = (time.monotonic(), value)
        return value

    def launch(self, spec: LaunchSpec) -> str:
        plan = plan_container(spec, self.instance, self.sandbox, self.kill_grace_s)
        seal(plan, spec)
        try:  # the image is on the node: the image manager pulled it (services.images.ensure_on_node)
            container = create_once(
                lambda: self.client.containers.create(plan.image, **self._create_args(plan, spec)),
                lambda: self.client.containers.get(plan.name),
            )
            if container.status == "created":
                container.start()
            return HANDLES.of(container.id)
        except ImageNotFound as e:
            raise EngineError(f"image {plan.image} is not on this node: {e.explanation or e}") from e
        except (APIError, DockerException) as e:
            raise EngineError(f"docker could not start {plan.image}: {explain(e)}") from e

    def _create_args(self, plan: ContainerPlan, spec: LaunchSpec) -> dict[str, Any]:
        """The plan, as `containers.create` takes it."""
        kwargs: dict[str, Any] = {
            "command": list(plan.args),
            "name": plan.name,
            "labels": plan.labels,
            "environment": list(plan.env),
            "working_dir": plan.workdir,
            "mounts": [Mount(b.target, b.source, type="bind", read_only=b.read_only) for b in plan.binds],
            "network_mode": "bridge" if plan.network else "none",
            "init": plan.init,
            "detach": True,
            "privileged": False,
            "cap_drop": list(plan.cap_drop),
            "security_opt": ["no-new-privileges"] if plan.no_new_privileges else [],
            "pids_limit": plan.pids_limit,
            "read_only": plan.read_only,
        }
        if plan.tmpfs_mb:
            kwargs["tmpfs"] = {t: f"rw,nosuid,nodev,size={mb}m" for t, mb in plan.tmpfs_mb.items()}
        if plan.user:
            kwargs["user"] = plan.user
        if self.cgroups.version is not None:  # the attempt's cgroup holds the container's: counters outlive it
            kwargs["cgroup_parent"] = "/" + self.cgroups.relative(self.instance, spec.job_id, spec.attempt)
        if plan.millicpus:
            kwargs["nano_cpus"] = plan.millicpus * 1_000_000
        if plan.mem_mb:
            kwargs["mem_limit"] = kwargs["memswap_limit"] = f"{plan.mem_mb}m"
        if plan.gpus:
            kwargs["device_requests"] = [DeviceRequest(count=plan.gpus, capabilities=[["gpu"]])]
        return kwargs

    def _ours(self) -> list[Any]:
        return list(self.client.containers.list(all=True, filters={"label": f"kran.instance={self.instance}"}))

    def check(self, refs: Sequence[AttemptRef]) -> dict[tuple[int, int], AttemptEnd]:
        mine = [r for r in refs if HANDLES.owns(r.handle)]
        if not mine:
            return {}
        try:
            by_id = {c.id: c for c in self._ours()}
        except (DockerException, OSError):
            return {}  # engine unreachable: nothing is known to have ended
        out = {}
        for ref in mine:
            assert ref.handle is not None
            c = by_id.get(HANDLES.object_id(ref.handle))
            if c is None:
                code = read_exit_code(ref.attempt_dir)  # collected before a restart
                out[(ref.job_id, ref.attempt)] = (
                    AttemptEnd(code)
                    if code is not None
                    else AttemptEnd(None, error="the job's container vanished", vanished=True)
                )
            elif c.status in FINAL:
                out[(ref.job_id, ref.attempt)] = _end_of(c)
        return out

    def kill(self, ref: AttemptRef) -> None:
        if not ref.handle:
            return
        try:
            c = self.client.containers.get(HANDLES.object_id(ref.handle))
            c.stop(timeout=int(self.kill_grace_s if ref.grace_s is None else ref.grace_s))
        except NotFound:
            pass
        except (DockerException, OSError) as e:
            raise EngineError(f"could not stop container: {explain(e)}") from e

    def cheap_collect(self, ref: AttemptRef) -> bool:
        return False  # copies logs over the API and removes the container

    def collect(self, ref: AttemptRef) -> Usage:
        rel = self.cgroups.relative(self.instance, ref.job_id, ref.attempt)
        if ref.handle:
            self._store_logs_and_remove(ref)
        usage = self.cgroups.usage(rel)
        self.cgroups.remove(rel)
        return usage

    def _store_logs_and_remove(self, ref: AttemptRef) -> None:
        assert ref.handle is not None
        try:
            c = self.client.containers.get(HANDLES.object_id(ref.handle))
        except NotFound:
            for name in ("stdout", "stderr"):
                (ref.attempt_dir / name).touch(exist_ok=True)
            return
        for name in ("stdout", "stderr"):
            data = c.logs(stdout=name == "stdout", stderr=name == "stderr")
            tmp = ref.attempt_dir / f"{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(ref.attempt_dir / name)
        end = _end_of(c)
        if end.exit_code is not None:
            write_exit_code(ref.attempt_dir, end.exit_code)
        c.remove(force=True)

    def stream_logs(self, ref: AttemptRef, stream: str, follow: bool) -> Iterator[bytes]:
        if not ref.handle:
            return
        try:
            c = self.client.containers.get(HANDLES.object_id(ref.handle))
            yield from c.logs(stdout=stream == "stdout", stderr=stream == "stderr", stream=True, follow=follow)
        except (NotFound, DockerException):
            return

    def discover(self) -> list[AttemptRef]:
        out = []
        for c in self._ours():
            labels = c.labels
            if c.status == "created":  # created before a crash, never started: finish the launch
                c.start()
            out.append(
                AttemptRef(
                    int(labels["kran.job"]),
                    int(labels["kran.attempt"]),
                    HANDLES.of(c.id),
                    Path(labels.get("kran.dir", "/nonexistent")),
                )
            )
        return out


def _end_of(c: Any) -> AttemptEnd:
    state = c.attrs.get("State")
    if not isinstance(state, dict):  # a list entry carries only the status word
        c.reload()
        state = c.attrs["State"]
    code = int(state.get("ExitCode", -1))
    if state.get("OOMKilled"):
        return AttemptEnd(code, error="out of memory (killed by the kernel)")
    if state.get("Error"):
        return AttemptEnd(code, error=str(state["Error"]))
    return AttemptEnd(code)
