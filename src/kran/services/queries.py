"""Read-side use cases: one job with why it waits, lists, server status."""

from __future__ import annotations

from dataclasses import dataclass

from kran import __version__
from kran.domain.accounting import ReportRow, usage_report
from kran.domain.apps import volume_shown
from kran.domain.auth import Principal, can_see
from kran.domain.dependencies import dependency_verdict
from kran.domain.placement import explain_wait
from kran.domain.records import JobRecord
from kran.domain.states import JobState
from kran.errors import Forbidden, InvalidInput, NotFound
from kran.services.runtime import Runtime


@dataclass(frozen=True)
class JobView:
    job: JobRecord
    queue_position: int | None
    waiting_because: str | None


def visible_job(rt: Runtime, job_id: int, who: Principal) -> JobRecord:
    """The job if `who` may see it; others' jobs are "not found", so ids leak nothing."""
    job = rt.store.get_job(job_id)
    if job is None or not can_see(who, job.owner, job.submitted_by):
        raise NotFound(f"job {job_id} not found")
    return job


def get_job(rt: Runtime, job_id: int, who: Principal) -> JobView:
    job = visible_job(rt, job_id, who)
    if job.state != JobState.QUEUED:
        return JobView(job, None, None)
    if job.spec.after or job.spec.after_any:
        verdict = dependency_verdict(rt.store.dependencies_of(job.id))
        if verdict.status == "wait":
            return JobView(job, None, verdict.reason)
    full = rt.disk.full()
    if full:
        return JobView(job, rt.store.queue_position(job) + 1, f"{full}: no job starts until space returns")
    ahead = rt.store.queue_position(job)
    waiting_on = None
    if job.spec.volume:
        user = rt.apps.volume_users([job.spec.volume]).get(job.spec.volume)
        if user is not None:
            shown = volume_shown(job.spec.volume)
            waiting_on = f"volume {shown} is in use by job {user} (one job at a time per volume)"
    why = explain_wait(
        waiting_on=waiting_on,
        node_class=job.spec.node_class,
        request=job.spec.request,
        nodes=rt.nodes(),
        ahead=ahead,
        not_before_in_s=job.not_before - rt.clock.now(),
        reserved_for=rt.reserved_for if rt.reserved_for != job.id else None,
    )
    return JobView(job, ahead + 1, why)


def server_status(rt: Runtime) -> dict[str, object]:
    counts = rt.store.counts_by_state()
    nodes = rt.nodes()
    health = rt.engine.health()
    try:
        rt.store.ping()
        store_ok: str | None = None
    except Exception as e:  # reported, not raised: this is the readiness probe
        store_ok = f"store unreachable: {e}"
    degraded = [why for why in (rt.disk.full(fresh=True),) if why]
    return {
        "version": __version__,
        "instance": rt.instance,
        "ready": store_ok is None,
        "state": "not ready" if store_ok else "degraded" if degraded else "ok",
        "degraded": degraded,
        "store": store_ok or "ok",
        "data_dir": rt.disk.full(fresh=False) or "ok",
        "engines": {k: (v or "ok") for k, v in health.items()},
        "queued": counts.get("queued", 0),
        "running": counts.get("running", 0) + counts.get("starting", 0),
        "jobs_by_state": counts,
        "capacity": {
            "total": rt.capacity.as_dict(),
            "free": sum((n.free for n in nodes), start=type(rt.capacity)()).as_dict(),
        },
    }


def usage(
    rt: Runtime,
    who: Principal,
    *,
    by: str,
    since: float | None,
    until: float | None,
    user: str | None,
    app: str | None,
) -> list[ReportRow]:
    """Admins see everybody's usage; everyone else only their own."""
    if not who.is_admin:
        if user is not None and user != who.user:
            raise Forbidden("you may only see your own usage")
        user = who.user
    if by not in ("user", "app", "day", "image"):
        raise InvalidInput("by must be one of user, app, day, image", "by")
    if since is not None and until is not None and until <= since:
        raise InvalidInput("until must be after since", "until")
    return usage_report(rt.store.attempt_facts(since, until, user, app), by)
