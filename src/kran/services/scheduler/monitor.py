"""One monitor pass: find ended attempts, enforce kills and timeouts, record results."""

from __future__ import annotations

import logging
import queue
from concurrent.futures import Executor
from dataclasses import replace

from kran.domain.accounting import Usage
from kran.domain.apps import volume_shown
from kran.domain.records import ActiveAttempt, AttemptOutcome
from kran.domain.retry import AttemptEnd, Settlement, settle_attempt
from kran.domain.states import JobState
from kran.ports import AttemptRef, Clock, Engine, Metrics, Store, Volumes
from kran.services.datadir import DataDir
from kran.services.disk import DiskWatch
from kran.services.scheduler.evict import free_evicted
from kran.services.scheduler.state import Ended, Event, Launched, LaunchFailed, Outbox, SchedulerState
from kran.services.wakeups import Wakeups

log = logging.getLogger("kran.monitor")
KILL_AGAIN_S = 5.0


class Monitor:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        volumes: Volumes,
        metrics: Metrics,
        disk: DiskWatch,
        clock: Clock,
        dirs: DataDir,
        state: SchedulerState,
        outbox: Outbox,
        wakeups: Wakeups,
        pool: Executor,
        backoff_s: float,
        preemption_grace_s: float = 300.0,
    ) -> None:
        self.store = store
        self.engine = engine
        self.volumes = volumes
        self.metrics = metrics
        self.disk = disk
        self.clock = clock
        self.dirs = dirs
        self.state = state
        self.outbox = outbox
        self.wakeups = wakeups
        self.pool = pool
        self.backoff_s = backoff_s  # between a failed attempt and its retry
        self.preemption_grace_s = preemption_grace_s  # the most a preempted job's own --grace gives it

    def tick(self) -> None:
        now = self.clock.now()
        st = self.state
        active = {(a.job_id, a.attempt): a for a in self.store.active_attempts()}
        for a in active.values():
            if (
                a.state == JobState.RUNNING
                and a.timeout_s
                and a.started_at is not None
                and not a.kill_reason
                and now - a.started_at > a.timeout_s
            ):
                self.store.request_kill([a.job_id], "timeout", now)
                a = active[(a.job_id, a.attempt)] = replace(a, kill_reason="timeout")
            key = (a.job_id, a.attempt)
            evicted = a.kill_reason == "evicted"
            sent = key in (st.evictions_sent if evicted else st.kills_sent)
            if a.kill_reason and a.handle and not sent and st.kill_again_at.get(key, 0.0) <= now:
                st.kills_sent.add(key)
                grace: float | None = 0.0  # evicted: its files fill the disk (no grace of its choosing)
                if evicted:
                    st.evictions_sent.add(key)
                else:
                    job = self.store.get_job(a.job_id)
                    grace = job.spec.grace_s if job else None
                    if a.kill_reason == "preempt" and grace is not None:  # (a waiting job counts on its room)
                        grace = min(grace, self.preemption_grace_s)
                self.pool.submit(self._kill, self.dirs.ref(a.job_id, a.attempt, a.handle, grace))
        refs = [self.dirs.ref(a.job_id, a.attempt, a.handle) for a in active.values() if a.handle]
        for key, end in self.engine.check(refs).items():
            if key in st.in_flight:
                continue
            st.in_flight.add(key)
            ref = self.dirs.ref(key[0], key[1], active[key].handle)
            evicted = active[key].kill_reason == "evicted"
            if self.engine.cheap_collect(ref) and not evicted:
                self._collect(ref, end)
            else:
                self.pool.submit(self._collect, ref, end, evicted)

    def record_results(self) -> None:
        """Store what the pool finished: launches and collected ends, in batches. What the
        store could not take (a full disk) goes back to the outbox for the next pass."""
        launched: list[Launched] = []
        ended: list[Ended] = []
        failed: list[LaunchFailed] = []
        while True:
            try:
                event = self.outbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, Launched):
                launched.append(event)
            elif isinstance(event, LaunchFailed):
                failed.append(event)
            else:
                ended.append(event)
        now = self.clock.now()
        if launched:
            try:
                queued = self.store.mark_running([(e.job_id, e.attempt, e.handle) for e in launched], now)
            except Exception:
                self._put_back([*launched, *ended, *failed])
                raise
            for queued_at in queued:
                self.metrics.started(now - queued_at if queued_at is not None else 0.0)
        if not ended and not failed:
            return
        active = {(a.job_id, a.attempt): a for a in self.store.active_attempts()}
        settles: list[AttemptOutcome] = []
        for e in ended:
            a = active.get((e.job_id, e.attempt))
            end = e.end
            volume = self.state.volume_attempts.get((e.job_id, e.attempt))
            if volume and end.exit_code and not end.error and self.volumes.is_full(volume[0]):
                shown = volume_shown(volume[0])
                end = replace(end, error=f"volume {shown} is full (its quota of {volume[1]} MiB was reached)")
            if a is not None:
                if a.kill_reason == "evicted":  # (why, with its figures)
                    end = replace(end, cause=self.state.evicting.get((e.job_id, e.attempt)))
                else:
                    end = self._blame_disk(end)
                settles.append(AttemptOutcome(e.job_id, e.attempt, self._settle(a, end), end.exit_code, e.usage))
        for f in failed:
            a = active.get((f.job_id, f.attempt))
            if a is not None:
                end = self._blame_disk(AttemptEnd(None, error=f"launch failed: {f.reason}"))
                settles.append(AttemptOutcome(f.job_id, f.attempt, self._settle(a, end), None))
        started_at = {a.job_id: a.started_at for a in active.values()}
        try:
            settled = self.store.settle(settles, now)
        except Exception:
            self._put_back([*ended, *failed])
            raise
        for key in [(e.job_id, e.attempt) for e in ended] + [(f.job_id, f.attempt) for f in failed]:
            self.state.done_with(key)
        for job_id, state in settled:
            if state.is_final:
                started = started_at.get(job_id)
                self.metrics.ended(state.value, now - started if started is not None else None)
        self.wakeups.settled.set()
        self.wakeups.poke()

    def _put_back(self, events: list[Event]) -> None:
        for event in events:
            self.outbox.put(event)

    def _blame_disk(self, end: AttemptEnd) -> AttemptEnd:
        """A failure while the data dir is full names the disk (a job writing its output, the
        wrapper its exit code, staging its inputs: all fail for it)."""
        if end.exit_code == 0 and not end.error and not end.vanished:
            return end
        full = self.disk.full(fresh=True)
        return replace(end, cause=full) if full else end

    def _settle(self, a: ActiveAttempt, end: AttemptEnd) -> Settlement:
        if a.kill_reason:
            end = replace(end, kill_reason=a.kill_reason)
        no_requeue = False
        if end.engine_fault:  # rare: only then is the job's own choice read
            job = self.store.get_job(a.job_id)
            no_requeue = bool(job and job.spec.no_requeue)
        return settle_attempt(
            end,
            attempt=a.attempt,
            retries=a.retries,
            timeout_s=a.timeout_s,
            backoff_s=self.backoff_s,
            requeues=a.requeues,
            no_requeue=no_requeue,
        )

    def _kill(self, ref: AttemptRef) -> None:
        try:
            self.engine.kill(ref)
        except Exception:  # the pool would swallow it silently
            log.exception("kill of job %s attempt %s failed", ref.job_id, ref.attempt)
            key = (ref.job_id, ref.attempt)  # sent again a little later (the engine may be away)
            self.state.kill_again_at[key] = self.clock.now() + KILL_AGAIN_S
            self.state.kills_sent.discard(key)
            self.state.evictions_sent.discard(key)

    def _collect(self, ref: AttemptRef, end: AttemptEnd, evicted: bool = False) -> None:
        usage = Usage()
        try:
            usage = self.engine.collect(ref)
        except Exception:
            log.exception("collecting logs of job %s attempt %s failed", ref.job_id, ref.attempt)
        if evicted:  # its files filled the data dir: they go before its end is recorded
            try:
                free_evicted(ref.attempt_dir)
            except Exception:
                log.exception("removing the files of evicted job %s attempt %s failed", ref.job_id, ref.attempt)
        self.outbox.put(Ended(ref.job_id, ref.attempt, end, usage))
        self.wakeups.wake.set()
