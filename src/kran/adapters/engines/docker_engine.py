"""Docker engine: one container per attempt, through the docker SDK.

Containers are named `kran-<instance>-<job>-<attempt>` (so a repeated launch of the same
attempt finds the existing container instead of starting a second one) and labelled
with instance, job and attempt, which is how they are found again after a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, Mount

from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.ownership import effective_user, seal_attempt
from kran.adapters.engines.process import read_exit_code, write_exit_code
from kran.domain.accounting import Usage
from kran.domain.retry import AttemptEnd
from kran.errors import EngineError
from kran.ports import AttemptRef, EngineCapabilities, LaunchSpec

PREFIX = "docker:"


@dataclass(frozen=True)
class Sandbox:
    """How containers are confined (beyond the allocation's cpu and memory limits)."""

    run_as: tuple[int, int] | None = None  # uid, gid; None: the image's user
    read_only: bool = False
    pids_limit: int = 4096


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
            try:
                if self._base_url:
                    self._client = docker.DockerClient(base_url=self._base_url, timeout=60)
                else:
                    self._client = docker.from_env(timeout=60)
            except DockerException as e:
                raise EngineError(f"Docker Engine unreachable: {e}") from e
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

    def _name(self, job_id: int, attempt: int) -> str:
        return f"kran-{self.instance[:12]}-{job_id}-{attempt}"

    def launch(self, spec: LaunchSpec) -> str:
        assert spec.image is not None
        name = self._name(spec.job_id, spec.attempt)
        alloc = spec.allocation
        kwargs: dict[str, Any] = {
            "command": list(spec.argv),
            "name": name,
            "labels": {
                "kran.instance": self.instance,
                "kran.job": str(spec.job_id),
                "kran.attempt": str(spec.attempt),
                "kran.dir": str(spec.attempt_dir),
            },
            "environment": spec.env,
            "working_dir": spec.cwd or str(spec.workdir),
            "volumes": {str(spec.workdir): {"bind": str(spec.workdir), "mode": "rw"}},
            "network_mode": "bridge" if spec.network else "none",
            "init": True,
            "detach": True,
            # never privileged, no capabilities, no privilege gain, bounded processes
            "privileged": False,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": self.sandbox.pids_limit,
        }
        for m in spec.mounts:
            kwargs["volumes"][str(m)] = {"bind": str(m), "mode": "rw"}
        if spec.binds:
            kwargs["mounts"] = [Mount(t, h, type="bind", read_only=not w) for h, t, w in spec.binds]
        run_as = effective_user(spec, self.sandbox.run_as)
        if run_as:
            seal_attempt(spec, run_as)
            kwargs["user"] = f"{run_as[0]}:{run_as[1]}"
        if self.sandbox.read_only:
            kwargs["read_only"] = True
            if not any(t == "/tmp" for _, t, _ in spec.binds):
                kwargs["tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=256m"}
        if self.cgroups.version is not None:  # the attempt's cgroup holds the container's: counters outlive it
            kwargs["cgroup_parent"] = "/" + self.cgroups.relative(self.instance, spec.job_id, spec.attempt)
        if alloc.millicpus:
            kwargs["nano_cpus"] = alloc.millicpus * 1_000_000
        if alloc.mem_mb:
            kwargs["mem_limit"] = f"{alloc.mem_mb}m"
            kwargs["memswap_limit"] = f"{alloc.mem_mb}m"
        if alloc.gpus:
            kwargs["device_requests"] = [DeviceRequest(count=alloc.gpus, capabilities=[["gpu"]])]
        try:
            try:  # the image is on the node: the image manager pulled it (services.images.ensure_on_node)
                container = self.client.containers.create(spec.image, **kwargs)
            except ImageNotFound:  # an APIError too, but not the 409 below
                raise
            except APIError as e:
                if e.status_code != 409:  # 409: this attempt's container exists already
                    raise
                container = self.client.containers.get(name)
            if container.status == "created":
                container.start()
            return f"{PREFIX}{container.id}"
        except ImageNotFound as e:
            raise EngineError(f"image {spec.image} is not on this node: {e.explanation or e}") from e
        except (APIError, DockerException) as e:
            raise EngineError(f"docker could not start {spec.image}: {_explain(e)}") from e

    def _ours(self) -> list[Any]:
        return list(self.client.containers.list(all=True, filters={"label": f"kran.instance={self.instance}"}))

    def check(self, refs: Sequence[AttemptRef]) -> dict[tuple[int, int], AttemptEnd]:
        mine = [r for r in refs if r.handle and r.handle.startswith(PREFIX)]
        if not mine:
            return {}
        try:
            by_id = {c.id: c for c in self._ours()}
        except (DockerException, OSError):
            return {}  # engine unreachable: nothing is known to have ended
        out = {}
        for ref in mine:
            assert ref.handle is not None
            c = by_id.get(ref.handle[len(PREFIX) :])
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
            c = self.client.containers.get(ref.handle[len(PREFIX) :])
            c.stop(timeout=int(self.kill_grace_s if ref.grace_s is None else ref.grace_s))
        except NotFound:
            pass
        except (DockerException, OSError) as e:
            raise EngineError(f"could not stop container: {_explain(e)}") from e

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
            c = self.client.containers.get(ref.handle[len(PREFIX) :])
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
            c = self.client.containers.get(ref.handle[len(PREFIX) :])
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
                    f"{PREFIX}{c.id}",
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


def _explain(e: Exception) -> str:
    return str(getattr(e, "explanation", None) or e)[:500]
