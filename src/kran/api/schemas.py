"""Request bodies of the API and their conversion to domain objects."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from starlette.concurrency import run_in_threadpool

from kran.domain.auth import Principal
from kran.domain.durations import parse_duration
from kran.domain.jobs import JOB_FIELDS, JobField, JobSpec, Kind, SpecError, validate_spec
from kran.domain.resources import Range, ResourceRequest, parse_range
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


class StorableText(BaseModel):
    """No text that could not be stored and read back (a job stored with a lone surrogate
    made every listing answer 500)."""

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        problem = text_problem(data)
        if problem:
            raise ValueError(problem)
        return data


class Body(StorableText):
    """A request body: no unknown fields, strict types (no `true` for a number, no "yes"
    for a bool), storable text."""

    model_config = ConfigDict(extra="forbid", strict=True)


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


def _body_field(f: JobField, app: bool = False) -> tuple[Any, Any]:
    """The type and pydantic Field of a declared job field; `app`: as an app's default
    (a scalar is optional there: unset means the job's own default)."""
    text = f.help
    if f.kind is Kind.TEXT:
        return str | None, Field(None, max_length=f.most, description=text)
    if f.kind is Kind.ARGV:
        return list[str] | None, Field(None, max_length=f.most, description=text)
    if f.kind is Kind.DURATION:
        return str | float | None, Field(None, description=text)
    if f.kind is Kind.URLS:
        return list[str], Field(default_factory=list, max_length=f.most, description=text)
    if f.kind is Kind.PAIRS:
        return dict[str, str], Field(default_factory=dict, description=text)
    if f.kind is Kind.IDS:
        return list[Annotated[int, Field(ge=1, le=2**63 - 1)]], Field(default_factory=list, description=text)
    if f.kind is Kind.FLAG:
        return (bool | None, Field(None, description=text)) if app else (bool, Field(False, description=text))
    lo, hi = f.bounds or (None, None)
    kind: Any = Amount if f.kind is Kind.AMOUNT else int
    if app:
        return kind | None, Field(None, ge=lo, le=hi, description=text)
    return kind, Field(f.default, ge=lo, le=hi, description=text)


class _JobSubmit(Body):
    """One job. Give `command` (argv) or `sh` (a shell string run by /bin/sh -c)."""


if TYPE_CHECKING:  # its fields are JOB_FIELDS, made below: mypy sees them as Any

    class JobSubmit(_JobSubmit):
        def __getattr__(self, name: str) -> Any: ...
else:
    JobSubmit = create_model(
        "JobSubmit",
        __base__=_JobSubmit,
        __doc__=_JobSubmit.__doc__,
        __module__=__name__,
        **{f.name: _body_field(f) for f in JOB_FIELDS},
    )


class BatchSubmit(Body):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSubmit] = Field(..., max_length=100_000)
    on_behalf_of: str | None = Field(None, description="services: the end user the jobs are for")

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        """The text outside the jobs: each job is a JobSubmit, which checks its own (before
        its fields), so the batch's text is read once, not twice."""
        if isinstance(data, dict):
            problem = text_problem({k: v for k, v in data.items() if k != "jobs"})
            if problem:
                raise ValueError(problem)
        return data


# request fields that are not the job's own: the route and spec_for consume them
NOT_SPEC = frozenset({"app", "on_behalf_of"})
RESOURCE = {"cpus": "cpus", "mem": "mem_mb", "gpus": "gpus", "disk": "disk_mb"}  # field -> ResourceRequest's


# to_spec's plan, made once from JOB_FIELDS (in their order, so the first bad field is
# reported as before): the resource amounts, the durations, the rest as they are
_AMOUNTS = tuple((f.name, RESOURCE[f.name]) for f in JOB_FIELDS if f.kind is Kind.AMOUNT)
_DURATIONS = tuple((f.name, f"{f.name}_s") for f in JOB_FIELDS if f.kind is Kind.DURATION)
_AS_IS = tuple(
    f.name for f in JOB_FIELDS if f.name not in NOT_SPEC and f.kind is not Kind.AMOUNT and f.kind is not Kind.DURATION
)


def to_spec(body: JobSubmit, index: int | None = None) -> JobSpec:
    """The body's JOB_FIELDS as validate_spec takes them: amounts as the resource request,
    durations in seconds (`timeout` -> `timeout_s`), the rest as they are."""
    where = f"jobs[{index}]." if index is not None else ""
    ranges = {}
    for name, kind in _AMOUNTS:
        try:
            ranges[kind] = _range(getattr(body, name), kind)
        except ValueError as e:
            raise InvalidInput(f"{where}{name}: {e}", where + name) from None
    args: dict[str, Any] = {name: getattr(body, name) for name in _AS_IS}
    for name, seconds in _DURATIONS:
        args[seconds] = _duration(getattr(body, name), where + name)
    try:
        return validate_spec(request=ResourceRequest(**ranges), **args)
    except SpecError as e:
        raise InvalidInput(f"{where}{e}", where + e.field) from None


def _range(value: Amount, kind: str) -> Range:
    """parse_range, remembered for short values: the jobs of a batch repeat a few amounts
    ("1", the defaults). A value that does not parse raises and is not remembered."""
    if isinstance(value, str) and len(value) > 32:
        return parse_range(value, kind)
    return _known_range(value, kind)


@functools.lru_cache(maxsize=1024, typed=True)  # typed: 1, 1.0 and "1" apart
def _known_range(value: Amount, kind: str) -> Range:
    return parse_range(value, kind)


def _duration(value: str | float | None, field: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise InvalidInput(f"{field}: {e}", field) from None


class _AppLoad(Body):
    """An app version: job defaults, and what only an app can give (user, volume)."""

    volume: str | None = Field(None, description="NAME:SIZE_MB, a persistent volume at $KRAN_VOLUME")
    user: str | None = Field(None, description="UID or UID:GID the app's jobs run as")
    shared: bool = Field(True, description="whether other users may run the app")

    def defaults(self) -> dict[str, Any]:
        """The job defaults, checked by building a job from them."""
        fields = self.model_dump(exclude_unset=True, exclude_none=True, exclude={"volume", "user", "shared"})
        to_spec(validated(JobSubmit, {"command": ["true"], **fields}))
        return fields


if TYPE_CHECKING:  # and the JOB_FIELDS an app may default

    class AppLoad(_AppLoad):
        def __getattr__(self, name: str) -> Any: ...
else:
    AppLoad = create_model(
        "AppLoad",
        __base__=_AppLoad,
        __doc__=_AppLoad.__doc__,
        __module__=__name__,
        **{f.name: _body_field(f, app=True) for f in JOB_FIELDS if f.app},
    )


def spec_for(jobs: JobService, who: Principal, owner: str, body: JobSubmit, index: int | None = None) -> JobSpec:
    """The job's spec; one naming an app is merged with it by the job service."""
    if body.app is None:
        return to_spec(body, index)
    fields = body.model_dump(exclude_unset=True)
    return jobs.with_app(who, owner, body.app, fields, lambda merged: to_spec(JobSubmit.model_validate(merged), index))


async def classified(jobs: JobService, specs: list[JobSpec], owner: str) -> list[JobSpec]:
    """Image jobs: size and class from the registry, its lookups awaited holding no thread."""
    if not any(s.image for s in specs):
        return specs
    answers = await jobs.settle_images(specs, owner)
    return await run_in_threadpool(jobs.classify, specs, owner, answers)
