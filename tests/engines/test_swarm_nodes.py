"""How a swarm task's final status reads (pure: the manager's Status in), and Docker's times."""

from __future__ import annotations

from kran.adapters.engines.containers import docker_time
from kran.adapters.engines.swarm import task_end
from kran.domain.cluster import NodeInfo


def _status(state: str, code: int, err: str | None = None, **times: str) -> dict[str, object]:
    """A task as the manager lists it (`times`: its CreatedAt and UpdatedAt)."""
    return {"Status": {"State": state, "Err": err, "ContainerStatus": {"ExitCode": code}}, **times}


def _node(updated: str) -> NodeInfo:
    return NodeInfo("n1", "kran-sw2", "worker", "active", "ready", "", updated_at=docker_time(updated))


def test_a_container_gone_with_its_nodes_daemon_is_the_engines_fault() -> None:
    # as a node's agent reports its task once its restarted daemon no longer has the container
    end = task_end(_status("failed", 0, "No such container: kran-x-1-1.abc.def"), "kran-sw2")
    assert end.vanished and end.exit_code is None
    assert end.engine_fault == "the docker engine of node kran-sw2 restarted (the container went with it)"


def test_exits_and_refusals_are_the_jobs_own() -> None:
    assert task_end(_status("complete", 0), "n") == task_end(_status("complete", 0, "ignored"), "n")
    own = task_end(_status("failed", 143, "task: non-zero exit (143)"), "n")
    assert own.exit_code == 143 and not own.engine_fault and not own.vanished
    rejected = task_end(_status("rejected", 0, "invalid mount"), "n")
    assert rejected.exit_code is None and rejected.error == "rejected by the node: invalid mount"


def test_docker_times_keep_their_fraction_and_the_zero_time_is_none() -> None:
    assert docker_time("1970-01-01T00:00:01.5Z") == 1.5
    assert docker_time("1970-01-01T01:00:00+01:00") == 0.0
    assert docker_time("0001-01-01T00:00:00Z") is None
    assert docker_time("yesterday") is None


def test_a_signal_reported_as_its_node_came_back_is_the_engines_fault() -> None:
    """A node's dockerd that restarts stops its containers (143) while its agent is away;
    the agent registers again (the manager writes the node) and reports them at once."""
    task = _status(
        "failed",
        143,
        "task: non-zero exit (143)",
        CreatedAt="2026-12-05T05:08:12Z",
        UpdatedAt="2026-12-05T05:08:29.85Z",
    )
    end = task_end(task, "kran-sw2", _node("2026-12-05T05:08:29.548467982Z"))
    assert end.vanished and end.exit_code is None
    assert end.engine_fault == "the docker engine of node kran-sw2 restarted (exit 143 reported as the node came back)"
    # a job's own SIGTERM exit: the node last written long before, before the task, or by the
    # task itself as it started (a job with --network attaching to an overlay)
    for node_written in ("2026-12-05T05:08:20Z", "2026-12-05T05:08:10Z", "2026-12-05T05:08:13Z"):
        own = task_end(task, "kran-sw2", _node(node_written))
        assert own.exit_code == 143 and not own.engine_fault, node_written
    # other exits are the job's whenever they came
    three = _status("failed", 3, "task: non-zero exit (3)", CreatedAt=task["CreatedAt"], UpdatedAt=task["UpdatedAt"])
    assert task_end(three, "kran-sw2", _node("2026-12-05T05:08:29.5Z")).exit_code == 3
