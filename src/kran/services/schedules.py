"""Periodic schedules and schedules that follow other schedules.

Each fire is decided here (which due fire times run, overlap policy) and stored by the
schedule store in one transaction with the jobs it submits. `schedule_tick` runs in the
scheduler loop about once a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from kran.domain.auth import Principal, can_see
from kran.domain.jobs import JobSpec
from kran.domain.records import PlannedRun, ScheduleRecord, ScheduleRun
from kran.domain.schedules import Trigger, check_cron, next_fire_time, parse_every, parse_time, plan_due, zone
from kran.domain.states import JobState
from kran.errors import Conflict, InvalidInput, NotFound, QueueFull
from kran.ports import Clock, Metrics, Schedules, Store
from kran.services.admission import Admission
from kran.services.disk import DiskWatch
from kran.services.wakeups import Wakeups

log = logging.getLogger("kran.schedules")

OVERLAP = ("allow", "forbid", "replace")
CATCH_UP = ("all", "last", "none")
MAX_DUE_PER_TICK = 10_000


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def trigger_of(s: ScheduleRecord) -> Trigger:
    return Trigger(s.kind, s.expr, _utc(s.start_at), s.repeat, s.tz)


MAX_REPEAT = 2**31 - 1  # the store's integers; more repeats than that never end anyway


def parent_key(given: str, owner: str) -> str:
    """A parent as "owner/name": a bare name is one of the owner's own schedules."""
    return given if "/" in given else f"{owner}/{given}"


def _job_spec(s: ScheduleRecord, fire_time: float) -> JobSpec:
    env = {**s.spec.env, "KRAN_SCHEDULE": s.name, "KRAN_FIRE_TIME": _utc(fire_time).isoformat()}
    return replace(s.spec, env=env, labels={**s.spec.labels, "kran.schedule": s.name})


def shown_parent(key: str, owner: str) -> str:
    """A parent as its owner names it: bare when it is the owner's own."""
    return key.removeprefix(f"{owner}/")


class ScheduleService:
    def __init__(
        self,
        schedules: Schedules,
        store: Store,
        admission: Admission,
        clock: Clock,
        wakeups: Wakeups,
        metrics: Metrics,
        disk: DiskWatch,
        queue_max: int,
        admit: Callable[[list[JobSpec], str, bool], list[JobSpec]] | None = None,
    ) -> None:
        self.schedules = schedules
        # what a submit checks (services.jobs.JobService.check: account, wall time, notify URL,
        # admission, dependencies), the spec as it will be stored; without it, admission alone
        self.admit = admit or self._admission_only
        self.store = store
        self.admission = admission
        self.clock = clock
        self.wakeups = wakeups
        self.metrics = metrics
        self.disk = disk
        self.queue_max = queue_max

    def _admission_only(self, specs: list[JobSpec], owner: str, sees_all: bool) -> list[JobSpec]:
        self.admission.check(specs)
        return specs

    def add_schedule(
        self,
        *,
        name: str,
        owner: str,
        spec: JobSpec,
        every: str | None = None,
        cron: str | None = None,
        after: list[str] | None = None,
        after_mode: str = "all",
        tz: str = "UTC",
        start: str | None = None,
        repeat: int | None = None,
        max_lateness_s: float | None = None,
        overlap: str = "allow",
        catch_up: str = "last",
        sees_all: bool = False,
    ) -> ScheduleRecord:
        """`sees_all`: an admin adds it, whose schedules may follow anyone's. Its job must be
        one a submit would take (refused here, not at every fire)."""
        now = _utc(self.clock.now())
        if sum(x is not None and x != [] for x in (every, cron, after)) != 1:
            raise InvalidInput("give exactly one of --every, --cron or --after", "trigger")
        if not name or len(name) > 200 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise InvalidInput("a schedule name is 1-200 letters, digits, '-', '_' or '.'", "name")
        if overlap not in OVERLAP:
            raise InvalidInput(f"overlap must be one of {', '.join(OVERLAP)}", "overlap")
        if catch_up not in CATCH_UP:
            raise InvalidInput(f"catch_up must be one of {', '.join(CATCH_UP)}", "catch_up")
        if after_mode not in ("all", "any"):
            raise InvalidInput("after_mode must be all or any", "after_mode")
        if repeat is not None and repeat < 1:
            raise InvalidInput("repeat must be at least 1", "repeat")
        if max_lateness_s is not None and max_lateness_s <= 0:
            raise InvalidInput("max_lateness must be positive", "max_lateness")
        try:
            zone(tz)
            start_at = parse_time(start, tz) if start else None
            if every is not None:
                first, every_repeat, expr = parse_every(every, now, start_at)
                if every_repeat is not None and repeat is not None:
                    raise ValueError("give the repeat count in the interval (R5/...) or with --repeat, not both")
                kind, repeat = "every", every_repeat if every_repeat is not None else repeat
            elif cron is not None:
                check_cron(cron)
                kind, expr, first = "cron", cron, start_at or now
            else:
                kind, expr, first = "after", "", start_at or now
        except (ValueError, OverflowError) as e:
            raise InvalidInput(str(e) or "out of range", "trigger") from None
        known = {s.key: s for s in self.schedules.all() if sees_all or s.owner == owner}
        parents = [parent_key(p, owner) for p in after or []]
        for p, given in zip(parents, after or [], strict=True):  # another user's is unknown, as a missing one
            if p not in known:
                raise InvalidInput(f"after: unknown schedule {given!r}", "after")
        if f"{owner}/{name}" in known:
            raise Conflict(f"schedule {name!r} exists already")
        (spec,) = self.admit([spec], owner, sees_all)
        if repeat is not None and repeat > MAX_REPEAT:
            raise InvalidInput(f"repeat is at most {MAX_REPEAT}", "repeat")
        seen = {str(known[p].id): self._last_run_id(known[p].id) for p in parents}
        trigger = Trigger(kind, expr, first, repeat, tz)
        try:
            nxt = None if kind == "after" else next_fire_time(trigger, first - timedelta(microseconds=1))
        except (ValueError, OverflowError) as e:  # e.g. a cron day that no month has
            raise InvalidInput(f"the schedule can never fire: {e}", "trigger") from None
        return self.schedules.add(
            {
                "name": name,
                "owner": owner,
                "kind": kind,
                "expr": expr,
                "tz": tz,
                "start_at": first.timestamp(),
                "repeat": repeat,
                "max_lateness_s": max_lateness_s,
                "overlap": overlap,
                "catch_up": catch_up,
                "parents": parents,
                "after_mode": after_mode,
                "spec": spec,
                "enabled": True,
                "next_fire_at": nxt.timestamp() if nxt else None,
                "fired": 0,
                "seen": seen,
                "created_at": now.timestamp(),
            }
        )

    def _last_run_id(self, schedule_id: int) -> int:
        runs = self.schedules.runs(schedule_id, limit=1)
        return runs[0].id if runs else 0

    def visible(self, who: Principal) -> list[ScheduleRecord]:
        return [s for s in self.schedules.all() if can_see(who, s.owner)]

    def runs(self, s: ScheduleRecord, limit: int) -> list[ScheduleRun]:
        return self.schedules.runs(s.id, limit)

    def get_schedule(self, name: str, who: Principal, owner: str | None = None) -> ScheduleRecord:
        """The caller's schedule `name`, or `owner`'s (an admin's way to address anyone's):
        names are per owner, and another user's schedule is as missing as one never made."""
        owner = owner or who.user
        s = self.schedules.get(owner, name) if can_see(who, owner) else None
        if s is None:
            raise NotFound(f"schedule {name!r} not found")
        return s

    def upcoming(self, name: str, n: int, who: Principal, owner: str | None = None) -> list[datetime]:
        s = self.get_schedule(name, who, owner)
        if s.kind == "after" or s.next_fire_at is None:
            return []
        out = [_utc(s.next_fire_at)]
        while len(out) < n:
            try:
                t = next_fire_time(trigger_of(s), out[-1], s.fired + len(out))
            except (ValueError, OverflowError):  # past the year 9999: no more fire times
                break
            if t is None:
                break
            out.append(t)
        return out

    def set_enabled(self, name: str, enabled: bool, who: Principal, owner: str | None = None) -> ScheduleRecord:
        """Enabling again fires from now on: fire times missed while disabled are not caught up."""
        s = self.get_schedule(name, who, owner)
        nxt = s.next_fire_at
        if enabled and not s.enabled and s.kind != "after" and nxt is not None:
            t = next_fire_time(trigger_of(s), _utc(self.clock.now()), s.fired)
            nxt = t.timestamp() if t else None
        self.schedules.set_enabled(s.id, enabled, nxt)
        return self.get_schedule(name, who, s.owner)

    def delete_schedule(self, name: str, who: Principal, owner: str | None = None) -> None:
        self.schedules.delete(self.get_schedule(name, who, owner).id)

    def run_now(self, name: str, who: Principal, owner: str | None = None) -> int:
        s = self.get_schedule(name, who, owner)
        now = self.clock.now()
        if self.store.queued_count() >= self.queue_max:
            raise QueueFull(f"queue is full: limit {self.queue_max}; nothing stored")
        self.admission.check([s.spec])
        ids = self.schedules.record_fire(s, [PlannedRun(now, _job_spec(s, now), "run-now")], s.next_fire_at, 0, now)
        if not ids:
            raise Conflict(f"schedule {name!r} changed meanwhile; try again")
        self.metrics.submitted(len(ids), s.owner)
        self.wakeups.poke()
        return ids[0]

    def schedule_tick(self) -> int:
        """Fire what is due, follow parents, skip runs that could not start in time.
        Returns how many jobs were submitted."""
        if self.disk.full():  # fires wait for space; then the catch-up policy decides
            return 0
        now = self.clock.now()
        submitted = sum(self._fire_due(s, now) for s in self.schedules.due(now))
        submitted += sum(self._follow_parents(s, now) for s in self.schedules.children())
        for run_id, job_id in self.schedules.overdue(now):
            self.store.request_kill([job_id], "user", now)
            self.schedules.mark_skipped(run_id, "not started within max lateness (no capacity)")
        if submitted:
            self.wakeups.poke()
        return submitted

    def _fire_due(self, s: ScheduleRecord, now: float) -> int:
        assert s.next_fire_at is not None
        trigger, due = trigger_of(s), [_utc(s.next_fire_at)]
        nxt: datetime | None = due[0]
        while True:
            try:
                nxt = next_fire_time(trigger, due[-1], s.fired + len(due))
            except (ValueError, OverflowError):  # past the year 9999: this was the last one
                nxt = None
            if nxt is None or nxt.timestamp() > now or len(due) >= MAX_DUE_PER_TICK:
                break
            due.append(nxt)
        plans = []
        active = self.schedules.active_jobs(s.id)
        for d in plan_due(due, _utc(now), s.max_lateness_s, s.catch_up):
            t = d.fire_time.timestamp()
            if not d.run:
                plans.append(PlannedRun(t, None, d.reason))
                continue
            if active and s.overlap == "forbid":
                plans.append(PlannedRun(t, None, f"overlap forbidden: job {active[0]} is still active"))
                continue
            if active and s.overlap == "replace":
                self.store.request_kill(active, "user", now)
            deadline = t + s.max_lateness_s if s.max_lateness_s is not None else None
            plans.append(PlannedRun(t, _job_spec(s, t), None, deadline))
            active = [-1]  # the run just planned is active for the fire times after it
        ids = self.schedules.record_fire(s, self._bounded(plans), nxt.timestamp() if nxt else None, len(due), now)
        return self._submitted(s, ids)

    def _follow_parents(self, child: ScheduleRecord, now: float) -> int:
        """A child fires when a run of each parent (or of any, with after_mode any) succeeded
        since its last fire; a failed parent run is recorded on the child as skipped."""
        parents = {p.key: p for p in self.schedules.all() if p.key in child.parents}
        seen = dict(child.seen)
        plans: list[PlannedRun] = []
        ready = []
        for name in child.parents:
            parent = parents.get(name)
            if parent is None:
                continue
            key = str(parent.id)
            for run in self.schedules.finished_runs_after(parent.id, seen.get(key, 0)):
                if run.job_state == JobState.SUCCEEDED:
                    ready.append(name)
                    seen[key] = run.id
                else:
                    plans.append(
                        PlannedRun(
                            now + len(plans) * 1e-6,
                            None,
                            f"parent failed: {shown_parent(name, child.owner)} run of job {run.job_id}"
                            f" ended {run.job_state}",
                        )
                    )
                    seen[key] = run.id
        done = set(ready)
        fire = bool(done) and (child.after_mode == "any" or done >= set(child.parents))
        if fire:
            t = now + len(plans) * 1e-6
            plans.append(PlannedRun(t, _job_spec(child, t)))
        if not plans:
            return 0
        # parents that succeeded but wait for the others keep their runs unconsumed (mode all)
        if not fire:
            for name in done:
                seen[str(parents[name].id)] = child.seen.get(str(parents[name].id), 0)
        ids = self.schedules.record_fire(child, self._bounded(plans), child.next_fire_at, len(plans), now, seen)
        return self._submitted(child, ids)

    def _bounded(self, plans: list[PlannedRun]) -> list[PlannedRun]:
        """A fire is admitted as a submit is, and the queue bound holds for it: a run that a
        submit would refuse is skipped, saying why (a submit gets a 4xx; a fire has no one
        to answer, so its run record tells)."""
        room = self.queue_max - self.store.queued_count()
        refused = next((self.admission.refusal(p.spec) for p in plans if p.spec is not None), None)
        out = []
        for p in plans:
            if p.spec is not None and refused:
                p = PlannedRun(p.fire_time, None, f"refused: {refused}")
            elif p.spec is not None and room <= 0:
                p = PlannedRun(p.fire_time, None, f"queue is full (limit {self.queue_max}): not submitted")
            room -= p.spec is not None
            out.append(p)
        return out

    def _submitted(self, s: ScheduleRecord, ids: list[int] | None) -> int:
        if ids:
            self.metrics.submitted(len(ids), s.owner)
        return len(ids or [])
