"""Request bodies of the API and their conversion to domain objects."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kran.domain.auth import Principal
from kran.domain.durations import parse_duration
from kran.domain.jobs import JobSpec, SpecError, validate_spec
from kran.domain.resources import ResourceRequest, parse_range
from kran.errors import InvalidInput
from kran.services.jobs import JobService

Amount = str | int | float


def text_problem(value: Any, where: str = "") -> str | None:
    """The first string (or key) in `value` that cannot be stored: not valid UTF-8 text
    (a lone surrogate from a JSON escape) or holding a NUL byte."""
    if isinstance(value, str):
        if "\0" in value:
            return f"{where or 'value'}: contains a NUL byte"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where or 'value'}: not valid UTF-8 text (a lone surrogate?)"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            shown = str(k).encode("utf-8", "backslashreplace").decode("utf-8")  # no surrogate in the message
            here = f"{where}.{shown}" if where else shown
            problem = text_problem(k, here + " (key)") or text_problem(v, here)
            if problem:
                return problem
    elif isinstance(value, list):
        for i, v in enumerate(value):
            problem = text_problem(v, f"{where}.{i}" if where else str(i))
            if problem:
                return problem
    return None


class Body(BaseModel):
    """A request body: no unknown fields, strict types (no `true` for a number, no "yes"
    for a bool), and no text that could not be stored and read back (a job stored with a
    lone surrogate made every listing answer 500)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        problem = text_problem(data)
        if problem:
            raise ValueError(problem)
        return data


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any, prefix: str = "") -> M:
    """`model` from JSON text (a body, a multipart field) or a mapping; its first error is a 422
    naming the field (`prefix` + its place)."""
    try:
        return model.model_validate_json(data) if isinstance(data, str | bytes) else model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        if first.get("type") == "json_invalid":
            what = prefix.rstrip(".") or "body"
            msg = str(first.get("msg", "")).removeprefix("Invalid JSON: ")
            raise InvalidInput(f"{what} is not valid JSON: {msg}", what) from None
        loc = prefix + ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInput(f"{loc}: {first.get('msg')}", loc) from None


class JobSubmit(Body):
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
    app: str | None = Field(
        None, max_length=170, description="run in this app's environment (NAME or OWNER/NAME); own fields override"
    )
    files: list[str] = Field(
        default_factory=list, max_length=100, description="URLs fetched into the working dir (archives extracted)"
    )
    cached_files: list[str] = Field(
        default_factory=list, max_length=100, description="URLs fetched once per node (cached), then like files"
    )
    grace: str | float | None = Field(None, description="time between SIGTERM and SIGKILL on kill, e.g. 30s")
    node_class: str | None = Field(None, max_length=63, description="run only on nodes labelled kran.class=THIS")
    after: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list, description="start once these jobs succeeded"
    )
    after_any: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list, description="start once these jobs ended, however"
    )
    on_behalf_of: str | None = Field(None, description="services: the end user the job is for (usage goes there)")


class BatchSubmit(Body):
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
    timeout_s = _duration(body.timeout, where + "timeout")
    grace_s = _duration(body.grace, where + "grace")
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
            files=body.files,
            cached_files=body.cached_files,
            grace_s=grace_s,
            node_class=body.node_class,
        )
    except SpecError as e:
        raise InvalidInput(f"{where}{e}", where + e.field) from None


def _duration(value: str | float | None, field: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise InvalidInput(f"{field}: {e}", field) from None


class AppLoad(Body):
    """An app version: job defaults, and what only an app can give (user, volume)."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, max_length=500)
    files: list[str] = Field(default_factory=list, max_length=100)
    cached_files: list[str] = Field(default_factory=list, max_length=100)
    volume: str | None = Field(None, description="NAME:SIZE_MB, a persistent volume at $KRAN_VOLUME")
    cpus: Amount | None = None
    mem: Amount | None = None
    gpus: Amount | None = None
    disk: Amount | None = None
    env: dict[str, str] = Field(default_factory=dict)
    timeout: str | float | None = None
    retries: int | None = Field(None, ge=0, le=100)
    network: bool | None = None
    grace: str | float | None = None
    node_class: str | None = Field(None, max_length=63, description="the node class the app's jobs need")
    user: str | None = Field(None, description="UID or UID:GID the app's jobs run as")
    shared: bool = Field(True, description="whether other users may run the app")

    def defaults(self) -> dict[str, Any]:
        """The job defaults, checked by building a job from them."""
        fields = self.model_dump(exclude_unset=True, exclude_none=True, exclude={"volume", "user", "shared"})
        to_spec(validated(JobSubmit, {"command": ["true"], **fields}))
        return fields


def spec_for(jobs: JobService, who: Principal, owner: str, body: JobSubmit, index: int | None = None) -> JobSpec:
    """The job's spec; one naming an app is merged with it by the job service."""
    if body.app is None:
        return to_spec(body, index)
    fields = body.model_dump(exclude_unset=True)
    return jobs.with_app(who, owner, body.app, fields, lambda merged: to_spec(JobSubmit.model_validate(merged), index))
