"""The one container plan of the container engines: what an attempt's container is.

The Docker and the Swarm engine both build a `ContainerPlan` from the launch spec and
only translate it into their SDK call, so a job is named, labelled, mounted, confined
and run as the same user on either. Also theirs alike: the handle codec, the client
from a URL, the explanation of an API error and Docker's times.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import docker
from docker.errors import APIError, DockerException

from kran.adapters.engines.ownership import effective_user, seal_attempt
from kran.errors import EngineError, EngineUnavailable
from kran.ports import LaunchSpec

T = TypeVar("T")

TMP_SIZE_MB = 256  # the /tmp of a read-only container


@dataclass(frozen=True)
class Sandbox:
    """How containers are confined (beyond the allocation's cpu and memory limits)."""

    run_as: tuple[int, int] | None = None  # uid, gid; None: the image's user
    read_only: bool = False
    pids_limit: int = 4096


@dataclass(frozen=True)
class Bind:
    source: str  # on the host (on a swarm: at the same path on every node)
    target: str  # in the container
    read_only: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    image: str
    args: tuple[str, ...]  # to the image's ENTRYPOINT, as `docker run IMAGE ARGS`
    name: str  # one per attempt: a repeated launch finds it instead of starting another
    labels: dict[str, str]  # on the unit the engine runs (container, service): found again by them
    container_labels: dict[str, str]  # on the containers of a unit that is not one (a swarm task's)
    env: tuple[str, ...]  # KEY=value
    workdir: str
    binds: tuple[Bind, ...]
    tmpfs_mb: dict[str, int]  # target -> size of a tmpfs mount (nosuid, nodev, noexec)
    run_as: tuple[int, int] | None  # None: the image's user
    millicpus: int  # 0: no limit
    mem_mb: int  # 0: no limit; swap none where the engine can say so
    gpus: int
    network: bool  # a route out; else none (no network, or one with no route out)
    read_only: bool
    pids_limit: int
    grace_s: float  # SIGTERM to SIGKILL
    node: str  # where kran placed it ("local": this machine)
    # never privileged, no capabilities, no privilege gain, an init reaping the job's children
    cap_drop: tuple[str, ...] = ("ALL",)
    no_new_privileges: bool = True
    init: bool = True

    @property
    def user(self) -> str | None:
        return f"{self.run_as[0]}:{self.run_as[1]}" if self.run_as else None


def container_name(instance: str, job_id: int, attempt: int) -> str:
    return f"kran-{instance[:12]}-{job_id}-{attempt}"


def plan_container(spec: LaunchSpec, instance: str, sandbox: Sandbox, kill_grace_s: float) -> ContainerPlan:
    """The attempt's container; `seal` gives its dirs to its user before it starts."""
    if not spec.image:
        raise EngineError("a container engine runs container jobs only: give the job an --image")
    alloc = spec.allocation
    binds = [Bind(str(spec.workdir), str(spec.workdir))]
    binds += [Bind(str(m), str(m)) for m in spec.mounts]
    binds += [Bind(h, t, read_only=not w) for h, t, w in spec.binds]
    tmp = sandbox.read_only and not any(b.target == "/tmp" for b in binds)
    return ContainerPlan(
        image=spec.image,
        args=tuple(spec.argv),
        name=container_name(instance, spec.job_id, spec.attempt),
        labels={
            "kran.instance": instance,
            "kran.job": str(spec.job_id),
            "kran.attempt": str(spec.attempt),
            "kran.dir": str(spec.attempt_dir),
        },
        # enough for GC to find a left-behind one; not an attempt the Docker engine would adopt
        container_labels={"kran.instance": instance, "kran.job": str(spec.job_id)},
        env=tuple(f"{k}={v}" for k, v in spec.env.items()),
        workdir=spec.cwd or str(spec.workdir),
        binds=tuple(binds),
        tmpfs_mb={"/tmp": TMP_SIZE_MB} if tmp else {},
        run_as=effective_user(spec, sandbox.run_as),
        millicpus=alloc.millicpus,
        mem_mb=alloc.mem_mb,
        gpus=alloc.gpus,
        network=spec.network,
        read_only=sandbox.read_only,
        pids_limit=sandbox.pids_limit,
        grace_s=kill_grace_s if spec.grace_s is None else spec.grace_s,
        node=spec.node,
    )


def seal(plan: ContainerPlan, spec: LaunchSpec) -> None:
    """The attempt's dirs private to its job, its working dir and binds its user's."""
    if plan.run_as:
        seal_attempt(spec, plan.run_as)


def create_once(create: Callable[[], T], existing: Callable[[], T]) -> T:
    """`create`, or on a 409 (this attempt's unit exists already: a repeated launch) `existing`."""
    try:
        return create()
    except APIError as e:
        if e.status_code != 409:
            raise
        return existing()


@dataclass(frozen=True)
class Handles:
    """An engine's handles: its prefix and the id of what runs the attempt."""

    prefix: str

    def of(self, object_id: str) -> str:
        return f"{self.prefix}{object_id}"

    def owns(self, handle: str | None) -> bool:
        return bool(handle) and str(handle).startswith(self.prefix)

    def object_id(self, handle: str) -> str:
        return handle[len(self.prefix) :]


def docker_client(url: str | None, timeout: int = 60) -> Any:
    """A client of the Docker Engine at `url` (None: the environment's)."""
    try:
        return docker.DockerClient(base_url=url, timeout=timeout) if url else docker.from_env(timeout=timeout)
    except DockerException as e:
        raise EngineUnavailable(f"Docker Engine unreachable: {e}") from e


def unreachable(e: BaseException) -> bool:
    """Whether an error of the docker SDK means the daemon did not answer (its socket gone,
    the connection refused, dropped or timed out), not that it answered with an error (an
    APIError: a missing image, a registry refusing a pull)."""
    if isinstance(e, APIError):  # also an OSError (requests' HTTPError): it did answer
        return False
    if isinstance(e, EngineUnavailable | OSError):  # requests' connection errors are OSErrors
        return True
    return isinstance(e, DockerException) and "Connection" in str(e)


def timed_out(e: BaseException) -> bool:
    """A timeout: the daemon may be slow, not gone (and a request may have been done)."""
    return isinstance(e, TimeoutError) or any("Timeout" in k.__name__ for k in type(e).__mro__)


def explain(e: Exception) -> str:
    """An API error's own words (its explanation), short."""
    return str(getattr(e, "explanation", None) or e)[:500]


STDERR = 2  # a log frame's stream: 1 stdout (0, stdin, is written there too), 2 stderr


class Readable(Protocol):
    def read(self, n: int) -> bytes: ...


def log_frames(raw: Readable) -> Iterator[tuple[int, bytes]]:
    """The (stream, data) frames of a container's logs as the Engine API sends them without
    a TTY: an 8-byte header (the stream, three zero bytes, the size, big-endian) before each
    frame's data. Read in pieces of at most 1 MiB, whatever size a frame says."""

    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            got = raw.read(n - len(buf))
            if not got:
                break
            buf += got
        return buf

    while len(head := exactly(8)) == 8:
        kind, left = head[0], int.from_bytes(head[4:8], "big")
        while left:
            data = raw.read(min(left, 1 << 20))
            if not data:
                return
            left -= len(data)
            yield kind, data


def docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 time with nanoseconds (2026-12-04T03:48:59.123456789Z) as epoch
    seconds; None for its zero time or nothing."""
    if not text or text.startswith("0001-"):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        return None
    at = datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    return at.timestamp() + float(f"0.{m.group(2) or 0}")
