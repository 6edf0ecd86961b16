"""Preemption's decision over explicit cases (issue 20.6)."""

from __future__ import annotations

from kran.domain.placement import NodeCapacity
from kran.domain.preemption import Running, Waiting, after_stopping, choose_victims, may_preempt, take_room
from kran.domain.resources import Range, ResourceRequest, Resources
from kran.domain.retry import AttemptEnd, settle_attempt
from kran.domain.states import JobState


def _req(cpus: int) -> ResourceRequest:
    return ResourceRequest(Range(cpus * 1000, cpus * 1000), Range(64, 64), Range(0, 0), Range(0, 0))


def _node(name: str, cpus: int, used: int) -> NodeCapacity:
    return NodeCapacity(name, Resources(cpus * 1000, 8192, 0, 0), Resources(used * 1000, 64 * used, 0, 0))


def _run(job: int, node: str, cpus: int, prio: int, started: float, factor: float = 1.0) -> Running:
    return Running(job, node, Resources(cpus * 1000, 64 * cpus, 0, 0), prio, started, factor)


def test_lowest_priority_then_newest_on_the_node_needing_fewest() -> None:
    nodes = [_node("a", 4, 4), _node("b", 4, 4)]
    running = [
        _run(1, "a", 1, 0, 10.0), _run(2, "a", 1, 0, 20.0), _run(3, "a", 2, 5, 5.0),
        _run(4, "b", 2, 1, 1.0), _run(5, "b", 2, 1, 2.0),
    ]  # fmt: skip
    # 2 cpus: on a, the two priority-0 jobs (2 victims); on b, one priority-1 job: b wins
    assert choose_victims("priority", Waiting(9, _req(2), 10), nodes, running) == ("b", [5])
    # 1 cpu: one victim either way; on a the priority 0 one started last
    assert choose_victims("priority", Waiting(9, _req(1), 10), nodes, running) == ("a", [2])
    # only what it outranks: priority 1 cannot stop priority 1 or 5
    assert choose_victims("priority", Waiting(9, _req(2), 1), nodes, running) == ("a", [2, 1])
    assert choose_victims("priority", Waiting(9, _req(3), 1), nodes, running) is None


def test_nothing_is_stopped_when_it_fits_or_is_off_or_too_big() -> None:
    running = [_run(1, "a", 2, 0, 1.0)]
    assert choose_victims("priority", Waiting(9, _req(1), 10), [_node("a", 4, 2)], running) is None  # room
    assert choose_victims("off", Waiting(9, _req(2), 10), [_node("a", 2, 2)], running) is None
    assert choose_victims("priority", Waiting(9, _req(8), 10), [_node("a", 2, 2)], running) is None


def test_fairshare_mode_at_equal_priority() -> None:
    over, under = 0.2, 0.7
    assert may_preempt("fairshare", Waiting(9, _req(1), 0, factor=under), _run(1, "a", 1, 0, 1.0, over))
    assert not may_preempt("fairshare", Waiting(9, _req(1), 0, factor=0.4), _run(1, "a", 1, 0, 1.0, over))
    assert not may_preempt("priority", Waiting(9, _req(1), 0, factor=under), _run(1, "a", 1, 0, 1.0, over))


def test_a_preempted_attempt_is_requeued_for_free_unless_it_had_finished() -> None:
    s = settle_attempt(AttemptEnd(143, kill_reason="preempt"), attempt=1, retries=0, timeout_s=None, backoff_s=5)
    assert (s.attempt_state, s.job_state, s.free) == (JobState.PREEMPTED, JobState.QUEUED, True)
    done = settle_attempt(AttemptEnd(0, kill_reason="preempt"), attempt=1, retries=0, timeout_s=None, backoff_s=5)
    assert done.job_state == JobState.SUCCEEDED
    # a container that ends on the stop's SIGTERM with its own exit 0 (a checkpoint) was stopped, not done
    saved = AttemptEnd(0, kill_reason="preempt", stopped=True)
    s = settle_attempt(saved, attempt=1, retries=0, timeout_s=None, backoff_s=5)
    assert (s.attempt_state, s.job_state, s.free) == (JobState.PREEMPTED, JobState.QUEUED, True)


def test_the_room_of_jobs_being_stopped_is_taken_once() -> None:
    """A victim still stopping frees its room for one waiting job, not for every one."""
    nodes = after_stopping([_node("a", 4, 4), _node("b", 4, 4)], [("a", Resources(2000, 128, 0, 0))])
    assert [n.free.millicpus for n in nodes] == [2000, 0]
    assert take_room(Waiting(1, _req(2), 10), nodes)
    assert not take_room(Waiting(2, _req(2), 10), nodes)  # that room is the first one's
    assert not take_room(Waiting(3, _req(1), 10, node_class="gpu"), after_stopping([_node("a", 4, 0)], []))
