"""GA4GH TES 1.1 tasks in kran's terms (issue 21): pure decisions, no I/O.

A task runs as one kran job per executor, one after the other, in one file system of its
own: every directory the task names (its volumes, the directories of its inputs and
outputs, of its executors' stdin/stdout/stderr) is a directory of the task on the server,
bound read-write at that path into each executor's container. Inputs are staged there
before the first executor is queued; outputs are read back from there after the last.
"""

from __future__ import annotations

import bisect
import math
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote, urlsplit

from kran.domain.durations import parse_duration
from kran.domain.jobs import LABEL_KEY, JobSpec, SpecError, validate_spec
from kran.domain.resources import Range, ResourceRequest
from kran.domain.states import JobState


class TesState(StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    CANCELING = "CANCELING"
    PREEMPTED = "PREEMPTED"


FINAL = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
VIEWS = ("MINIMAL", "BASIC", "FULL")
# tesResources.backend_parameters kran knows (keys are case-insensitive)
BACKEND_PARAMETERS = ("app", "priority", "class", "retries", "timeout", "network")
MAX_EXECUTORS = 20
MAX_FILES = 1000
MAX_VOLUMES = 100
MAX_CONTENT = 1 << 20  # an inline input's content (TES asks for at least 128 KiB)
MAX_CONTENT_TOTAL = 8 << 20  # all of a task's inline inputs
MAX_OUTPUT_FILES = 10_000  # files a task's outputs may name (each listed in its log)
# no task dir is bound over these: they are the container's own
RESERVED = ("/proc", "/sys", "/dev")
WILDCARD = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Input:
    path: str
    url: str | None = None
    content: str | None = None
    directory: bool = False


@dataclass(frozen=True)
class Output:
    path: str
    url: str
    directory: bool = False
    path_prefix: str | None = None

    @property
    def pattern(self) -> bool:
        return bool(WILDCARD.search(self.path))


@dataclass(frozen=True)
class Executor:
    image: str
    command: tuple[str, ...]
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ignore_error: bool = False


@dataclass(frozen=True)
class Resources:
    cpu_cores: int | None = None
    ram_gb: float | None = None
    disk_gb: float | None = None
    preemptible: bool | None = None
    zones: tuple[str, ...] = ()
    backend_parameters: dict[str, str] = field(default_factory=dict)
    backend_parameters_strict: bool = False


@dataclass(frozen=True)
class Task:
    executors: tuple[Executor, ...]
    name: str | None = None
    description: str | None = None
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    resources: Resources = field(default_factory=Resources)
    volumes: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


class TaskError(ValueError):
    """A task kran refuses: the field (TES's name for it) and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def container_path(value: str, field: str) -> str:
    """An absolute path inside the container, as given (a trailing / dropped); refused when
    relative, not normal (`..`, `//`, `.`), with a NUL, or under /proc, /sys, /dev."""
    text = value.rstrip("/") if value != "/" else value
    if not text.startswith("/") or "\0" in text or len(text) > 4096:
        raise TaskError(field, f"{value!r} is not an absolute path")
    if posixpath.normpath(text) != text or text.startswith("//"):
        raise TaskError(field, f"{value!r} is not a normal path (no '..', '.' or '//')")
    if text == "/" or any(text == r or text.startswith(r + "/") for r in RESERVED):
        raise TaskError(field, f"{value!r}: kran binds no task directory there")
    return text


def task_dirs(task: Task) -> tuple[str, ...]:
    """Every container directory the task names: its volumes, the directories of its files
    and the files' own when they are directories (made before its first executor runs). A
    file directly in / cannot have one (its directory would be the container's root)."""
    dirs: set[str] = set()

    def parent(path: str, field: str) -> str:
        up = posixpath.dirname(path)
        if up == "/":
            raise TaskError(field, f"{path!r}: kran needs a file in a directory of its own, not directly in /")
        return up

    for i, v in enumerate(task.volumes):
        dirs.add(container_path(v, f"volumes[{i}]"))
    for i, inp in enumerate(task.inputs):
        dirs.add(inp.path if inp.directory else parent(inp.path, f"inputs[{i}].path"))
    for i, out in enumerate(task.outputs):
        if out.pattern:
            dirs.add(container_path(out.path_prefix or "", f"outputs[{i}].path_prefix"))
        else:
            dirs.add(out.path if out.directory else parent(out.path, f"outputs[{i}].path"))
    for i, ex in enumerate(task.executors):
        for name in ("stdin", "stdout", "stderr"):
            p = getattr(ex, name)
            if p is not None:
                dirs.add(parent(container_path(p, f"executors[{i}].{name}"), f"executors[{i}].{name}"))
    return tuple(sorted(dirs))


def mounts(task: Task) -> tuple[str, ...]:
    """The top-most of the task's dirs: each bound, read-write, into every executor."""
    every = task_dirs(task)  # (sorted)
    inside = [False] * len(every)
    for i, d in enumerate(every):
        if not inside[i]:
            for k in _below(every, d):
                inside[k] = True
    return tuple(d for d, nested in zip(every, inside, strict=True) if not nested)


def _below(ordered: list[str] | tuple[str, ...], d: str) -> range:
    """The indexes of the paths inside `d` in sorted `ordered`: those starting with `d/`
    come together, found by bisection (comparing every pair, or listing every path's
    parents, took minutes of CPU or gigabytes for a few thousand long paths)."""
    start = bisect.bisect_left(ordered, d + "/")
    end = bisect.bisect_left(ordered, d + "0")  # ("0" follows "/")
    return range(start, end)


def _inputs_apart(inputs: tuple[Input, ...]) -> None:
    """No two inputs at one path, none inside a DIRECTORY input (TaskError naming the later)."""
    first: dict[str, int] = {}
    for i, inp in enumerate(inputs):
        if inp.path in first:
            raise TaskError(f"inputs[{i}].path", f"{inp.path!r} is (inside) input {first[inp.path]}'s path")
        first[inp.path] = i
    order = sorted(first, key=lambda p: p)
    for j, inp in enumerate(inputs):
        if inp.directory:
            for k in _below(order, inp.path):
                i = first[order[k]]
                if i > j:
                    raise TaskError(f"inputs[{i}].path", f"{order[k]!r} is (inside) input {j}'s path")
                raise TaskError(f"inputs[{j}].path", f"input {i} is inside this DIRECTORY input")


def check_task(task: Task) -> Task:
    """Every path and count checked (TaskError on the first bad one); the task as given."""
    if not task.executors:
        raise TaskError("executors", "a task needs at least one executor")
    if len(task.executors) > MAX_EXECUTORS:
        raise TaskError("executors", f"at most {MAX_EXECUTORS}")
    if len(task.volumes) > MAX_VOLUMES:
        raise TaskError("volumes", f"at most {MAX_VOLUMES}")
    if len(task.inputs) + len(task.outputs) > MAX_FILES:
        raise TaskError("inputs", f"at most {MAX_FILES} inputs and outputs")
    if sum(len(i.content.encode()) for i in task.inputs if i.content) > MAX_CONTENT_TOTAL:
        raise TaskError("inputs", f"inline content larger than {MAX_CONTENT_TOTAL} bytes in all: give urls")
    for i, inp in enumerate(task.inputs):
        container_path(inp.path, f"inputs[{i}].path")
    _inputs_apart(task.inputs)
    for i, inp in enumerate(task.inputs):
        if inp.content is None and not inp.url:
            raise TaskError(f"inputs[{i}]", "give a url or content")
        if inp.content is not None and len(inp.content.encode()) > MAX_CONTENT:
            raise TaskError(f"inputs[{i}].content", f"larger than {MAX_CONTENT} bytes: give a url")
        if inp.content is not None and inp.directory:
            raise TaskError(f"inputs[{i}].type", "content makes a FILE, not a DIRECTORY")
    for i, out in enumerate(task.outputs):
        if out.pattern:
            prefix = container_path(out.path_prefix or "", f"outputs[{i}].path_prefix")
            if not out.path.startswith(prefix + "/"):
                raise TaskError(f"outputs[{i}].path_prefix", "must be a directory the path pattern is in")
            if not posixpath.isabs(out.path) or "\0" in out.path or ".." in out.path.split("/"):
                raise TaskError(f"outputs[{i}].path", f"{out.path!r} is not an absolute path")
        else:
            container_path(out.path, f"outputs[{i}].path")
        if not out.url or "\0" in out.url:
            raise TaskError(f"outputs[{i}].url", "required")
    for i, ex in enumerate(task.executors):
        if ex.workdir is not None:
            container_path(ex.workdir, f"executors[{i}].workdir")
        if ex.image.startswith("-"):
            raise TaskError(f"executors[{i}].image", f"{ex.image!r} is not an image reference")
    mounts(task)
    if len(task.tags) > 64 or any(len(k) > 256 or len(v) > 1024 for k, v in task.tags.items()):
        raise TaskError("tags", "at most 64 tags, keys up to 256 and values up to 1024 characters")
    return task


@dataclass(frozen=True)
class Backend:
    """kran's own settings from tesResources: what each executor's job gets."""

    request: ResourceRequest
    priority: int = 0
    node_class: str | None = None
    retries: int = 0
    timeout_s: float | None = None
    network: bool = False
    warnings: tuple[str, ...] = ()  # unsupported keys and values, for the task's system_logs
    app: str | None = None  # run as this kran app (its image, user, volume, defaults)


def backend(res: Resources, default_mem_mb: int, network: bool = False) -> Backend:
    """The job settings from the task's resources. GB are GiB (as Funnel reads them).
    Unknown backend_parameters are dropped with a warning, or refused when strict;
    `network`: the server's default (tes.network), which network=true|false overrides."""
    cpus = 1000 * (res.cpu_cores or 1)
    if res.cpu_cores is not None and res.cpu_cores < 1:
        raise TaskError("resources.cpu_cores", "must be at least 1")
    for name, gb in (("ram_gb", res.ram_gb), ("disk_gb", res.disk_gb)):
        if gb is not None and not 0 <= gb <= 1 << 20:  # NaN and infinity too
            raise TaskError(f"resources.{name}", "must be a number of GB between 0 and 1048576")
    mem = default_mem_mb if res.ram_gb is None else math.ceil(res.ram_gb * 1024)
    disk = 0 if res.disk_gb is None else math.ceil(res.disk_gb * 1024)
    if mem < 1:
        raise TaskError("resources.ram_gb", "must be above 0")
    request = ResourceRequest(Range(cpus, cpus), Range(mem, mem), Range(0, 0), Range(disk, disk))
    warnings: list[str] = []
    known: dict[str, str] = {}
    for key, value in res.backend_parameters.items():
        if key.lower() in BACKEND_PARAMETERS:
            known[key.lower()] = value
        elif res.backend_parameters_strict:
            raise TaskError("resources.backend_parameters", f"{key!r} is not one kran supports")
        else:
            warnings.append(f"backend parameter {key!r} is not supported by kran: ignored")
    if res.preemptible:
        warnings.append("preemptible: kran does not preempt; the task runs to its end")
    zone = None
    if len(res.zones) > 1:
        raise TaskError("resources.zones", "kran runs a task in one node class: give at most one zone")
    if res.zones:
        zone = res.zones[0]
    node_class = known.get("class", zone)
    try:
        priority = int(known.get("priority", "0"))
        retries = int(known.get("retries", "0"))
        timeout_s = parse_duration(known["timeout"]) if "timeout" in known else None
    except ValueError as e:
        raise TaskError("resources.backend_parameters", str(e)) from None
    network = known.get("network", str(network)).lower() in ("1", "true", "yes")
    return Backend(request, priority, node_class, retries, timeout_s, network, tuple(warnings), known.get("app"))


def job_labels(tags: dict[str, str], task_id: str | None) -> dict[str, str]:
    """The task's tags that make kran labels (a key kran takes, a value up to 256
    characters: the rest stay the task's own), and `tes.task` naming the task."""
    out = {k: v for k, v in tags.items() if LABEL_KEY.fullmatch(k) and len(v) <= 256 and "\0" not in v}
    out = dict(list(out.items())[:60])
    if task_id:
        out["tes.task"] = task_id
    return out


def executor_spec(
    task: Task,
    index: int,
    be: Backend,
    binds: Sequence[tuple[str, str, bool]],
    after: int | None,
    task_id: str | None = None,
) -> JobSpec:
    """Executor `index` as a kran job: its image and argv (stdio redirected by a shell in
    the container where it asks), the task's binds, after the previous executor (ended
    however, if that one may fail), the task's tags as labels."""
    ex = task.executors[index]
    argv = list(ex.command)
    if ex.stdin or ex.stdout or ex.stderr:
        redirs = "".join(f' {op} "${name}"' for op, name, p in _stdio(ex) if p)
        argv = ["/bin/sh", "-c", f'exec "$@"{redirs}', "sh", *argv]
    env = dict(ex.env)
    for _, name, p in _stdio(ex):
        if p:
            env[name] = p
    previous_may_fail = index > 0 and task.executors[index - 1].ignore_error
    name = (task.name or "tes")[:180] + (f" #{index + 1}" if len(task.executors) > 1 else "")
    try:
        spec = validate_spec(
            command=argv,
            sh=None,
            request=be.request,
            image=ex.image,
            name=name,
            env=env,
            labels=job_labels(task.tags, task_id),
            priority=be.priority,
            retries=be.retries,
            timeout_s=be.timeout_s,
            network=be.network,
            after=[after] if after is not None and not previous_may_fail else [],
            after_any=[after] if after is not None and previous_may_fail else [],
            node_class=be.node_class,
        )
    except SpecError as e:
        field_name = {"command": "command", "image": "image", "env": "env", "name": "name"}.get(e.field)
        where = f"executors[{index}].{field_name}" if field_name else f"resources.{e.field}"
        raise TaskError(where, e.reason) from None
    return replace(spec, binds=tuple(binds), cwd=ex.workdir)


def _stdio(ex: Executor) -> tuple[tuple[str, str, str | None], ...]:
    """The redirections a shell in the container makes (the paths passed in variables, so
    no path is ever shell text)."""
    return (
        ("<", "KRAN_TES_STDIN", ex.stdin),
        (">", "KRAN_TES_STDOUT", ex.stdout),
        ("2>", "KRAN_TES_STDERR", ex.stderr),
    )


@dataclass(frozen=True)
class JobView:
    """What the task's state and logs need of one executor's job."""

    state: JobState
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    reason: str | None
    pulling: bool = False
    starting: bool = False


def task_state(phase: str, jobs: Sequence[JobView], canceling: bool) -> str:
    """The TES state of a task from its stored phase and its executors' jobs.

    phase: STAGING (inputs being fetched), JOBS (executors queued or running), OUTPUTS
    (being collected), or a final TES state once stored."""
    if phase in FINAL:
        return phase
    if canceling:
        return "CANCELING"
    if phase == "STAGING":
        return "INITIALIZING"
    if phase == "OUTPUTS":
        return "RUNNING"
    if any(j.state == JobState.RUNNING for j in jobs):
        return "RUNNING"
    if any(j.state == JobState.STARTING or j.pulling for j in jobs):
        return "INITIALIZING"
    if any(j.started_at is not None for j in jobs):
        return "RUNNING"  # between two executors, or one retried
    return "QUEUED"


def jobs_outcome(task: Task, jobs: Sequence[JobView]) -> tuple[str, str] | None:
    """Once every executor's job ended: ("OUTPUTS", "") when the task succeeded (its
    outputs are to be collected) or its final TES state and why; None while one runs. A
    job that failed without an exit code never ran its command (its image could not be
    had, its launch failed): the system's error, not the executor's."""
    if not jobs or any(not j.state.is_final for j in jobs):
        return None
    for ex, j in zip(task.executors, jobs, strict=True):
        if j.state == JobState.SUCCEEDED or (ex.ignore_error and j.state == JobState.FAILED):
            continue
        if j.state == JobState.FAILED and j.exit_code is not None:
            return "EXECUTOR_ERROR", j.reason or f"exit code {j.exit_code}"
        if j.state == JobState.KILLED:
            return "CANCELED", j.reason or "killed"
        return "SYSTEM_ERROR", j.reason or str(j.state)
    return "OUTPUTS", ""


@dataclass(frozen=True)
class TaskRecord:
    """A task as stored."""

    row: int
    task_id: str
    owner: str
    submitted_by: str | None
    name: str | None
    phase: str  # STAGING, JOBS, OUTPUTS, or its final TES state
    cancel_requested: bool
    created_at: float
    ended_at: float | None
    jobs: tuple[int, ...]
    document: dict[str, Any]  # the task as created (TES's JSON, normalized)
    outputs: tuple[dict[str, str], ...]  # TES OutputFileLog
    system_logs: tuple[str, ...]


def output_files(out: Output, files: dict[str, int], base: str) -> list[tuple[str, str]]:
    """The files (container path -> size, as found) an output names, each with the URL kran
    serves it at (`base` + its path). A pattern's wildcards match within one path segment
    (POSIX glob: `*` does not match `/`)."""
    if out.pattern:
        want = out.path.split("/")
        found = [
            p
            for p in files
            if len(p.split("/")) == len(want)
            and all(fnmatchcase(a, b) for a, b in zip(p.split("/"), want, strict=True))
        ]
    elif out.directory:
        found = [p for p in files if p.startswith(out.path + "/")]
    else:
        found = [out.path] if out.path in files else []
    return [(p, base + p) for p in sorted(found)]


def output_destination(out: Output, path: str, roots: Sequence[str], user: str) -> str | None:
    """Where on the server a file:// output's file `path` (in the container) is written:
    under one of `roots` ({user} in a root is the task owner's name), or None (kran keeps
    it). A directory's or a pattern's files keep their place below the URL's path."""
    parts = urlsplit(out.url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    base = unquote(parts.path)
    if not user or user in (".", "..") or "/" in user:
        return None  # a name that would move the root
    if out.pattern:
        dest = posixpath.join(base, posixpath.relpath(path, out.path_prefix or "/"))
    elif out.directory:
        dest = posixpath.join(base, posixpath.relpath(path, out.path))
    else:
        dest = base
    if not dest.startswith("/") or "\0" in dest or posixpath.normpath(dest) != dest:
        return None
    for root in roots:
        top = posixpath.normpath(root.replace("{user}", user))
        if top != "/" and dest.startswith(top + "/"):
            return dest
    return None
