"""One monitor pass: find ended attempts, enforce kills and timeouts, record results."""

from __future__ import annotations

import logging
import queue
from dataclasses import replace
from typing import Any

from kran.domain.accounting import Usage
from kran.domain.apps import volume_shown
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
    """Store what the pool finished: launches and collected ends, in batches. What the
    store could not take (a full disk) goes back to the queue for the next pass."""
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
        try:
            queued = rt.store.mark_running(launched, now)
        except Exception:
            _put_back(rt, [("launched", p) for p in launched] + _ends(ended, failed))
            raise
        for queued_at in queued:
            rt.metrics.started(now - queued_at if queued_at is not None else 0.0)
    if not ended and not failed:
        return
    active = {(a.job_id, a.attempt): a for a in rt.store.active_attempts()}
    settles: list[AttemptOutcome] = []
    for job_id, number, end, usage in ended:
        a = active.get((job_id, number))
        volume = rt.volume_attempts.get((job_id, number))
        if volume and end.exit_code and not end.error and rt.volumes.is_full(volume[0]):
            shown = volume_shown(volume[0])
            end = replace(end, error=f"volume {shown} is full (its quota of {volume[1]} MiB was reached)")
        if a is not None:
            end = _blame_disk(rt, end)
            settles.append(AttemptOutcome(job_id, number, _settle(rt, a, end), end.exit_code, usage))
    for job_id, number, reason in failed:
        a = active.get((job_id, number))
        if a is not None:
            end = _blame_disk(rt, AttemptEnd(None, error=f"launch failed: {reason}"))
            settles.append(AttemptOutcome(job_id, number, _settle(rt, a, end), None))
    started_at = {a.job_id: a.started_at for a in active.values()}
    try:
        settled = rt.store.settle(settles, now)
    except Exception:
        _put_back(rt, _ends(ended, failed))
        raise
    for key in [(e[0], e[1]) for e in ended] + [(f[0], f[1]) for f in failed]:
        rt.in_flight.discard(key)
        rt.kills_sent.discard(key)
        rt.volume_attempts.pop(key, None)
    for job_id, state in settled:
        if state.is_final:
            started = started_at.get(job_id)
            rt.metrics.ended(state.value, now - started if started is not None else None)
    rt.poke()


def _ends(ended: list[Any], failed: list[Any]) -> list[tuple[str, Any]]:
    return [("ended", p) for p in ended] + [("launch_failed", p) for p in failed]


def _put_back(rt: Runtime, items: list[tuple[str, Any]]) -> None:
    for item in items:
        rt.results.put(item)


def _blame_disk(rt: Runtime, end: AttemptEnd) -> AttemptEnd:
    """A failure while the data dir is full names the disk (a job writing its output, the
    wrapper its exit code, staging its inputs: all fail for it)."""
    if end.exit_code == 0 and not end.error and not end.vanished:
        return end
    full = rt.disk.full(fresh=True)
    return replace(end, cause=full) if full else end


def _settle(rt: Runtime, a: ActiveAttempt, end: AttemptEnd) -> Settlement:
    if a.kill_reason:
        end = replace(end, kill_reason=a.kill_reason)
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
