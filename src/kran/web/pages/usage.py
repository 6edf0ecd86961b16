"""Usage: jobs by end state, CPU, memory, GPU and wall hours per user, account, app, day,
image or array over a period (the numbers `kran usage` prints), as a table, a bar chart
and a CSV download. The same query service and rules as GET /api/v1/usage."""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from kran.domain.accounting import REPORT_BY
from kran.domain.schedules import parse_time
from kran.errors import InvalidInput, KranError, http_status
from kran.web.render import page
from kran.web.session import Look, Viewer, services

router = APIRouter()
METRICS = ("cpu_hours", "mem_gb_hours", "gpu_hours", "wall_hours")
DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may take for a formula
MAX_FILLED_DAYS = 366  # a by-day chart shows the days without usage too, up to a year


@dataclass(frozen=True)
class UsageQuery:
    """The form's fields, as given (kept as text for the form, links and the CSV)."""

    by: str
    since: str = ""
    until: str = ""
    user: str = ""
    app: str = ""

    def params(self) -> dict[str, str]:
        given = {"by": self.by, "since": self.since, "until": self.until, "user": self.user, "app": self.app}
        return {k: v for k, v in given.items() if v}


def period_bound(text: str, field: str, end: bool = False) -> float | None:
    """A date or an ISO 8601 date-time (UTC when no offset) as epoch seconds; a plain date
    as `end` of the period counts the whole day (to the next midnight)."""
    text = text.strip()
    if not text:
        return None
    try:
        t = parse_time(text)
    except ValueError as e:
        raise InvalidInput(f"{field}: {e}", field) from None
    if end and DATE_ONLY.fullmatch(text):
        try:
            t += timedelta(days=1)
        except OverflowError:  # 9999-12-31: the last day there is, whole
            return datetime.max.replace(tzinfo=UTC).timestamp()
    return t.timestamp()


def default_by(viewer: Viewer) -> str:
    """An admin sees everyone by user first; a user, whose rows are all their own, by day."""
    return "user" if viewer.who.is_admin else "day"


async def usage_rows(request: Request, viewer: Viewer, q: UsageQuery) -> list[dict[str, Any]]:
    """The API's rows (rounded as GET /api/v1/usage rounds them) for this viewer."""
    found = await run_in_threadpool(
        services(request).queries.usage,
        viewer.who,
        by=q.by,
        since=period_bound(q.since, "since"),
        until=period_bound(q.until, "until", end=True),
        user=q.user or None,
        app=q.app or None,
    )
    return [{"key": r.key, "jobs": dict(r.jobs), **{m: round(getattr(r, m), 6) for m in METRICS}} for r in found]


def end_states(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({s for r in rows for s in r["jobs"]})


def flat_rows(rows: list[dict[str, Any]], by: str) -> tuple[list[str], list[list[Any]]]:
    """The columns and cells `kran usage -o csv` prints: the key, jobs per end state, hours."""
    states = end_states(rows)
    columns = [by, *states, *METRICS]
    cells = [[r["key"], *(r["jobs"].get(s, 0) for s in states), *(r[m] for m in METRICS)] for r in rows]
    return columns, cells


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    jobs: dict[str, int] = {}
    for r in rows:
        for s, n in r["jobs"].items():
            jobs[s] = jobs.get(s, 0) + n
    return {"jobs": jobs, **{m: round(sum(r[m] for r in rows), 6) for m in METRICS}}


def safe_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, quoted with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(rows: list[dict[str, Any]], by: str) -> str:
    columns, cells = flat_rows(rows, by)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([safe_cell(c) for c in row] for row in cells)
    return out.getvalue()


def filled_days(
    rows: list[dict[str, Any]], since: date | None = None, until: date | None = None
) -> list[dict[str, Any]]:
    """By-day rows with the days that had no usage as zero rows, from `since` (else the first
    day with usage) through `until` (else the last): a chart of a period shows its quiet
    days. Left as they are when that is over a year."""
    if not rows:
        return rows
    have = {r["key"]: r for r in rows}
    first = since or date.fromisoformat(rows[0]["key"])
    last = until or date.fromisoformat(rows[-1]["key"])
    if not 0 <= (last - first).days <= MAX_FILLED_DAYS:
        return rows
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return [have.get(d) or {"key": d, "jobs": {}, **dict.fromkeys(METRICS, 0.0)} for d in days]


def given_day(text: str) -> date | None:
    """The day a period's bound names, when it is a plain date."""
    text = text.strip()
    return date.fromisoformat(text) if DATE_ONLY.fullmatch(text) else None


def chart_spec(rows: list[dict[str, Any]], q: UsageQuery) -> dict[str, Any]:
    """A Chart.js bar chart: hours per group on the left axis, jobs on the right."""
    shown = filled_days(rows, given_day(q.since), given_day(q.until)) if q.by == "day" else rows
    datasets: list[dict[str, Any]] = [
        {"label": "CPU hours", "data": [r["cpu_hours"] for r in shown], "yAxisID": "y"},
        {"label": "wall hours", "data": [r["wall_hours"] for r in shown], "yAxisID": "y"},
    ]
    if any(r["gpu_hours"] for r in shown):
        datasets.append({"label": "GPU hours", "data": [r["gpu_hours"] for r in shown], "yAxisID": "y"})
    datasets.append({"label": "jobs", "data": [sum(r["jobs"].values()) for r in shown], "yAxisID": "jobs"})
    for d in datasets:
        d["maxBarThickness"] = 48
    return {
        "type": "bar",
        "data": {"labels": [r["key"] for r in shown], "datasets": datasets},
        "options": {
            "maintainAspectRatio": False,
            "scales": {
                "y": {"beginAtZero": True, "position": "left", "title": {"display": True, "text": "hours"}},
                "jobs": {
                    "beginAtZero": True,
                    "position": "right",
                    "grid": {"drawOnChartArea": False},
                    "ticks": {"precision": 0},
                    "title": {"display": True, "text": "jobs"},
                },
            },
        },
    }


def recent(days: int, by: str) -> str:
    """A link to the last `days` days, today included."""
    today = datetime.fromtimestamp(time.time(), UTC).date()
    since = (today - timedelta(days=days - 1)).isoformat()
    return "/ui/usage?" + urlencode({"by": by, "since": since, "until": today.isoformat()})


async def usage_query(
    viewer: Look,
    by: str = Query("", max_length=20),
    since: str = Query("", max_length=64),
    until: str = Query("", max_length=64),
    user: str = Query("", max_length=100),
    app: str = Query("", max_length=200),
) -> UsageQuery:
    """The page's and the CSV's query, as the form sends it."""
    return UsageQuery(by or default_by(viewer), since, until, user, app)


Asked = Annotated[UsageQuery, Depends(usage_query)]


@router.get("/usage")
async def usage_page(request: Request, viewer: Look, q: Asked) -> Response:
    status, error, rows = 200, None, []
    try:
        rows = await usage_rows(request, viewer, q)
    except KranError as e:
        status, error = http_status(e), str(e)
    return page(
        request,
        "usage.html",
        viewer,
        status,
        q=q,
        error=error,
        choices=REPORT_BY,
        rows=rows,
        states=end_states(rows),
        metrics=METRICS,
        total=totals(rows),
        chart=chart_spec(rows, q) if rows else None,
        csv_link="/ui/usage.csv?" + urlencode(q.params()),
        presets=[
            ("Last 7 days", recent(7, q.by)),
            ("Last 30 days", recent(30, q.by)),
            ("All time", "/ui/usage?" + urlencode({"by": q.by})),
        ],
    )


@router.get("/usage.csv")
async def usage_csv(request: Request, viewer: Look, q: Asked) -> Response:
    rows = await usage_rows(request, viewer, q)  # a KranError: the error page, with its status
    return Response(
        csv_text(rows, q.by),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="kran-usage-by-{q.by}.csv"'},
    )
