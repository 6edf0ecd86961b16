"""What happens to a job when an attempt ends: a pure decision."""

from __future__ import annotations

from dataclasses import dataclass

from kran.domain.states import JobState


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, as the engine and the monitor saw it."""

    exit_code: int | None
    error: str | None = None  # engine error text, e.g. "OOM killed"
    vanished: bool = False  # the work disappeared without an exit code
    kill_reason: str | None = None  # "user" or "timeout" when kran killed it
    cause: str | None = None  # what the server saw meanwhile that may explain a failure (a full disk)


@dataclass(frozen=True)
class Settlement:
    attempt_state: JobState
    job_state: JobState
    reason: str
    retry_in_s: float | None = None


def settle_attempt(
    end: AttemptEnd, *, attempt: int, retries: int, timeout_s: float | None, backoff_s: float
) -> Settlement:
    """Decide the attempt's and the job's next state.

    Failed and lost attempts are retried while retries remain, with exponential backoff
    (backoff_s, 2*backoff_s, ... capped at 10 minutes). Kills and timeouts are final.
    """
    if end.kill_reason == "user":
        return Settlement(JobState.KILLED, JobState.KILLED, "killed on request")
    if end.kill_reason == "timeout":
        limit = f" after {timeout_s:g}s" if timeout_s else ""
        return Settlement(JobState.TIMED_OUT, JobState.TIMED_OUT, f"timed out{limit}")
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
    if attempt <= retries:
        delay = min(backoff_s * 2 ** (attempt - 1), 600.0)
        return Settlement(
            state, JobState.QUEUED, f"attempt {attempt} {state}: {reason}; retry {attempt}/{retries}", delay
        )
    return Settlement(state, state, reason)
