"""What happens to a job when an attempt ends: a pure decision."""

from __future__ import annotations

from dataclasses import dataclass

from kran.domain.states import JobState

FAULT_RETRY_S = 1.0  # an attempt lost to its engine is queued again after this, doubling (the engine may still be away)
MAX_FREE_REQUEUES = 10  # then an engine fault is charged like any loss: no job is re-queued forever


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, as the engine and the monitor saw it."""

    exit_code: int | None
    error: str | None = None  # engine error text, e.g. "OOM killed"
    vanished: bool = False  # the work disappeared without an exit code
    kill_reason: str | None = None  # "user", "timeout", "preempt" or "evicted" when kran killed it
    cause: str | None = None  # what the server saw meanwhile that may explain a failure (a full disk)
    engine_fault: str | None = None  # it ended because its engine or node went away, not by itself
    inferred: bool = False  # engine_fault read from timing alone (exit_code is the job's own reading): trusted once
    stopped: bool = False  # it ended after kran's stop was sent (a container's exit code is its own, 0 too)


@dataclass(frozen=True)
class Settlement:
    attempt_state: JobState
    job_state: JobState
    reason: str
    retry_in_s: float | None = None
    free: bool = False  # re-queued without using a retry (the engine's fault, not the job's)


def settle_attempt(
    end: AttemptEnd,
    *,
    attempt: int,
    retries: int,
    timeout_s: float | None,
    backoff_s: float,
    requeues: int = 0,
    no_requeue: bool = False,
) -> Settlement:
    """Decide the attempt's and the job's next state.

    Failed and lost attempts are retried while retries remain, with exponential backoff
    (backoff_s, 2*backoff_s, ... capped at 10 minutes). Kills and timeouts are final. An
    attempt lost to its engine (a daemon restart, a dead node) is re-queued at once without
    using a retry (`requeues` counts those before), unless the job asked for at most one
    run (`no_requeue`, as Slurm's --no-requeue): then it is lost like any other. A fault
    inferred from timing alone re-queues only a job never re-queued before; otherwise the
    attempt's own exit counts (a misreading never runs a job over and over).
    """
    if end.kill_reason == "user":
        return Settlement(JobState.KILLED, JobState.KILLED, "killed on request")
    if end.kill_reason == "preempt":
        if end.exit_code == 0 and not end.error and not end.stopped:  # it finished before the signal took
            return Settlement(JobState.SUCCEEDED, JobState.SUCCEEDED, "exit code 0")
        why = f"attempt {attempt} preempted for a job of higher priority; re-queued without using a retry"
        return Settlement(JobState.PREEMPTED, JobState.QUEUED, why, 0.0, free=True)
    if end.kill_reason == "evicted":  # final: run again, it would fill the disk again
        if end.exit_code == 0 and not end.error and not end.stopped:  # it finished before the kill took
            return Settlement(JobState.SUCCEEDED, JobState.SUCCEEDED, "exit code 0")
        return Settlement(JobState.FAILED, JobState.FAILED, f"evicted: {end.cause or 'the data dir was full'}")
    if end.kill_reason == "timeout":
        limit = f" after {timeout_s:g}s" if timeout_s else ""
        return Settlement(JobState.TIMED_OUT, JobState.TIMED_OUT, f"timed out{limit}")
    if end.engine_fault and end.inferred and requeues:
        end = AttemptEnd(end.exit_code, error=end.error, cause=end.cause)
    if end.engine_fault and end.exit_code != 0:
        if no_requeue:
            end = AttemptEnd(None, error=f"{end.engine_fault} (the job asked not to be re-queued)", vanished=True)
            retries = 0
        elif requeues < MAX_FREE_REQUEUES:
            why = f"attempt {attempt} lost: {end.engine_fault}; re-queued without using a retry"
            return Settlement(JobState.LOST, JobState.QUEUED, why, min(FAULT_RETRY_S * 2**requeues, 60.0), free=True)
        else:  # an engine that keeps losing it: from now on the job's retries pay
            end = AttemptEnd(None, error=f"{end.engine_fault} ({requeues} attempts lost to the engine)", vanished=True)
    if end.vanished:
        state, reason = JobState.LOST, end.error or "the job's process or container vanished"
    elif end.exit_code == 0 and not end.error:
        return Settlement(JobState.SUCCEEDED, JobState.SUCCEEDED, "exit code 0")
    else:
        state = JobState.FAILED
        reason = f"exit code {end.exit_code}" if end.exit_code is not None else "failed"
        if end.error:
            reason = f"{reason}: {end.error}" if end.exit_code is not None else end.error
    if end.cause:
        reason = f"{reason} ({end.cause})"
    used = attempt - requeues  # this one included
    if used <= retries:
        delay = min(backoff_s * 2 ** (used - 1), 600.0)
        return Settlement(state, JobState.QUEUED, f"attempt {attempt} {state}: {reason}; retry {used}/{retries}", delay)
    return Settlement(state, state, reason)
