"""What the API answers, as models: the OpenAPI document then describes every body and a
client can be generated from it (tests/e2e/test_openapi.py). Here: the base, the shared
parts and what api/views.py builds; each router declares the models of the rest.

The handlers still build plain dicts; FastAPI checks each against its model. A key the
model does not declare is an error (a 500), not a silent drop, so a field added to a view
but not to its model fails the tests at once. The document still leaves objects open (no
`additionalProperties: false`): a new field does not break clients generated before it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def _open_object(schema: dict[str, Any]) -> None:
    """extra="forbid" would write `additionalProperties: false` into the document."""
    schema.pop("additionalProperties", None)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_open_object)


# ---- shared parts


class Resources(Out):
    """Resources granted or counted: CPUs, MiB of memory, GPUs, MiB of disk."""

    cpus: float
    mem_mb: int
    gpus: int
    disk_mb: int


class ResourceRange(Out):
    """What a job asked for, as ranges: "2", "1-4", "1-" (as much as fits)."""

    cpus: str
    mem_mb: str
    gpus: str
    disk_mb: str


class NodeRef(Out):
    id: str
    hostname: str | None


# ---- jobs (api/views.py)


class JobUsage(Out):
    """Over all attempts: times and amounts add up, the memory peak is the highest."""

    wall_seconds: float | None
    queue_seconds: float | None
    pull_seconds: float | None
    cpu_seconds: float | None
    io_bytes: int | None
    peak_memory_bytes: int | None


class AttemptUsage(Out):
    wall_seconds: float | None
    queue_seconds: float | None
    pull_seconds: float | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    io_bytes: int | None
    cpu_utilization: float | None = Field(description="CPU seconds over wall time x allocated CPUs")


class Attempt(Out):
    number: int
    state: str
    node: str | None
    allocation: Resources | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    reason: str | None
    usage: AttemptUsage


class ImagePull(Out):
    """The image pull in progress for the current attempt."""

    image: str
    node: str
    done: int
    total: int


class PriorityFactors(Out):
    priority: int
    age_s: float
    fair_share: float | None = Field(None, description="2^(-effective usage / normalized shares); 1: no usage")
    norm_shares: float | None = None
    effective_usage: float | None = None


class ArrayOf(Out):
    id: int = Field(description="the array (GET /api/v1/arrays/{id})")
    index: int
    count: int


class Job(Out):
    id: int
    name: str | None
    owner: str
    state: str = Field(description="a job state; `pulling` is the part of `starting` spent pulling the image")
    priority: int
    command: list[str]
    image: str | None
    env: dict[str, str]
    labels: dict[str, str]
    request: ResourceRange
    retries: int
    timeout_s: float | None
    network: bool
    no_requeue: bool
    account: str | None
    array: ArrayOf | None = Field(None, description="a task of an array: the array, its index, the task count")
    after: list[int]
    after_any: list[int]
    after_notok: list[int]
    singleton: bool
    array_deps: list[tuple[str, int]] = Field(description="(kind ok | any | notok, array id): waits on every task")
    notify: str | None = Field(description="the URL told of the job's events")
    notify_on: list[str] = Field(description="which: end, start, fail, all (empty: end)")
    preemptible: bool = Field(description="may be stopped and re-queued for a job of higher priority")
    after_corr: int | None = Field(description="aftercorr: this array task waits for the same index of that array")
    app: str | None
    app_version: int | None
    files: list[str]
    cached_files: list[str]
    inputs: bool = Field(description="whether input files were uploaded with the job")
    volume: str | None
    user: str | None = Field(description="UID:GID the job runs as, when its app sets one")
    grace_s: float | None
    files_expired: bool
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    reason: str | None
    node: NodeRef | None
    node_class: str | None
    image_digest: str | None
    image_size: int | None
    image_class: str | None
    pull: ImagePull | None
    allocation: Resources | None
    attempt: int = Field(description="the number of the latest attempt (0: none yet)")
    attempts: list[Attempt]
    usage: JobUsage
    hints: list[str]
    queue_position: int | None
    waiting_because: str | None
    priority_factors: PriorityFactors | None = Field(
        None, description="a queued job's priority factors: what its place in the queue comes from"
    )


class FileEntry(Out):
    name: str
    type: str = Field(description="file | dir | link | other")
    size: int
    mtime: str | None


class Event(Out):
    id: int
    job_id: int
    attempt: int | None
    from_state: str | None = Field(alias="from")
    to: str
    reason: str | None
    at: str | None


class Error(Out):
    """Every error answer (docs/api.md lists the status codes)."""

    error: str
    field: str | None = Field(None, description="the input at fault, when there is one")


ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Error, "description": "refused: bad input, no access, not found, a conflict, a full queue"},
    "5XX": {"model": Error, "description": "an engine is down (503), the data dir is full (507), a bug (500)"},
}


# ---- bodies that are not JSON: what `responses=` says of them


def stream(media_type: str, description: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """A 2xx answer of raw bytes (`format: binary`) or text (SSE, a log) of one media type."""
    text = media_type.startswith("text/")
    schema = {"type": "string"} if text else {"type": "string", "format": "binary"}
    return {status: {"description": description, "content": {media_type: {"schema": schema}}}}
