"""How jobs, attempts and events look in the API (stable fields, see docs/api.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from kran.domain.accounting import attempt_usage, efficiency_hints, job_usage
from kran.domain.apps import volume_shown
from kran.domain.jobs import JobSpec, plain
from kran.domain.records import AttemptRecord, EventRecord, JobRecord, ScheduleRecord
from kran.domain.resources import Resources
from kran.services.files import Entry
from kran.services.queries import JobView
from kran.services.schedules import shown_parent


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def alloc_json(r: Resources | None) -> dict[str, Any] | None:
    return None if r is None else r.as_dict()


def attempt_json(a: AttemptRecord) -> dict[str, Any]:
    usage = attempt_usage(
        a.usage,
        queued_at=a.queued_at,
        created_at=a.created_at,
        started_at=a.started_at,
        finished_at=a.finished_at,
        alloc_cpus=a.allocation.cpus,
    )
    return {
        "number": a.number,
        "state": a.state.value,
        "node": a.node,
        "allocation": alloc_json(a.allocation),
        "created_at": iso(a.created_at),
        "started_at": iso(a.started_at),
        "finished_at": iso(a.finished_at),
        "exit_code": a.exit_code,
        "reason": a.reason,
        "usage": usage,
    }


# JobSpec fields shown otherwise (request as text, volume as APP/VOLUME, run_as as `user`,
# inputs as a bool; name and priority from the job's row) or not at all (shell, binds, cwd:
# kran's own; volume_mb: the app's); every other field is shown as it is stored.
SPEC_NOT_AS_IS = frozenset(
    {"name", "priority", "request", "volume", "volume_mb", "run_as", "inputs", "shell", "binds", "cwd", "array"}
)
_SPEC_SHOWN = tuple(f.name for f in fields(JobSpec) if f.name not in SPEC_NOT_AS_IS)


def spec_shown(s: JobSpec) -> dict[str, Any]:
    return {name: plain(getattr(s, name)) for name in _SPEC_SHOWN}


def job_json(job: JobRecord, view: JobView | None = None, hostnames: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`hostnames` (node id -> hostname) fills in `node.hostname`."""
    s = job.spec
    attempts = [attempt_json(a) for a in job.attempt_list]
    usage = job_usage([a["usage"] for a in attempts])
    hints: list[str] = []
    if job.state.is_final and job.attempt_list:
        last, last_json = job.attempt_list[-1], attempts[-1]["usage"]
        hints = efficiency_hints(
            cpu_seconds=last.usage.cpu_seconds,
            peak_memory_bytes=last.usage.peak_memory_bytes,
            wall_seconds=last_json["wall_seconds"],
            alloc_cpus=last.allocation.cpus,
            alloc_mem_mb=last.allocation.mem_mb,
        )
    return {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        # `pulling` is the part of `starting` spent pulling the image onto the node
        "state": "pulling" if job.pull is not None and job.state.value == "starting" else job.state.value,
        "priority": job.priority,
        **spec_shown(s),
        "request": s.request_text(),
        "inputs": s.inputs is not None,
        "volume": volume_shown(s.volume) if s.volume else None,
        "user": f"{s.run_as[0]}:{s.run_as[1]}" if s.run_as else None,
        "array": None if s.array is None else dict(zip(("id", "index", "count"), s.array, strict=True)),
        "files_expired": job.files_expired,
        "submitted_at": iso(job.submitted_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "exit_code": job.exit_code,
        "reason": job.reason,
        "node": None if job.node is None else {"id": job.node, "hostname": (hostnames or {}).get(job.node)},
        "pull": job.pull,
        "allocation": alloc_json(job.allocation),
        "attempt": job.attempts,
        "attempts": attempts,
        "usage": usage,
        "hints": hints,
        "queue_position": view.queue_position if view else None,
        "waiting_because": view.waiting_because if view else None,
        "priority_factors": view.factors if view else None,
    }


def event_json(e: EventRecord) -> dict[str, Any]:
    return {
        "id": e.id,
        "job_id": e.job_id,
        "attempt": e.attempt,
        "from": e.from_state,
        "to": e.to_state,
        "reason": e.reason,
        "at": iso(e.at),
    }


def shown_name(name: str) -> str:
    """A file name that is not UTF-8 (a job's bytes, read as lone surrogates) with its odd
    bytes as \\xNN escapes: JSON can carry it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def entry_json(e: Entry) -> dict[str, Any]:
    return {"name": shown_name(e.name), "type": e.type, "size": e.size, "mtime": iso(e.mtime)}


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def schedule_json(s: ScheduleRecord) -> dict[str, Any]:
    return {
        "name": s.name,
        "owner": s.owner,
        "kind": s.kind,
        "expr": s.expr,
        "tz": s.tz,
        "start": _utc(s.start_at).isoformat(),
        "repeat": s.repeat,
        "max_lateness_s": s.max_lateness_s,
        "overlap": s.overlap,
        "catch_up": s.catch_up,
        "after": [shown_parent(p, s.owner) for p in s.parents],
        "after_mode": s.after_mode,
        "enabled": s.enabled,
        "fired": s.fired,
        "next_fire_time": _utc(s.next_fire_at).isoformat() if s.next_fire_at is not None else None,
        "command": list(s.spec.command),
        "image": s.spec.image,
    }
