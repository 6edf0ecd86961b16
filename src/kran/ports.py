"""The narrow boundaries the services talk through."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kran.domain.accounting import AttemptFacts, Usage
from kran.domain.apps import AppRecord, VolumeSpec
from kran.domain.arrays import ArrayIndices, ArrayRecord
from kran.domain.auth import Principal
from kran.domain.cluster import NodeInfo
from kran.domain.datafiles import FileSource
from kran.domain.dependencies import Dependency
from kran.domain.fairshare import Association, RunningCharge
from kran.domain.images import ImageInfo, ImageRef, NodeImage
from kran.domain.jobs import JobSpec
from kran.domain.limits import Limits, LimitSet
from kran.domain.placement import Assignment
from kran.domain.records import (
    ActiveAttempt,
    AttemptOutcome,
    EventRecord,
    JobFind,
    JobRecord,
    PlannedRun,
    QueuedRow,
    ScheduleRecord,
    ScheduleRun,
    StartedAttempt,
    Submission,
)
from kran.domain.resources import Resources
from kran.domain.retry import AttemptEnd
from kran.domain.states import JobState
from kran.domain.workflows import RunResult, RunState, WorkflowRecord
from kran.errors import KranError


@dataclass(frozen=True)
class LaunchSpec:
    """Everything an engine needs to start one attempt."""

    job_id: int
    attempt: int
    argv: tuple[str, ...]
    image: str | None
    env: dict[str, str]
    attempt_dir: Path  # holds stdout, stderr, exit_code; `work/` below it is the cwd
    allocation: Resources
    network: bool
    run_as: tuple[int, int] | None = None  # None: the engine's default user
    mounts: tuple[Path, ...] = ()  # host dirs bound at the same path (the app volume)
    node: str = "local"  # the node kran placed it on (cluster engines pin it there)
    grace_s: float | None = None  # SIGTERM to SIGKILL for engines that fix it at start
    binds: tuple[tuple[str, str, bool], ...] = ()  # (host, target, writable), containers only
    cwd: str | None = None  # the container's working dir; None: `workdir`

    @property
    def workdir(self) -> Path:
        return self.attempt_dir / "work"


@dataclass(frozen=True)
class AttemptRef:
    """An attempt the engine may be running; `handle` is what `launch` returned."""

    job_id: int
    attempt: int
    handle: str | None
    attempt_dir: Path
    grace_s: float | None = None  # SIGTERM to SIGKILL; None: the engine's default


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can run. Admission refuses what it cannot, and never asks which
    engine it is."""

    host_processes: bool  # jobs without an image
    containers: bool  # jobs with an image
    volumes: bool  # app volumes (loop mounts on the server's machine)
    leaves_containers: bool = False  # exited containers stay on the nodes (Swarm's tasks): image GC removes them


class Engine(Protocol):
    """Runs attempts. The core owns loops, state and retries; an engine only acts and reports."""

    capabilities: EngineCapabilities

    def unavailable(self, image: bool) -> str | None:
        """Why jobs of this kind (with an image, or host processes) cannot run now; None: they can."""
        ...

    def handle_of_ended(self, attempt_dir: Path) -> str | None:
        """At start, for an attempt the engine no longer runs: a handle if its work ended
        while the server was down and left its end in the attempt dir, else None."""
        ...

    def launch(self, spec: LaunchSpec) -> str:
        """Start the attempt; return a handle. Raises EngineError with a reason."""
        ...

    def check(self, refs: Sequence[AttemptRef]) -> dict[tuple[int, int], AttemptEnd]:
        """Which of these attempts have ended, and how. Running ones are left out."""
        ...

    def kill(self, ref: AttemptRef) -> None:
        """Stop the attempt (and everything it started). Idempotent."""
        ...

    def collect(self, ref: AttemptRef) -> Usage:
        """After the end: make sure stdout/stderr (and the exit code) are in the attempt dir,
        measure what the attempt used, remove engine-side leftovers. Idempotent (a second
        call may measure nothing)."""
        ...

    def cheap_collect(self, ref: AttemptRef) -> bool:
        """Whether `collect` is quick enough for the scheduler loop (no I/O beyond local files)."""
        ...

    def cheap_launch(self, image: bool) -> bool:
        """Whether launching a job of this kind (with an image, or a host process) is quick
        enough for the scheduler loop (a fork, local files; no daemon round trips)."""
        ...

    def stream_logs(self, ref: AttemptRef, stream: str, follow: bool) -> Iterator[bytes]:
        """The attempt's stdout or stderr while it runs; ends when it ends (follow)."""
        ...

    def discover(self) -> list[AttemptRef]:
        """Attempts of this kran instance that the engine knows of (by labels)."""
        ...

    def health(self) -> dict[str, str | None]:
        """Per sub-engine: None when usable, else why not (and since when). Never blocks
        once probed: it is the last probe's answer."""
        ...

    def probe(self) -> bool:
        """Measure whether the engine answers (the server does it every second); True when
        that changed."""
        ...

    def warnings(self) -> list[str]:
        """What an operator should change (e.g. Docker's live-restore off)."""
        ...


class Store(Protocol):
    """Durable job state. State changes are compare-and-set against the transition table."""

    def ping(self) -> None: ...
    def close(self) -> None: ...
    def insert_job_groups(
        self, groups: Sequence[Submission], now: float, queue_max: int
    ) -> list[list[int] | KranError]: ...
    def get_job(self, job_id: int) -> JobRecord | None: ...
    def array_owner(self, array_id: int) -> tuple[str, str | None] | None: ...
    def list_jobs(
        self,
        states: Sequence[JobState] = (),
        labels: dict[str, str] | None = None,
        owner: str | None = None,
        limit: int = 100,
        visible_to: Principal | None = None,
        tasks: bool = True,
    ) -> list[JobRecord]: ...
    def counts_by_state(self) -> dict[str, int]: ...
    def queued_count(self) -> int: ...
    def queued_by_priority_class(self) -> dict[str, int]: ...
    def queue_position(self, job: JobRecord) -> int: ...
    def events_after(
        self, after_id: int, limit: int = 500, job_id: int | None = None, visible_to: Principal | None = None
    ) -> list[EventRecord]: ...
    def last_event_id(self) -> int: ...
    def page_jobs(self, find: JobFind, visible_to: Principal) -> tuple[list[JobRecord], int]: ...
    def events_with_owners(self, after_id: int, limit: int) -> list[tuple[EventRecord, str, str | None]]: ...
    def queued_in_order(self, limit: int, offset: int = 0) -> list[QueuedRow]: ...
    def allocated_by_node(self) -> dict[str, Resources]: ...
    def start_attempts(self, assignments: Sequence[Assignment], now: float) -> list[StartedAttempt]: ...
    def mark_running(self, items: Sequence[tuple[int, int, str]], now: float) -> list[float | None]: ...
    def active_attempts(self) -> list[ActiveAttempt]: ...
    def settle(self, items: Sequence[AttemptOutcome], now: float) -> list[tuple[int, JobState]]: ...
    def request_kill(self, job_ids: Sequence[int], reason: str, now: float) -> dict[int, JobState]: ...
    def resolve_all_blocked(self, now: float) -> int: ...
    def attempt_facts(
        self, since: float | None, until: float | None, user: str | None = None, app: str | None = None
    ) -> list[AttemptFacts]: ...
    def dependencies_of(self, job_id: int) -> list[Dependency]: ...


class Accounts(Protocol):
    """Accounts, associations with their usage, and limits (issue 20)."""

    def accounts(self) -> list[dict[str, Any]]: ...
    def add_account(self, name: str, shares: int, description: str, now: float) -> None: ...
    def set_account(self, name: str, shares: int | None, description: str | None) -> None: ...
    def add_member(self, account: str, user: str, shares: int | None, now: float) -> None: ...
    def remove_member(self, account: str, user: str) -> None: ...
    def memberships(self, user: str) -> list[str]: ...
    def associations(self) -> list[Association]: ...
    def running(self) -> list[RunningCharge]: ...
    def queued_association_ids(self) -> list[int]: ...
    def queued_of(self, assoc: int, limit: int, offset: int) -> list[QueuedRow]: ...
    def queued_at_or_above(self, priority: int, job_id: int) -> list[tuple[int | None, int, int, int]]: ...
    def preemptible(self) -> list[tuple[int, int | None, str, Resources, int, float]]: ...
    def active_names(self) -> list[tuple[str, str]]: ...
    def active_named(self, owner: str, name: str) -> int | None: ...
    def limit_set(self) -> LimitSet: ...
    def set_limits(self, scope: str, name: str, values: Mapping[str, int | float | None]) -> Limits: ...


class Arrays(Protocol):
    """Job arrays (issue 20.4): one record each; tasks made as they may start."""

    def create(self, spec: JobSpec, indices: ArrayIndices, owner: str, submitted_by: str | None, now: float) -> int: ...
    def expand(self, now: float) -> int: ...
    def get(self, array_id: int) -> ArrayRecord | None: ...
    def list(self, owner: str | None, limit: int, visible_to_service: str | None = None) -> list[ArrayRecord]: ...
    def kill(self, array_id: int, now: float) -> None: ...
    def kill_task(self, array_id: int, index: int, now: float) -> int: ...
    def task_jobs(self, array_id: int, limit: int, after_index: int | None = None) -> Sequence[tuple[int, int]]: ...


@dataclass(frozen=True)
class Outgoing:
    """A notification to deliver (the outbox's row)."""

    id: int
    event_id: str
    url: str
    payload: str
    attempts: int


class Notifications(Protocol):
    """The outbox of notifications, and the admin's webhooks (issue 20.7)."""

    def collect(self, now: float) -> int: ...
    def due(self, now: float, limit: int) -> list[Outgoing]: ...
    def delivered(self, row_id: int, now: float) -> None: ...
    def retry(self, row_id: int, attempts: int, next_at: float, error: str, give_up: bool) -> None: ...
    def counts(self) -> dict[str, int]: ...
    def webhooks(self) -> list[dict[str, Any]]: ...
    def add_webhook(self, url: str, event_types: Sequence[str], now: float) -> int: ...
    def remove_webhook(self, hook_id: int) -> bool: ...


class Schedules(Protocol):
    """Schedules and their runs; a fire is stored atomically with the jobs it submits."""

    def add(self, values: dict[str, Any]) -> ScheduleRecord: ...
    def get(self, owner: str, name: str) -> ScheduleRecord | None: ...
    def all(self) -> list[ScheduleRecord]: ...
    def set_enabled(self, schedule_id: int, enabled: bool, next_fire_at: float | None) -> None: ...
    def delete(self, schedule_id: int) -> None: ...
    def due(self, now: float) -> list[ScheduleRecord]: ...
    def children(self) -> list[ScheduleRecord]: ...
    def record_fire(
        self,
        schedule: ScheduleRecord,
        runs: Sequence[PlannedRun],
        next_fire_at: float | None,
        fired: int,
        now: float,
        seen: dict[str, int] | None = None,
    ) -> list[int] | None: ...
    def runs(self, schedule_id: int, limit: int = 100) -> list[ScheduleRun]: ...
    def finished_runs_after(self, schedule_id: int, after_run_id: int) -> list[ScheduleRun]: ...
    def active_jobs(self, schedule_id: int) -> list[int]: ...
    def overdue(self, now: float) -> list[tuple[int, int]]: ...
    def mark_skipped(self, run_id: int, reason: str) -> None: ...


class Metrics(Protocol):
    """What the services report as it happens; gauges are read from the store at scrape."""

    def submitted(self, n: int, user: str) -> None: ...
    def started(self, dispatch_latency_s: float) -> None: ...
    def ended(self, state: str, run_seconds: float | None) -> None: ...
    def scheduler_pass(self, seconds: float) -> None: ...


class Apps(Protocol):
    """App definitions with their versions, and the job-data queries beside them."""

    def get(self, owner: str, name: str, version: int | None = None) -> AppRecord | None: ...
    def named(self, name: str) -> list[AppRecord]: ...
    def all(self) -> list[AppRecord]: ...
    def load(
        self,
        owner: str,
        name: str,
        shared: bool,
        defaults: dict[str, Any],
        run_as: tuple[int, int] | None,
        volume: VolumeSpec | None,
        volume_key: str | None,
        now: float,
    ) -> AppRecord: ...
    def set_enabled(self, owner: str, name: str, enabled: bool, now: float) -> None: ...
    def delete(self, owner: str, name: str) -> None: ...
    def versions(self, owner: str, name: str) -> list[tuple[int, float]]: ...
    def volume_users(self, volumes: Sequence[str] | None = None) -> dict[str, int]: ...
    def unfinished_on_volume(self, volume: str) -> list[int]: ...
    def finished_with_files(self) -> list[tuple[int, float]]: ...
    def mark_files_expired(self, job_ids: Sequence[int]) -> None: ...


class Fetcher(Protocol):
    """Brings a job's files into its working dir."""

    def fetch_into(self, source: FileSource, workdir: Path, cached: bool) -> None:
        """Download (or take from the node's cache), check the sha256, extract archives.
        Raises FetchError naming the URL and the reason."""
        ...

    def fetch_to(self, source: FileSource, dest: Path) -> None:
        """The URL's bytes at `dest` exactly, checked; FetchError as above."""
        ...


class Volumes(Protocol):
    """Apps' persistent volumes with a hard size limit."""

    def ensure(self, key: str, size_mb: int) -> Path:
        """The volume's mounted path, creating and mounting it when needed (EngineError)."""
        ...

    def is_full(self, key: str) -> bool: ...
    def usage(self, key: str) -> tuple[int, int] | None:
        """(used, size) in bytes while mounted."""
        ...

    def remove(self, key: str, keep_data: bool, keep_as: str | None = None) -> None:
        """Unmount; delete the data unless `keep_data` (then kept under `keep_as`, if given)."""
        ...


class Cluster(Protocol):
    """A cluster engine's node inventory and node operations (the swarm engine)."""

    def nodes(self, fresh: bool = False) -> list[NodeInfo]: ...
    def update_node(
        self, ref: str, availability: str | None = None, labels: dict[str, str | None] | None = None
    ) -> None: ...
    def remove_node(self, ref: str, force: bool) -> None: ...
    def join_command(self) -> str: ...


class Registry(Protocol):
    """Registry HTTP API v2: what an image reference is (digest, compressed size, layers)."""

    def resolve(self, ref: ImageRef, arch: str = "amd64") -> ImageInfo: ...
    def check_login(self, registry: str, creds: tuple[str, str] | None = None) -> None: ...


class ImageStore(Protocol):
    def set_credentials(self, host: str, username: str, password: str, now: float) -> None: ...
    def delete_credentials(self, host: str) -> bool: ...
    def credentials(self) -> dict[str, tuple[str, str]]: ...
    def registries(self) -> list[dict[str, Any]]: ...
    def pin(self, ref: str, by: str, now: float) -> None: ...
    def unpin(self, ref: str) -> bool: ...
    def pins(self) -> set[str]: ...
    def set_pull(
        self, job_id: int, attempt: int, pull: dict[str, Any] | None, event: str | None, now: float
    ) -> None: ...


class NodeImages(Protocol):
    """Each node's image store (the nodes whose Docker API kran can reach)."""

    def nodes(self) -> list[str]: ...
    def images(self, node: str) -> list[NodeImage]: ...
    def pull(
        self,
        node: str,
        ref: str,
        auth: tuple[str, str] | None,
        on_progress: Callable[[int, int], None],
        timeout_s: float,
    ) -> None: ...
    def remove(self, node: str, image_id: str) -> None: ...
    def disk_size(self, node: str) -> int | None: ...
    def remove_exited(self, node: str, keep_jobs: frozenset[str]) -> int: ...


class Clock(Protocol):
    def now(self) -> float: ...


@dataclass(frozen=True)
class StepOutcome:
    """How a workflow step's job ended."""

    job_id: int
    state: str  # the job's final state
    exit_code: int | None
    reason: str | None


class StepLauncher(Protocol):
    """Runs one workflow step as a kran job, for the run it was made for."""

    def run_step(self, spec: JobSpec, step: str, key: str | None) -> StepOutcome:
        """Submit (or, with `key`, re-attach to the run's job of that key) and wait for its
        end. Raises StepCancelled when the run was cancelled."""
        ...


class WorkflowRunner(Protocol):
    """The workflow engine: runs a document to its end, each tool step through `launcher`."""

    def run(
        self, document: str, job_order: str | None, run_dir: Path, launcher: StepLauncher, roots: tuple[Path, ...]
    ) -> RunResult: ...


class Workflows(Protocol):
    """Durable workflow runs."""

    def create(self, owner: str, name: str, labels: dict[str, str], now: float, notify: str | None = None) -> int: ...
    def set_files(self, run_id: int, dir: str, document: str, job_order: str | None) -> None: ...
    def get(self, run_id: int) -> WorkflowRecord | None: ...
    def list(
        self, owner: str | None = None, states: Sequence[RunState] = (), limit: int = 100
    ) -> list[WorkflowRecord]: ...
    def start(self, run_id: int, now: float) -> bool: ...
    def finish(
        self,
        run_id: int,
        state: RunState,
        now: float,
        exit_code: int,
        reason: str | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> bool: ...
    def request_cancel(self, run_id: int) -> None: ...
