"""Request bodies of the API and their conversion to domain objects."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from kran.domain.durations import parse_duration
from kran.domain.jobs import JobSpec, SpecError, validate_spec
from kran.domain.resources import ResourceRequest, parse_range
from kran.errors import InvalidInput

Amount = str | int | float


class JobSubmit(BaseModel):
    """One job. Give `command` (argv) or `sh` (a shell string run by /bin/sh -c)."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] | None = Field(None, max_length=10_000, description="argv of the job")
    sh: str | None = Field(None, description="shell string, run as /bin/sh -c SH")
    image: str | None = Field(None, max_length=500, description="container image; none = host process")
    name: str | None = Field(None, max_length=200)
    cpus: Amount = Field("1", description="cpus: '2', '1-4' or '1-' (as many as fit)")
    mem: Amount = Field("512", description="memory in MiB (or 2G): '512', '512-2048', '1G-'")
    gpus: Amount = Field("0", description="gpus: '1' or a range")
    disk: Amount = Field("0", description="disk in MiB (a reservation, not enforced)")
    env: dict[str, str] = Field(default_factory=dict, description="$KRAN_* references are expanded")
    labels: dict[str, str] = Field(default_factory=dict)
    priority: int = Field(0, ge=-1000, le=1000, description="higher starts first")
    retries: int = Field(0, ge=0, le=100, description="re-runs of a failed or lost attempt")
    timeout: str | float | None = Field(None, description="e.g. 90, '30m', '1h30m'")
    network: bool = Field(False, description="give the job network access")
    after: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list, description="start once these jobs succeeded"
    )
    after_any: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list, description="start once these jobs ended, however"
    )
    on_behalf_of: str | None = Field(None, description="services: the end user the job is for (usage goes there)")


class BatchSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSubmit] = Field(..., max_length=100_000)
    on_behalf_of: str | None = Field(None, description="services: the end user the jobs are for")


def to_spec(body: JobSubmit, index: int | None = None) -> JobSpec:
    where = f"jobs[{index}]." if index is not None else ""
    ranges = {}
    for field, kind in (("cpus", "cpus"), ("mem", "mem_mb"), ("gpus", "gpus"), ("disk", "disk_mb")):
        try:
            ranges[kind] = parse_range(getattr(body, field), kind)
        except ValueError as e:
            raise InvalidInput(f"{where}{field}: {e}", where + field) from None
    timeout_s = None
    if body.timeout is not None:
        try:
            timeout_s = parse_duration(body.timeout)
        except ValueError as e:
            raise InvalidInput(f"{where}timeout: {e}", where + "timeout") from None
    try:
        return validate_spec(
            command=body.command,
            sh=body.sh,
            request=ResourceRequest(**ranges),
            image=body.image,
            name=body.name,
            env=body.env,
            labels=body.labels,
            priority=body.priority,
            retries=body.retries,
            timeout_s=timeout_s,
            network=body.network,
            after=body.after,
            after_any=body.after_any,
        )
    except SpecError as e:
        raise InvalidInput(f"{where}{e}", where + e.field) from None
