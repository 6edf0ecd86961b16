"""Read-side use cases: one job with why it waits, lists, server status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kran import __version__
from kran.domain.accounting import REPORT_BY, ReportRow, usage_report
from kran.domain.apps import volume_shown
from kran.domain.auth import Principal, can_see
from kran.domain.dependencies import dependency_verdict
from kran.domain.placement import explain_wait
from kran.domain.records import EventRecord, JobFind, JobRecord
from kran.domain.resources import Resources
from kran.domain.states import JobState
from kran.errors import Forbidden, InvalidInput, NotFound
from kran.ports import Apps, Clock, Engine, Store
from kran.services.disk import DiskWatch
from kran.services.fairness import Fairness
from kran.services.nodes import NodeDirectory


@dataclass(frozen=True)
class JobView:
    job: JobRecord
    queue_position: int | None
    waiting_because: str | None
    factors: dict[str, float | int] | None = None  # a queued job's priority factors (as sprio)


class JobQueries:
    """Reads: one job with why it waits, server status, usage."""

    def __init__(
        self,
        store: Store,
        nodes: NodeDirectory,
        engine: Engine,
        apps: Apps,
        disk: DiskWatch,
        clock: Clock,
        instance: str,
        reserved_for: Callable[[], int | None],
        fairness: Fairness,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.engine = engine
        self.apps = apps
        self.disk = disk
        self.clock = clock
        self.instance = instance
        self.reserved_for = reserved_for
        self.fairness = fairness

    def list_jobs(
        self,
        who: Principal,
        states: list[JobState],
        labels: dict[str, str] | None,
        mine: bool,
        limit: int,
        tasks: bool = True,
    ) -> list[JobRecord]:
        return self.store.list_jobs(states, labels, who.user if mine else None, limit, visible_to=who, tasks=tasks)

    def page(self, who: Principal, find: JobFind) -> tuple[list[JobRecord], int]:
        """The dashboard's table: a page of the jobs `who` may see, and how many match."""
        return self.store.page_jobs(find, who)

    def stored(self, job_id: int) -> JobRecord | None:
        """The job as stored, whoever's (for the server's own checks, never shown)."""
        return self.store.get_job(job_id)

    def events_after(self, who: Principal, after: int, limit: int, job: int | None) -> list[EventRecord]:
        return self.store.events_after(after, limit, job, who)

    def last_event_id(self) -> int:
        return self.store.last_event_id()

    def visible_job(self, job_id: int, who: Principal) -> JobRecord:
        """The job if `who` may see it; others' jobs are "not found", so ids leak nothing."""
        job = self.store.get_job(job_id)
        if job is None or not can_see(who, job.owner, job.submitted_by):
            raise NotFound(f"job {job_id} not found")
        return job

    def get_job(self, job_id: int, who: Principal) -> JobView:
        job = self.visible_job(job_id, who)
        if job.state != JobState.QUEUED:
            return JobView(job, None, None)
        # read once, for the factors, the position and the limits
        standing = self.fairness.standing(self.clock.now()) if self.fairness.needs_standing() else None
        factors = self.fairness.factors(job, standing)
        if not who.is_admin:  # with the account's usage in it: others' usage could be worked out
            factors.pop("effective_usage", None)
        if job.spec.blocked:
            verdict = dependency_verdict(self.store.dependencies_of(job.id))
            if verdict.status == "wait":
                return JobView(job, None, verdict.reason, factors)
        ahead = self.fairness.queue_position(job, standing)
        full = self.disk.full()
        if full:
            return JobView(job, ahead + 1, f"{full}: no job starts until space returns", factors)
        down = self.engine.unavailable(image=job.spec.image is not None)
        if down:  # admission let it in: only the engine's health can say this now
            return JobView(job, ahead + 1, f"{down}: it starts when the engine answers again", factors)
        held = self.fairness.hold_reason(job, standing)
        if not held and job.spec.singleton and job.spec.name:
            other = self.fairness.accounts.active_named(job.owner, job.spec.name)
            if other is not None:
                held = f"singleton: job {other} of the same name ({job.spec.name}) is running"
        if held:
            return JobView(job, ahead + 1, held, factors)
        waiting_on = None
        if job.spec.volume:
            user = self.apps.volume_users([job.spec.volume]).get(job.spec.volume)
            if user is not None:
                shown = volume_shown(job.spec.volume)
                waiting_on = f"volume {shown} is in use by job {user} (one job at a time per volume)"
        why = explain_wait(
            waiting_on=waiting_on,
            node_class=job.spec.node_class,
            request=job.spec.request,
            nodes=self.nodes.with_load(),
            ahead=ahead,
            not_before_in_s=job.not_before - self.clock.now(),
            reserved_for=reserved if (reserved := self.reserved_for()) != job.id else None,
        )
        return JobView(job, ahead + 1, why, factors)

    def health(self) -> dict[str, object]:
        """The engines' and the data dir's health, as measured (no store reads: the
        dashboard's nodes page shows it every few seconds)."""
        health = self.engine.health()
        degraded = [why for why in (self.disk.full(fresh=True), *health.values()) if why]
        return {
            "state": "degraded" if degraded else "ok",
            "degraded": degraded,
            "engines": {k: (v or "ok") for k, v in health.items()},
            "warnings": self.engine.warnings(),
        }

    def server_status(self) -> dict[str, object]:
        counts = self.store.counts_by_state()
        nodes = self.nodes.with_load()
        try:
            self.store.ping()
            store_ok: str | None = None
        except Exception as e:  # reported, not raised: this is the readiness probe
            store_ok = f"store unreachable: {e}"
        health = self.health()
        return {
            "version": __version__,
            "instance": self.instance,
            "ready": store_ok is None,
            **health,
            "state": "not ready" if store_ok else health["state"],
            "store": store_ok or "ok",
            "data_dir": self.disk.full(fresh=False) or "ok",
            "queued": counts.get("queued", 0),
            "running": counts.get("running", 0) + counts.get("starting", 0),
            "jobs_by_state": counts,
            "capacity": {
                "total": sum((n.total for n in nodes), start=Resources()).as_dict(),
                "free": sum((n.free for n in nodes), start=Resources()).as_dict(),
            },
        }

    def usage(
        self,
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
        if by not in REPORT_BY:
            raise InvalidInput(f"by must be one of {', '.join(REPORT_BY)}", "by")
        if since is not None and until is not None and until <= since:
            raise InvalidInput("until must be after since", "until")
        return usage_report(self.store.attempt_facts(since, until, user, app), by)
