"""/api/v1/schedules: periodic and follow-up schedules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from kran.api.deps import Caller, Jobs, Owner, Schedules
from kran.api.responses import Out
from kran.api.schemas import Body, JobSubmit, classified, spec_for
from kran.api.views import schedule_json
from kran.domain.durations import parse_duration
from kran.errors import InvalidInput

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"])


class ScheduleAdd(Body):
    """A schedule: one trigger (every, cron or after) and the job each run submits."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=200)
    every: str | None = Field(
        None, description="ISO 8601 repeating interval: R5/2026-12-01T02:00:00Z/PT6H, R/P1D, PT1H"
    )
    cron: str | None = Field(None, description="five-field cron expression, evaluated in tz")
    after: list[str] = Field(default_factory=list, description="fire when runs of these schedules succeed")
    after_mode: str = Field("all", description="all parents or any parent")
    tz: str = Field("UTC", description="time zone for cron and for --start without an offset")
    start: str | None = Field(None, description="first fire time (every) / not before (cron)")
    repeat: int | None = Field(None, ge=1, le=10**9, description="at most this many fire times")
    max_lateness: str | float | None = Field(None, description="skip a run that cannot start within this")
    overlap: str = Field("allow", description="allow | forbid | replace a still active run")
    catch_up: str = Field("last", description="after downtime: all | last | none of the missed fire times")
    job: JobSubmit


class Schedule(Out):
    name: str
    owner: str
    kind: str = Field(description="every | cron | after")
    expr: str
    tz: str
    start: str
    repeat: int | None
    max_lateness_s: float | None
    overlap: str
    catch_up: str
    after: list[str] = Field(description="the parent schedules (another user's as OWNER/NAME)")
    after_mode: str
    enabled: bool
    fired: int
    next_fire_time: str | None
    command: list[str]
    image: str | None


class ScheduleRunShown(Out):
    fire_time: str
    job_id: int | None
    run: str = Field(description="started | skipped")
    reason: str | None
    state: str = Field(description="the job's state, or `skipped`")


class ScheduleDetail(Schedule):
    runs: list[ScheduleRunShown]


class ScheduleList(Out):
    schedules: list[Schedule]


class FireTimes(Out):
    name: str
    next: list[str]


class RunNow(Out):
    job_id: int


class ScheduleDeleted(Out):
    deleted: str


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@router.post("", status_code=201, response_model=Schedule, summary="Add a schedule")
async def add_schedule(body: ScheduleAdd, jobs: Jobs, schedules: Schedules, who: Caller) -> dict[str, Any]:
    if body.job.on_behalf_of not in (None, who.user):  # it was ignored: the jobs ran as the caller
        raise InvalidInput(
            "job.on_behalf_of: a schedule's jobs run as the schedule's owner; acting for another user "
            "is not possible for schedules (submit the jobs with on_behalf_of instead)",
            "job.on_behalf_of",
        )
    lateness = None
    if body.max_lateness is not None:
        try:
            lateness = parse_duration(body.max_lateness)
        except ValueError as e:
            raise InvalidInput(f"max_lateness: {e}", "max_lateness") from None
    (spec,) = await classified(jobs, [spec_for(jobs, who, who.user, body.job)], who.user)
    s = await run_in_threadpool(
        schedules.add_schedule,
        name=body.name,
        owner=who.user,
        spec=spec,
        every=body.every,
        cron=body.cron,
        after=body.after or None,
        after_mode=body.after_mode,
        tz=body.tz,
        start=body.start,
        repeat=body.repeat,
        max_lateness_s=lateness,
        overlap=body.overlap,
        catch_up=body.catch_up,
        sees_all=who.is_admin,
    )
    return schedule_json(s)


@router.get("", response_model=ScheduleList, summary="List schedules")
def list_schedules(schedules: Schedules, who: Caller) -> dict[str, Any]:
    return {"schedules": [schedule_json(s) for s in schedules.visible(who)]}


@router.get("/{name}", response_model=ScheduleDetail, summary="One schedule with the history of its runs")
def show_schedule(
    name: str, schedules: Schedules, who: Caller, owner: Owner = None, limit: int = Query(100, ge=1, le=10_000)
) -> dict[str, Any]:
    s = schedules.get_schedule(name, who, owner)
    runs = [
        {
            "fire_time": _iso(r.fire_time),
            "job_id": r.job_id,
            "run": r.state,
            "reason": r.reason,
            "state": r.job_state.value if r.job_state else "skipped",
        }
        for r in schedules.runs(s, limit)
    ]
    return {**schedule_json(s), "runs": runs}


@router.get("/{name}/next", response_model=FireTimes, summary="The next fire times")
def next_fire_times(
    name: str, schedules: Schedules, who: Caller, owner: Owner = None, n: int = Query(5, ge=1, le=1000)
) -> dict[str, Any]:
    return {"name": name, "next": [t.isoformat() for t in schedules.upcoming(name, n, who, owner)]}


@router.post("/{name}/enable", response_model=Schedule, summary="Enable (fires from now on)")
def enable(name: str, schedules: Schedules, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return schedule_json(schedules.set_enabled(name, True, who, owner))


@router.post("/{name}/disable", response_model=Schedule, summary="Disable")
def disable(name: str, schedules: Schedules, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return schedule_json(schedules.set_enabled(name, False, who, owner))


@router.post(
    "/{name}/run-now", status_code=201, response_model=RunNow, summary="Submit a run now, outside the schedule"
)
def run_now(name: str, schedules: Schedules, who: Caller, owner: Owner = None) -> dict[str, Any]:
    return {"job_id": schedules.run_now(name, who, owner)}


@router.delete("/{name}", response_model=ScheduleDeleted, summary="Delete the schedule (its jobs stay)")
def delete(name: str, schedules: Schedules, who: Caller, owner: Owner = None) -> dict[str, Any]:
    schedules.delete_schedule(name, who, owner)
    return {"deleted": name}
