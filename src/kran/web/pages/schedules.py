"""Schedules: each with its trigger, next fire times and recent runs (outcome, job), and
enable, disable, run now; one schedule's page with more of both. Names are per owner: an
admin acts on another user's schedule by naming its owner (the form's `owner`, as the
API's `?owner=`); for anyone else another user's schedule is not found, like a missing one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kran.api.deps import MAX_ID
from kran.domain.auth import Principal
from kran.domain.records import ScheduleRecord
from kran.errors import InvalidInput
from kran.services.schedules import ScheduleService, shown_parent
from kran.web.render import page
from kran.web.session import Act, Look, services

router = APIRouter()
NEXT_IN_TABLE, RUNS_IN_TABLE = 3, 5
NEXT_ON_PAGE, RUNS_ON_PAGE = 10, 100
Name = Annotated[str, Path(max_length=200)]


def schedule_service(request: Request) -> ScheduleService:
    found: ScheduleService = services(request).schedules
    return found


def trigger_text(s: ScheduleRecord) -> str:
    if s.kind == "after":
        joined = (" and " if s.after_mode == "all" else " or ").join(shown_parent(p, s.owner) for p in s.parents)
        return f"after {joined}"
    return f"{s.kind} {s.expr}" + (f" ({s.tz})" if s.kind == "cron" else "")


def schedule_view(
    service: ScheduleService, s: ScheduleRecord, who: Principal, n_next: int, n_runs: int
) -> dict[str, Any]:
    """What a page shows of one schedule (blocking: reads the store)."""
    runs = [
        {
            "fire_time": datetime.fromtimestamp(r.fire_time, UTC).isoformat(),
            "job_id": r.job_id,
            "run": r.state,
            "reason": r.reason,
            "state": r.job_state.value if r.job_state else "skipped",
        }
        for r in service.runs(s, n_runs)
    ]
    upcoming = service.upcoming(s.name, n_next, who, s.owner) if s.enabled else []
    return {
        "name": s.name,
        "owner": s.owner,
        "key": s.key,
        "trigger": trigger_text(s),
        "enabled": s.enabled,
        "fired": s.fired,
        "repeat": s.repeat,
        "overlap": s.overlap,
        "catch_up": s.catch_up,
        "command": list(s.spec.command),
        "image": s.spec.app or s.spec.image,
        "next": [t.isoformat() for t in upcoming],
        "runs": runs,
    }


def _table(service: ScheduleService, who: Principal) -> list[dict[str, Any]]:
    shown = sorted(service.visible(who), key=lambda s: (s.owner != who.user, s.owner, s.name))
    return [schedule_view(service, s, who, NEXT_IN_TABLE, RUNS_IN_TABLE) for s in shown]


@router.get("/schedules")
async def schedule_table(
    request: Request,
    viewer: Look,
    ran: int | None = Query(None, ge=1, le=MAX_ID),
    done: str = Query("", pattern="^(|enabled|disabled)$"),
    key: str = Query("", max_length=301),
) -> Response:
    rows = await run_in_threadpool(_table, schedule_service(request), viewer.who)
    # the notice names a schedule shown here only: no text of a link's own is ever shown
    changed = key if done and any(r["key"] == key for r in rows) else ""
    return page(request, "schedules.html", viewer, schedules=rows, ran=ran, done=done, changed=changed)


@router.get("/schedules/{name}")
async def schedule_page(
    request: Request,
    name: Name,
    viewer: Look,
    owner: str = Query("", max_length=100),
    ran: int | None = Query(None, ge=1, le=MAX_ID),
    done: str = Query("", pattern="^(|enabled|disabled)$"),
) -> Response:
    service = schedule_service(request)

    def load() -> dict[str, Any]:
        s = service.get_schedule(name, viewer.who, owner or None)
        return schedule_view(service, s, viewer.who, NEXT_ON_PAGE, RUNS_ON_PAGE)

    s = await run_in_threadpool(load)
    return page(request, "schedule.html", viewer, s=s, ran=ran, done=done, changed=s["key"] if done else "")


async def _form(request: Request) -> tuple[str | None, str]:
    """The form's `owner` (None: the viewer's own) and where to go back to."""
    form = await request.form()
    owner, back = form.get("owner"), form.get("back")
    if owner is not None and (not isinstance(owner, str) or len(owner) > 100):
        raise InvalidInput("owner: a user name of at most 100 characters", "owner")
    if not (isinstance(back, str) and back.startswith("/ui/schedules") and "?" not in back):
        back = "/ui/schedules"
    return owner or None, back


def _redirect(back: str, owner: str | None, **notice: Any) -> Response:
    """Back to the page the form was on (a schedule's page needs its owner to find it)."""
    args = {**notice, **({"owner": owner} if owner and back != "/ui/schedules" else {})}
    return RedirectResponse(f"{back}?{urlencode(args)}", status_code=303)


@router.post("/schedules/{name}/enable")
async def enable(request: Request, name: Name, viewer: Act) -> Response:
    owner, back = await _form(request)
    s = await run_in_threadpool(schedule_service(request).set_enabled, name, True, viewer.who, owner)
    return _redirect(back, owner, done="enabled", key=s.key)


@router.post("/schedules/{name}/disable")
async def disable(request: Request, name: Name, viewer: Act) -> Response:
    owner, back = await _form(request)
    s = await run_in_threadpool(schedule_service(request).set_enabled, name, False, viewer.who, owner)
    return _redirect(back, owner, done="disabled", key=s.key)


@router.post("/schedules/{name}/run-now")
async def run_now(request: Request, name: Name, viewer: Act) -> Response:
    owner, back = await _form(request)
    job_id = await run_in_threadpool(schedule_service(request).run_now, name, viewer.who, owner)
    return _redirect(back, owner, ran=job_id)
