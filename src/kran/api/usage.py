"""/api/v1/usage: who used what, over any period."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import Field

from kran.api.deps import Caller, Queries
from kran.api.responses import Out
from kran.domain.schedules import parse_time
from kran.errors import InvalidInput

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])


class UsageRow(Out):
    key: str = Field(description="the user, account, app, day, image or array")
    jobs: dict[str, int] = Field(description="jobs by end state")
    cpu_hours: float
    mem_gb_hours: float
    gpu_hours: float
    wall_hours: float


class UsageReport(Out):
    by: str
    rows: list[UsageRow]


def _time(value: str | None, field: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value).timestamp()
    except ValueError as e:
        raise InvalidInput(f"{field}: {e}", field) from None


@router.get(
    "", response_model=UsageReport, summary="Usage report: jobs by end state, CPU, memory, GPU and wall hours per group"
)
def usage(
    queries: Queries,
    who: Caller,
    by: str = Query("user", description="user | account | app | day | image | array"),
    since: str | None = Query(None, description="ISO 8601; attempts that ended at or after"),
    until: str | None = Query(None, description="ISO 8601; attempts that ended before"),
    user: str | None = None,
    app: str | None = None,
) -> dict[str, Any]:
    rows = queries.usage(who, by=by, since=_time(since, "since"), until=_time(until, "until"), user=user, app=app)
    return {
        "by": by,
        "rows": [
            {
                "key": r.key,
                "jobs": r.jobs,
                "cpu_hours": round(r.cpu_hours, 6),
                "mem_gb_hours": round(r.mem_gb_hours, 6),
                "gpu_hours": round(r.gpu_hours, 6),
                "wall_hours": round(r.wall_hours, 6),
            }
            for r in rows
        ],
    }
