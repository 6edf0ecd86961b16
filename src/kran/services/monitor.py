"""One monitor pass: find ended attempts, enforce kills and timeouts, record results."""

from __future__ import annotations

import logging
import queue
from dataclasses import replace

from kran.domain.accounting import Usage
from kran.domain.records import ActiveAttempt, AttemptOutcome
from kran.domain.retry import AttemptEnd, Settlement, settle_attempt
from kran.domain.states import JobState
from kran.ports import AttemptRef
from kran.services.runtime import Runtime

log = logging.getLogger("kran.monitor")


def monitor_tick(rt: Runtime) -> None:
    now = rt.clock.now()
    active = {(a.job_id, a.attempt): a for a in rt.store.active_attempts()}
    for a in active.values():
        if (
            a.state == JobState.RUNNING
            and a.timeout_s
            and a.started_at is not None
            and not a.kill_reason
            and now - a.started_at > a.timeout_s
        ):
            rt.store.request_kill([a.job_id], "timeout", now)
            a = active[(a.job_id, a.attempt)] = _with_kill(a, "timeout")
        key = (a.job_id, a.attempt)
        if a.kill_reason and a.handle and key not in rt.kills_sent:
            rt.kills_sent.add(key)
            job = rt.store.get_job(a.job_id)
            grace = job.spec.grace_s if job else None
            rt.pool.submit(_kill, rt, rt.ref(a.job_id, a.attempt, a.handle, grace))
    refs = [rt.ref(a.job_id, a.attempt, a.handle) for a in active.values() if a.handle]
    for key, end in rt.engine.check(refs).items():
        if key in rt.in_flight:
            continue
        rt.in_flight.add(key)
        ref = rt.ref(key[0], key[1], active[key].handle)
        if rt.engine.cheap_collect(ref):
            _collect(rt, ref, end)
        else:
            rt.pool.submit(_collect, rt, ref, end)


def record_results(rt: Runtime) -> None:
    """Store what the pool finished: launches and collected ends, in batches."""
    launched, ended, failed = [], [], []
    while True:
        try:
            kind, payload = rt.results.get_nowait()
        except queue.Empty:
            break
        if kind == "launched":
            launched.append(payload)
        elif kind == "launch_failed":
            failed.append(payload)
        else:
            ended.append(payload)
    now = rt.clock.now()
    if launched:
        for queued_at in rt.store.mark_running(launched, now):
            rt.metrics.started(now - queued_at if queued_at is not None else 0.0)
    if not ended and not failed:
        return
    active = {(a.job_id, a.attempt): a for a in rt.store.active_attempts()}
    settles: list[AttemptOutcome] = []
    for job_id, number, end, usage in ended:
        rt.in_flight.discard((job_id, number))
        rt.kills_sent.discard((job_id, number))
        a = active.get((job_id, number))
        volume = rt.volume_attempts.pop((job_id, number), None)
        if volume and end.exit_code and not end.error and rt.volumes.is_full(volume[0]):
            end = replace(end, error=f"volume {volume[0]} is full (its quota of {volume[1]} MiB was reached)")
        if a is not None:
            settles.append(AttemptOutcome(job_id, number, _settle(rt, a, end), end.exit_code, usage))
    for job_id, number, reason in failed:
        rt.volume_attempts.pop((job_id, number), None)
        a = active.get((job_id, number))
        if a is not None:
            end = AttemptEnd(None, error=f"launch failed: {reason}")
            settles.append(AttemptOutcome(job_id, number, _settle(rt, a, end), None))
    started_at = {a.job_id: a.started_at for a in active.values()}
    for job_id, state in rt.store.settle(settles, now):
        if state.is_final:
            started = started_at.get(job_id)
            rt.metrics.ended(state.value, now - started if started is not None else None)
    rt.poke()


def _settle(rt: Runtime, a: ActiveAttempt, end: AttemptEnd) -> Settlement:
    if a.kill_reason:
        end = AttemptEnd(end.exit_code, end.error, end.vanished, kill_reason=a.kill_reason)
    return settle_attempt(
        end,
        attempt=a.attempt,
        retries=a.retries,
        timeout_s=a.timeout_s,
        backoff_s=rt.settings.retry_backoff_s,
    )


def _with_kill(a: ActiveAttempt, reason: str) -> ActiveAttempt:
    return replace(a, kill_reason=reason)


def _kill(rt: Runtime, ref: AttemptRef) -> None:
    try:
        rt.engine.kill(ref)
    except Exception:  # the pool would swallow it silently
        log.exception("kill of job %s attempt %s failed", ref.job_id, ref.attempt)


def _collect(rt: Runtime, ref: AttemptRef, end: AttemptEnd) -> None:
    usage = Usage()
    try:
        usage = rt.engine.collect(ref)
    except Exception:
        log.exception("collecting logs of job %s attempt %s failed", ref.job_id, ref.attempt)
    rt.results.put(("ended", (ref.job_id, ref.attempt, end, usage)))
    rt.wake.set()
