"""What a job asks for (JobSpec) and the pure rules around it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kran.domain.cluster import check_class
from kran.domain.datafiles import parse_sources
from kran.domain.resources import Range, ResourceRequest, Resources, format_cpus

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}")
MAX_ENV_BYTES = 64 * 1024
MAX_COMMAND_BYTES = 128 * 1024
MAX_RETRIES = 100
PRIORITY_RANGE = (-1000, 1000)
MAX_DEPENDENCIES = 1000


@dataclass(frozen=True)
class JobSpec:
    """A validated job request. Build it with `validate_spec`, never by hand from input."""

    command: tuple[str, ...]
    request: ResourceRequest
    shell: bool = False  # command is ("sh", "-c", script) built from --sh
    image: str | None = None
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    retries: int = 0
    timeout_s: float | None = None
    network: bool = False
    after: tuple[int, ...] = ()  # start once these succeeded
    after_any: tuple[int, ...] = ()  # start once these ended, however
    app: str | None = None
    app_version: int | None = None
    files: tuple[str, ...] = ()  # URLs fetched into the working dir before each attempt
    cached_files: tuple[str, ...] = ()  # the same, through the node's file cache
    volume: str | None = None  # the app's volume key (domain.apps.volume_key_for), mounted at $KRAN_VOLUME
    volume_mb: int = 0
    run_as: tuple[int, int] | None = None  # uid, gid (from the app); None: the server's default
    grace_s: float | None = None  # SIGTERM to SIGKILL; None: the server's default
    inputs: str | None = None  # id of the files uploaded with the job
    node_class: str | None = None  # run only on nodes of this class (label kran.class)
    image_digest: str | None = None  # from the registry at submit (None: not looked up)
    image_size: int | None = None  # compressed bytes
    image_class: str | None = None  # the image's size class (it sets node_class unless the job did)
    # Set by kran itself only (workflow steps), never from a request: host paths bound into
    # the container (host, target, writable) and the container's working dir.
    binds: tuple[tuple[str, str, bool], ...] = ()
    cwd: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["command"] = list(self.command)
        d["after"] = list(self.after)
        d["after_any"] = list(self.after_any)
        d["files"] = list(self.files)
        d["cached_files"] = list(self.cached_files)
        d["run_as"] = list(self.run_as) if self.run_as else None
        d["binds"] = [list(b) for b in self.binds]
        d["request"] = {
            k: {"min": r.min, "max": r.max}
            for k, r in (
                ("cpus", self.request.cpus),
                ("mem_mb", self.request.mem_mb),
                ("gpus", self.request.gpus),
                ("disk_mb", self.request.disk_mb),
            )
        }
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> JobSpec:
        d = dict(d)
        req = d.pop("request")
        d["command"] = tuple(d["command"])
        d["after"] = tuple(d.get("after", ()))
        d["after_any"] = tuple(d.get("after_any", ()))
        d["files"] = tuple(d.get("files", ()))
        d["cached_files"] = tuple(d.get("cached_files", ()))
        d["run_as"] = tuple(d["run_as"]) if d.get("run_as") else None
        d["binds"] = tuple((str(h), str(t), bool(w)) for h, t, w in d.get("binds", ()))
        d["request"] = ResourceRequest(**{k: Range(v["min"], v["max"]) for k, v in req.items()})
        return JobSpec(**d)

    def request_text(self) -> dict[str, str]:
        r = self.request
        return {
            "cpus": r.cpus.text(scale=1000),
            "mem_mb": r.mem_mb.text(),
            "gpus": r.gpus.text(),
            "disk_mb": r.disk_mb.text(),
        }


def validate_spec(
    *,
    command: list[str] | None,
    sh: str | None,
    request: ResourceRequest,
    image: str | None,
    name: str | None,
    env: dict[str, str],
    labels: dict[str, str],
    priority: int,
    retries: int,
    timeout_s: float | None,
    network: bool,
    after: list[int] | tuple[int, ...] = (),
    after_any: list[int] | tuple[int, ...] = (),
    files: Sequence[str] = (),
    cached_files: Sequence[str] = (),
    grace_s: float | None = None,
    node_class: str | None = None,
) -> JobSpec:
    """Check every field; raise ValueError(field, reason) on the first bad one."""
    if bool(command) == bool(sh):
        raise SpecError("command", "give either a command (argv) or a shell string, not both or neither")
    if sh is not None:
        argv: tuple[str, ...] = ("/bin/sh", "-c", sh)
    else:
        assert command is not None
        argv = tuple(command)
    if any("\0" in a for a in argv):
        raise SpecError("command", "must not contain NUL bytes")
    if sum(len(a) for a in argv) > MAX_COMMAND_BYTES:
        raise SpecError("command", f"longer than {MAX_COMMAND_BYTES} bytes")
    if image is not None and (not image.strip() or any(c.isspace() for c in image)):
        raise SpecError("image", f"{image!r} is not an image reference")
    if name is not None and "\0" in name:
        raise SpecError("name", "contains a NUL byte")
    if name is not None and len(name) > 200:
        raise SpecError("name", "at most 200 characters")
    size = 0
    for k, v in env.items():
        if not ENV_NAME.fullmatch(k):
            raise SpecError("env", f"{k!r} is not a valid variable name")
        if "\0" in v:
            raise SpecError("env", f"value of {k} contains a NUL byte")
        size += len(k) + len(v)
    if size > MAX_ENV_BYTES:
        raise SpecError("env", f"environment larger than {MAX_ENV_BYTES} bytes")
    for k, v in labels.items():
        if not LABEL_KEY.fullmatch(k):
            raise SpecError("labels", f"{k!r} is not a valid label key")
        if len(v) > 256 or "\0" in v:
            raise SpecError("labels", f"value of label {k} is too long or has a NUL byte")
    if len(labels) > 64:
        raise SpecError("labels", "at most 64 labels")
    if request.cpus.min <= 0 or request.mem_mb.min <= 0:
        raise SpecError("resources", "a job needs more than 0 cpus and more than 0 MiB memory")
    lo, hi = PRIORITY_RANGE
    if not lo <= priority <= hi:
        raise SpecError("priority", f"must be between {lo} and {hi}")
    if not 0 <= retries <= MAX_RETRIES:
        raise SpecError("retries", f"must be between 0 and {MAX_RETRIES}")
    for field_name, ids in (("after", after), ("after_any", after_any)):
        if len(ids) > MAX_DEPENDENCIES or any(i < 1 for i in ids):
            raise SpecError(field_name, f"at most {MAX_DEPENDENCIES} positive job ids")
    for field_name, urls in (("files", files), ("cached_files", cached_files)):
        try:
            parse_sources(urls)
        except ValueError as e:
            raise SpecError(field_name, str(e)) from None
    if node_class is not None:
        try:
            check_class(node_class)
        except ValueError as e:
            raise SpecError("node_class", str(e)) from None
    return JobSpec(
        node_class=node_class,
        files=tuple(files),
        cached_files=tuple(cached_files),
        grace_s=grace_s,
        after=tuple(dict.fromkeys(after)),
        after_any=tuple(dict.fromkeys(after_any)),
        command=argv,
        shell=sh is not None,
        request=request,
        image=image,
        name=name,
        env=dict(env),
        labels=dict(labels),
        priority=priority,
        retries=retries,
        timeout_s=timeout_s,
        network=network,
    )


class SpecError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


_REF = re.compile(r"\$\{(KRAN_[A-Z_]+)\}|\$(KRAN_[A-Z_]+)")


def job_environment(
    spec: JobSpec, *, job_id: int, attempt: int, alloc: Resources, workdir: str, volume: str | None = None
) -> dict[str, str]:
    """The job's environment: its own variables plus the KRAN_* grants.

    `$KRAN_...` references in the job's values are expanded with the granted numbers;
    other `$` text is left alone.
    """
    granted = {
        "KRAN_CPUS": format_cpus(alloc.millicpus),
        "KRAN_MEM_MB": str(alloc.mem_mb),
        "KRAN_GPUS": str(alloc.gpus),
        "KRAN_DISK_MB": str(alloc.disk_mb),
        "KRAN_JOB_ID": str(job_id),
        "KRAN_ATTEMPT": str(attempt),
        "KRAN_WORKDIR": workdir,
    }
    if volume is not None:
        granted["KRAN_VOLUME"] = volume
    if spec.app:
        granted["KRAN_APP"] = spec.app

    def expand(m: re.Match[str]) -> str:
        key = m.group(1) or m.group(2)
        return granted.get(key, m.group(0))

    env = {k: _REF.sub(expand, v) for k, v in spec.env.items()}
    env.update(granted)
    return env
