"""Templates and the small formatting helpers they use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from kran import __version__
from kran.web.session import Viewer

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

NAV = (
    ("jobs", "Jobs"),
    ("submit", "Submit"),
    ("nodes", "Nodes"),
    ("images", "Images"),
    ("schedules", "Schedules"),
    ("workflows", "Workflows"),
    ("usage", "Usage"),
)


def page(request: Request, name: str, viewer: Viewer | None, status: int = 200, **ctx: Any) -> Response:
    context = {"viewer": viewer, "nav": NAV, "version": __version__, "status": status, **ctx}
    return templates.TemplateResponse(request, name, context, status_code=status)


def when(value: str | float | None) -> str:
    """An ISO time or epoch seconds as 'YYYY-MM-DD HH:MM:SS' UTC."""
    if value is None or value == "":
        return ""
    try:
        t = datetime.fromisoformat(value) if isinstance(value, str) else datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def seconds(s: float | None) -> str:
    if s is None:
        return ""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def size(n: float | None) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def mib(n: float | None) -> str:
    return "" if n is None else size(float(n) * 1024 * 1024)


def request_text(r: dict[str, str] | str | None) -> str:
    """A job's resource request ({"cpus": "1-4", "mem_mb": "512", ...}) as one line."""
    if not isinstance(r, dict):
        return r or ""
    parts = [f"{r.get('cpus', '?')} cpu", f"{r.get('mem_mb', '?')} MiB"]
    if r.get("gpus") not in (None, "0"):
        parts.append(f"{r['gpus']} gpu")
    if r.get("disk_mb") not in (None, "0"):
        parts.append(f"{r['disk_mb']} MiB disk")
    return " · ".join(parts)


def pct(used: float | None, total: float | None) -> int:
    if not used or not total:
        return 0
    return max(0, min(100, round(100 * float(used) / float(total))))


templates.env.filters.update(when=when, seconds=seconds, size=size, mib=mib, request=request_text)
templates.env.globals.update(pct=pct)
