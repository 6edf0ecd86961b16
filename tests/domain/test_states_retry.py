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


def test_an_attempt_lost_to_its_engine_is_requeued_without_using_a_retry() -> None:
    fault = AttemptEnd(143, engine_fault="the docker engine restarted")
    s = settle_attempt(fault, attempt=1, retries=0, timeout_s=None, backoff_s=5)
    assert (s.attempt_state, s.job_state, s.free, s.retry_in_s) == (JobState.LOST, JobState.QUEUED, True, 1.0)
    assert "without using a retry" in s.reason and "restarted" in s.reason
    # attempt 3 after two free re-queues is the first charged one: retries=1 still retries it
    failed = AttemptEnd(1)
    s = settle_attempt(failed, attempt=3, retries=1, timeout_s=None, backoff_s=5, requeues=2)
    assert s.job_state == JobState.QUEUED and not s.free and "retry 1/1" in s.reason
    s = settle_attempt(failed, attempt=3, retries=1, timeout_s=None, backoff_s=5, requeues=1)
    assert s.job_state == JobState.FAILED  # the second charged failure
    # exit 0 in the outage: it finished; a kill stays a kill
    assert settle_attempt(
        AttemptEnd(0, engine_fault="x"), attempt=1, retries=0, timeout_s=None, backoff_s=5
    ).job_state == (JobState.SUCCEEDED)
    killed = AttemptEnd(143, engine_fault="x", kill_reason="user")
    assert settle_attempt(killed, attempt=1, retries=0, timeout_s=None, backoff_s=5).job_state == JobState.KILLED


def test_no_requeue_makes_an_engine_fault_final() -> None:
    fault = AttemptEnd(None, engine_fault="node kran-sw2 is down")
    s = settle_attempt(fault, attempt=1, retries=3, timeout_s=None, backoff_s=5, no_requeue=True)
    assert (s.attempt_state, s.job_state) == (JobState.LOST, JobState.LOST)
    assert "asked not to be re-queued" in s.reason and "kran-sw2" in s.reason
    # a job's own exit 143 (no engine fault) is an ordinary failure, retried as asked
    s = settle_attempt(AttemptEnd(143), attempt=1, retries=1, timeout_s=None, backoff_s=5)
    assert (s.attempt_state, s.job_state, s.free) == (JobState.FAILED, JobState.QUEUED, False)


def test_free_requeues_back_off_and_end() -> None:
    fault = AttemptEnd(143, engine_fault="node n1 is down")
    delays = [
        settle_attempt(fault, attempt=n + 1, retries=0, timeout_s=None, backoff_s=5, requeues=n) for n in range(10)
    ]
    assert all(s.free for s in delays) and [s.retry_in_s for s in delays[:3]] == [1.0, 2.0, 4.0]
    assert max(s.retry_in_s or 0 for s in delays) == 60.0
    s = settle_attempt(fault, attempt=11, retries=0, timeout_s=None, backoff_s=5, requeues=10)
    assert (s.job_state, s.free) == (JobState.LOST, False) and "10 attempts lost to the engine" in s.reason
    s = settle_attempt(fault, attempt=11, retries=1, timeout_s=None, backoff_s=5, requeues=10)
    assert (s.job_state, s.free) == (JobState.QUEUED, False) and "retry 1/1" in s.reason  # the job's retry pays


def test_a_fault_read_from_timing_alone_requeues_a_job_once() -> None:
    """A swarm task's signal exit taken for its node's restart by timing alone: re-queued for
    free only if the job never was before; else its own exit (a misreading runs a job once more)."""
    guess = AttemptEnd(143, error="task: non-zero exit (143)", engine_fault="node restarted", inferred=True)
    first = settle_attempt(guess, attempt=1, retries=0, timeout_s=None, backoff_s=5, requeues=0)
    assert (first.job_state, first.free) == (JobState.QUEUED, True) and "without using a retry" in first.reason
    again = settle_attempt(guess, attempt=2, retries=0, timeout_s=None, backoff_s=5, requeues=1)
    assert (again.attempt_state, again.job_state, again.free) == (JobState.FAILED, JobState.FAILED, False)
    assert again.reason == "exit code 143: task: non-zero exit (143)"
    # a fault the engine saw (a node down, a container gone) still re-queues up to the cap
    seen = settle_attempt(AttemptEnd(None, engine_fault="node n1 is down"), attempt=2, retries=0, timeout_s=None,
                          backoff_s=5, requeues=1)  # fmt: skip
    assert seen.free


def test_an_evicted_attempt_fails_for_good_unless_it_had_finished() -> None:
    end = AttemptEnd(137, kill_reason="evicted", cause="the data dir was full (...)")
    s = settle_attempt(end, attempt=1, retries=3, timeout_s=None, backoff_s=1.0)
    assert (s.attempt_state, s.job_state) == (JobState.FAILED, JobState.FAILED)  # no retry: it would fill it again
    assert s.reason == "evicted: the data dir was full (...)"
    done = settle_attempt(AttemptEnd(0, kill_reason="evicted"), attempt=1, retries=0, timeout_s=None, backoff_s=1.0)
    assert done.job_state == JobState.SUCCEEDED  # it ended by itself before the kill took
