import pytest

from kran.domain.durations import parse_duration
from kran.domain.retry import AttemptEnd, settle_attempt
from kran.domain.states import FINAL_STATES, TRANSITIONS, JobState, check_transition, parse_states
from kran.errors import IllegalTransition


def test_transition_table_covers_every_state_and_finals_are_terminal() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for s in FINAL_STATES:
        assert TRANSITIONS[s] == frozenset()
    check_transition(JobState.QUEUED, JobState.STARTING)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.SUCCEEDED, JobState.RUNNING)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.QUEUED, JobState.SUCCEEDED)


def test_parse_states() -> None:
    assert parse_states("queued, running") == [JobState.QUEUED, JobState.RUNNING]
    with pytest.raises(ValueError, match="unknown state 'runing'"):
        parse_states("runing")


def settle(end: AttemptEnd, attempt: int = 1, retries: int = 0):  # type: ignore[no-untyped-def]
    return settle_attempt(end, attempt=attempt, retries=retries, timeout_s=30, backoff_s=2)


def test_success_failure_and_retries() -> None:
    assert settle(AttemptEnd(0)).job_state == JobState.SUCCEEDED
    s = settle(AttemptEnd(3))
    assert (s.attempt_state, s.job_state, s.reason) == (JobState.FAILED, JobState.FAILED, "exit code 3")
    s = settle(AttemptEnd(3), attempt=1, retries=2)
    assert (s.job_state, s.retry_in_s) == (JobState.QUEUED, 2)
    assert settle(AttemptEnd(3), attempt=2, retries=2).retry_in_s == 4
    assert settle(AttemptEnd(3), attempt=3, retries=2).job_state == JobState.FAILED


def test_lost_is_retried_kills_and_timeouts_are_final() -> None:
    lost = settle(AttemptEnd(None, vanished=True), retries=1)
    assert (lost.attempt_state, lost.job_state) == (JobState.LOST, JobState.QUEUED)
    assert settle(AttemptEnd(None, vanished=True)).job_state == JobState.LOST
    assert settle(AttemptEnd(143, kill_reason="user"), retries=5).job_state == JobState.KILLED
    t = settle(AttemptEnd(143, kill_reason="timeout"), retries=5)
    assert (t.job_state, t.reason) == (JobState.TIMED_OUT, "timed out after 30s")
    oom = settle(AttemptEnd(137, error="out of memory"))
    assert oom.job_state == JobState.FAILED and "out of memory" in oom.reason


def test_durations() -> None:
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400
    assert parse_duration(2.5) == 2.5
    for bad in ("", "abc", "5x", "-1", "0", "400d", "1h 2m"):
        with pytest.raises(ValueError):
            parse_duration(bad)
