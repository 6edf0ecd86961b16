"""What a job asks for (JobSpec) and the pure rules around it."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from kran.domain.cluster import check_class
from kran.domain.datafiles import parse_sources
from kran.domain.dependencies import parse_dependency
from kran.domain.notify import parse_notify_on
from kran.domain.resources import Range, ResourceRequest, Resources, format_cpus

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}")
MAX_ENV_BYTES = 64 * 1024
MAX_COMMAND_BYTES = 128 * 1024
MAX_RETRIES = 100
PRIORITY_RANGE = (-1000, 1000)
MAX_DEPENDENCIES = 1000
_encode = json.JSONEncoder().encode  # json.dumps's own encoder, without its per-call set-up


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
    no_requeue: bool = False  # at most one run: an attempt lost to its engine is not run again
    account: str | None = None  # charged to (fair share, limits); set at submit when not given
    after: tuple[int, ...] = ()  # start once these succeeded
    after_any: tuple[int, ...] = ()  # start once these ended, however
    after_notok: tuple[int, ...] = ()  # start once these ended any way but succeeded
    singleton: bool = False  # at most one active job of this owner and name
    array_deps: tuple[tuple[str, int], ...] = ()  # (kind, array id): waits on every task of the array
    after_corr: int | None = None  # an array's task i waits for task i of this array (aftercorr)
    notify: str | None = None  # a URL told (POST, signed) when the job ends (domain.notify)
    notify_on: tuple[str, ...] = ()  # end | start | fail | all; empty: end
    preemptible: bool = False  # may be stopped and re-queued for a job of higher priority
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
    array: tuple[int, int, int] | None = None  # a task of an array: (array id, task index, task count)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: every tuple a list, the request {kind: {min, max}}."""
        return {k: plain(getattr(self, k)) for k in self.__dataclass_fields__}

    def charged_to(self, account: str) -> JobSpec:
        """This spec with its account set (the store sets the owner's default at submit):
        one copy of the fields, without dataclasses.replace's walk over their definitions."""
        return JobSpec(**{**self.__dict__, "account": account})

    def json_text(self) -> str:
        """json.dumps(self.to_json()), the same text, as it is stored: the fields go to the C
        encoder as they are (it writes a tuple as an array), only the request is made plain."""
        ranges = self.request.__dict__.items()
        return _encode({**self.__dict__, "request": {k: {"min": r.min, "max": r.max} for k, r in ranges}})

    @staticmethod
    def from_json(d: dict[str, Any]) -> JobSpec:
        """The inverse of to_json: a JobSpec holds no lists, so every list is a tuple again.
        A key written before its field had a default may be missing: the default is taken."""
        d = {k: _tuples(v) for k, v in d.items()}
        d["request"] = ResourceRequest(**{k: Range(v["min"], v["max"]) for k, v in d["request"].items()})
        return JobSpec(**d)

    @property
    def waits_on(self) -> tuple[int, ...]:
        """Every job it depends on, whatever the kind."""
        return (*self.after, *self.after_any, *self.after_notok)

    @property
    def blocked(self) -> bool:
        """Waits on other jobs or arrays before it may start."""
        return bool(self.waits_on or self.array_deps)

    def request_text(self) -> dict[str, str]:
        r = self.request
        return {
            "cpus": r.cpus.text(scale=1000),
            "mem_mb": r.mem_mb.text(),
            "gpus": r.gpus.text(),
            "disk_mb": r.disk_mb.text(),
        }


class Kind(Enum):
    """How a request field is written; api/schemas.py and cli/jobs.py give each its type."""

    TEXT = "text"
    INT = "int"
    FLAG = "flag"
    AMOUNT = "amount"  # a resource: "2", "1-4", "1-" (as much as fits), memory and disk "2G"
    DURATION = "duration"  # seconds or "30m", "1h30m"
    ARGV = "argv"  # the command (the CLI's trailing arguments)
    URLS = "urls"
    IDS = "ids"  # job ids
    PAIRS = "pairs"  # K=V on the CLI


@dataclass(frozen=True)
class JobField:
    """A field of a job request. JOB_FIELDS declares them once: the API body
    (api/schemas.JobSubmit, AppLoad), the options of `kran submit` / `run` / `app load`
    and the fields an app may default are made from it; tests/test_job_fields.py checks
    the rest (to_spec passes each one, the job view and the table show what the spec holds)."""

    name: str  # in the API body and the CLI's parameters
    kind: Kind
    help: str
    cli: str | None = None  # the option of kran submit/run; None: API only (ARGV: the arguments)
    app: bool = False  # an app may set it: the job's own value wins, env and files add up
    default: str | int | None = None  # AMOUNT and INT; the rest default to none/empty
    most: int | None = None  # the longest text, the most items
    bounds: tuple[int, int] | None = None  # INT


JOB_FIELDS: tuple[JobField, ...] = (
    JobField("command", Kind.ARGV, "argv of the job", most=10_000),
    JobField(
        "image", Kind.TEXT, "container image; without it the job runs as a host process", "--image", True, most=500
    ),
    JobField("cpus", Kind.AMOUNT, "cpus: 2, 1-4, or 1- (as many as fit)", "--cpus", True, "1"),
    JobField("mem", Kind.AMOUNT, "memory in MiB (or 2G): 512, 512-2048, 1G-", "--mem", True, "512"),
    JobField("gpus", Kind.AMOUNT, "gpus: a count or a range", "--gpus", True, "0"),
    JobField("disk", Kind.AMOUNT, "disk in MiB to reserve (not enforced)", "--disk", True, "0"),
    JobField("env", Kind.PAIRS, "environment; $KRAN_* is expanded", "--env", True),
    JobField("name", Kind.TEXT, "a name for the job", "--name", most=200),
    JobField("labels", Kind.PAIRS, "labels, for filtering", "--label"),
    JobField("priority", Kind.INT, "higher starts first (-1000..1000)", "--priority", default=0, bounds=PRIORITY_RANGE),
    JobField("retries", Kind.INT, "re-runs of a failed or lost attempt", "--retries", True, 0, bounds=(0, MAX_RETRIES)),
    JobField("timeout", Kind.DURATION, "kill after this long, e.g. 90, 30m, 1h30m", "--timeout", True),
    JobField("network", Kind.FLAG, "give the job network access", "--network", True),
    JobField(
        "no_requeue",
        Kind.FLAG,
        "at most one run: an attempt lost to its engine (a daemon restart, a dead node) is not re-queued",
        "--no-requeue",
        True,
    ),
    JobField("account", Kind.TEXT, "charge the job to this account (default: your first)", "--account", most=64),
    JobField(
        "notify",
        Kind.TEXT,
        "POST a signed JSON event to this URL when the job ends (see --notify-on)",
        "--notify",
        most=2000,
    ),
    JobField(
        "notify_on",
        Kind.TEXT,
        "which events --notify gets: end (default), start, fail, all; comma-separated",
        "--notify-on",
        most=100,
    ),
    JobField(
        "preemptible",
        Kind.FLAG,
        "may be stopped (SIGTERM, grace, SIGKILL) and re-queued for a job of higher priority, "
        "without using a retry; it then sees KRAN_PREEMPTED=1",
        "--preemptible",
        True,
    ),
    JobField("sh", Kind.TEXT, "a shell string, run by /bin/sh -c", "--sh"),
    JobField(
        "app",
        Kind.TEXT,
        "run in this app's environment (NAME or OWNER/NAME; the job's own fields win)",
        "--app",
        most=170,
    ),
    JobField(
        "files", Kind.URLS, "URLs fetched into the working dir first (archives extracted)", "--fetch", True, most=100
    ),
    JobField("cached_files", Kind.URLS, "the same, fetched once per node (cached)", "--fetch-cached", True, most=100),
    JobField("grace", Kind.DURATION, "time between SIGTERM and SIGKILL on kill, e.g. 30s", "--grace", True),
    JobField(
        "node_class", Kind.TEXT, "run only on nodes of this class (node label kran.class)", "--class", True, most=63
    ),
    JobField("after", Kind.IDS, "start once these jobs succeeded", "--after"),
    JobField("after_any", Kind.IDS, "start once these jobs ended, however", "--after-any"),
    JobField("after_notok", Kind.IDS, "start once these jobs ended any way but succeeded", "--after-notok"),
    JobField(
        "dependency",
        Kind.TEXT,
        "Slurm's form: afterok:12:13,afterany:14,afternotok:15,singleton (singleton: one job of this name at a time)",
        "--dependency",
        most=20_000,
    ),
    JobField("on_behalf_of", Kind.TEXT, "services: the end user the job is for (usage goes there)"),
)


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
    after_notok: list[int] | tuple[int, ...] = (),
    dependency: str | None = None,
    notify: str | None = None,
    notify_on: str | None = None,
    preemptible: bool = False,
    files: Sequence[str] = (),
    cached_files: Sequence[str] = (),
    grace_s: float | None = None,
    node_class: str | None = None,
    no_requeue: bool = False,
    account: str | None = None,
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
    singleton, array_deps, after_corr = False, [], None
    if dependency is not None:
        try:
            parsed = parse_dependency(dependency)
        except ValueError as e:
            raise SpecError("dependency", str(e)) from None
        after, after_any, after_notok = (
            [*after, *parsed.after],
            [*after_any, *parsed.after_any],
            [*after_notok, *parsed.after_notok],
        )
        singleton, array_deps, after_corr = parsed.singleton, parsed.arrays, parsed.corr
        if singleton and not name:
            raise SpecError("dependency", "singleton needs a job name (--name): one job of that name at a time")
    for field_name, ids in (("after", after), ("after_any", after_any), ("after_notok", after_notok)):
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
    try:
        notify_words = parse_notify_on(notify_on) if notify else ()
    except ValueError as e:
        raise SpecError("notify_on", str(e)) from None
    if notify_on and not notify:
        raise SpecError("notify_on", "give --notify URL too")
    if notify is not None and (len(notify) > 2000 or not notify.startswith(("http://", "https://"))):
        raise SpecError("notify", "an http:// or https:// URL of at most 2000 characters")
    if account is not None and not ACCOUNT_NAME.fullmatch(account):
        raise SpecError("account", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return JobSpec(
        account=account,
        no_requeue=no_requeue,
        node_class=node_class,
        files=tuple(files),
        cached_files=tuple(cached_files),
        grace_s=grace_s,
        after=tuple(dict.fromkeys(after)),
        after_any=tuple(dict.fromkeys(after_any)),
        after_notok=tuple(dict.fromkeys(after_notok)),
        singleton=singleton,
        array_deps=tuple(dict.fromkeys(array_deps)),
        after_corr=after_corr,
        notify=notify,
        notify_on=notify_words,
        preemptible=preemptible,
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


def plain(value: Any) -> Any:
    """`value` in JSON's types: tuples as lists."""
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):  # the request and its ranges (asdict's deep copy was the cost)
        return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


class SpecError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


_REF = re.compile(r"\$\{(KRAN_[A-Z_]+)\}|\$(KRAN_[A-Z_]+)")


def job_environment(
    spec: JobSpec,
    *,
    job_id: int,
    attempt: int,
    alloc: Resources,
    workdir: str,
    volume: str | None = None,
    preempted: bool = False,
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
    if preempted:
        granted["KRAN_PREEMPTED"] = "1"
    if spec.array is not None:
        granted["KRAN_ARRAY_JOB_ID"], granted["KRAN_ARRAY_TASK_ID"], granted["KRAN_ARRAY_TASK_COUNT"] = (
            str(n) for n in spec.array
        )

    def expand(m: re.Match[str]) -> str:
        key = m.group(1) or m.group(2)
        return granted.get(key, m.group(0))

    env = {k: _REF.sub(expand, v) for k, v in spec.env.items()}
    env.update(granted)
    return env
