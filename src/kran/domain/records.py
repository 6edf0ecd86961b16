"""Read models: what the store returns about jobs, attempts and events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kran.domain.accounting import Usage
from kran.domain.jobs import JobSpec
from kran.domain.resources import Resources
from kran.domain.retry import Settlement
from kran.domain.states import JobState


@dataclass(frozen=True)
class AttemptRecord:
    job_id: int
    number: int
    state: JobState
    node: str
    handle: str | None
    allocation: Resources
    created_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    reason: str | None
    collected: bool
    queued_at: float | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class JobRecord:
    id: int
    owner: str
    submitted_by: str | None
    name: str | None
    state: JobState
    priority: int
    spec: JobSpec
    submitted_at: float
    queued_since: float
    not_before: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    exit_code: int | None
    reason: str | None
    kill_reason: str | None
    node: str | None
    allocation: Resources | None
    attempt_list: list[AttemptRecord] = field(default_factory=list)
    files_expired: bool = False
    pull: dict[str, Any] | None = None  # while the attempt's image is pulled: image, node, done, total


@dataclass(frozen=True)
class EventRecord:
    id: int
    job_id: int
    attempt: int | None
    from_state: str | None
    to_state: str
    reason: str | None
    at: float


@dataclass(frozen=True)
class ActiveAttempt:
    """An attempt in starting/running, as the monitor needs it."""

    job_id: int
    attempt: int
    state: JobState
    handle: str | None
    created_at: float
    started_at: float | None
    timeout_s: float | None
    kill_reason: str | None
    retries: int
    queued_at: float | None = None
    requeues: int = 0  # earlier attempts lost to an engine fault: they used no retry
    disk_mb: int = 0  # the disk its allocation grants (what eviction measures its files against)


@dataclass(frozen=True)
class StartedAttempt:
    job_id: int
    attempt: int
    node: str
    allocation: Resources
    spec: JobSpec
    owner_id: int | None = None  # the owner's user id: which uid the job runs as
    preempted: bool = False  # the attempt before was preempted (KRAN_PREEMPTED)


@dataclass(frozen=True)
class QueuedRow:
    job_id: int
    spec_json: str
    queued_since: float
    not_before: float
    priority: int = 0
    assoc: int | None = None  # the association it is charged to (fair share)
    owner: str = ""
    app: str | None = None


@dataclass(frozen=True)
class ScheduleRecord:
    id: int
    name: str
    owner: str
    kind: str  # every | cron | after
    expr: str
    tz: str
    start_at: float
    repeat: int | None
    max_lateness_s: float | None
    overlap: str
    catch_up: str
    parents: list[str]  # "owner/name" of each
    after_mode: str
    spec: JobSpec
    enabled: bool
    next_fire_at: float | None
    fired: int
    seen: dict[str, int]
    created_at: float

    @property
    def key(self) -> str:
        """Names are per owner: "owner/name" is unique (neither may hold a "/")."""
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class ScheduleRun:
    id: int
    schedule_id: int
    fire_time: float
    job_id: int | None
    state: str  # started | skipped
    reason: str | None
    job_state: JobState | None
    created_at: float


@dataclass(frozen=True)
class PlannedRun:
    """One fire time the schedule service decided on, for the store to record."""

    fire_time: float
    spec: JobSpec | None  # None: skipped
    reason: str | None = None
    start_deadline: float | None = None


@dataclass(frozen=True)
class AttemptOutcome:
    """How an attempt ended, decided and measured, for the store to record."""

    job_id: int
    attempt: int
    settlement: Settlement
    exit_code: int | None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class Submission:
    """Jobs submitted together (all or nothing) by or for one user."""

    specs: Sequence[JobSpec]
    owner: str
    submitted_by: str | None = None  # a service acting for `owner`
    idempotency_key: str | None = None  # the same key within a day: the jobs stored the first time
    request_digest: str = ""  # of the request as sent: a key reused for another request is refused


# the dashboard's job table: sortable columns (shown name -> column; each has an index
# ending in id, so a page is read in order, not sorted), and the count's cap
SORTABLE = {"id": "id", "name": "name", "user": "owner", "state": "state"}
COUNT_CAP = 10_000


@dataclass(frozen=True)
class JobFind:
    """The dashboard's filters, sort and page over jobs."""

    states: tuple[JobState, ...] = ()
    owner: str | None = None
    app: str | None = None
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    sort: str = "id"
    descending: bool = True
    offset: int = 0
    limit: int = 50
