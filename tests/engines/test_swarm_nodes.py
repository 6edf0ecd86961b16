"""How a swarm task's final status reads (pure: the manager's Status in), and Docker's times."""

from __future__ import annotations

from kran.adapters.engines.containers import docker_time
from kran.adapters.engines.swarm import task_end


def _status(state: str, code: int, err: str | None = None, **times: str) -> dict[str, object]:
    """A task as the manager lists it (`times`: its CreatedAt and UpdatedAt)."""
    return {"Status": {"State": state, "Err": err, "ContainerStatus": {"ExitCode": code}}, **times}


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


def _t(hms: str) -> float:
    t = docker_time(f"2026-12-05T{hms}Z")
    assert t is not None
    return t


def test_a_signal_reported_as_its_node_came_back_is_the_engines_fault() -> None:
    """A node's dockerd that restarts stops its containers (143) while its agent is away;
    the agent registers again (the manager writes the node) and reports them at once. Times
    as measured on the test swarm (06:57:32.026 registered, .129 attachment freed)."""
    task = _status(
        "failed",
        143,
        "task: non-zero exit (143)",
        CreatedAt="2026-12-05T06:57:09.69Z",
        UpdatedAt="2026-12-05T06:57:32.33Z",
    )
    registered, freed = _t("06:57:32.026"), _t("06:57:32.129")
    attached = _t("06:57:09.756")  # the node's attachment to the network, as the task started
    end = task_end(task, "kran-sw2", [attached, registered])
    assert end.engine_fault == "the docker engine of node kran-sw2 restarted (exit 143 reported as the node came back)"
    assert end.inferred and end.exit_code == 143  # the job's own reading kept: trusted once (retry.settle_attempt)
    # with --network: the restart writes the node twice (registered, then the attachment freed)
    assert task_end(task, "kran-sw2", [attached, registered, freed], network=True).engine_fault
    # the freed attachment may come after the task's last update
    late = _t("06:57:33.5")
    assert task_end(task, "kran-sw2", [attached, registered, late], network=True).engine_fault
    # a job's own SIGTERM exit: the node last written long before, before the task, or by the
    # task itself as it started
    for writes in ([_t("06:57:20")], [_t("06:57:08")], [attached], []):
        own = task_end(task, "kran-sw2", writes)
        assert own.exit_code == 143 and not own.engine_fault, writes
    # ... and a task on a network that was its node's last: its end frees the attachment (one
    # write just before its last update) - measured 06:57:21.673 for a task updated at .875
    alone = _status(
        "failed",
        143,
        "task: non-zero exit (143)",
        CreatedAt="2026-12-05T06:57:15.71Z",
        UpdatedAt="2026-12-05T06:57:21.875Z",
    )
    own = task_end(alone, "kran-sw1", [_t("06:57:15.766"), _t("06:57:21.673")], network=True)
    assert own.exit_code == 143 and not own.engine_fault
    # other exits are the job's whenever they came
    three = _status("failed", 3, "task: non-zero exit (3)", CreatedAt=task["CreatedAt"], UpdatedAt=task["UpdatedAt"])
    assert task_end(three, "kran-sw2", [attached, registered, freed], network=True).exit_code == 3
    assert not task_end(three, "kran-sw2", [registered]).engine_fault


def test_a_node_back_from_a_restart_settles_and_a_timing_reading_settles_it_once_a_minute() -> None:
    """A node whose engine came back takes no new job for SETTLE_S. A restart read from
    timing alone (a job's own 143 just after another task's attachment reads so too)
    settles it at most once a minute: a user's jobs made to read so must not keep the node
    from everyone (an outside review)."""
    from kran.adapters.engines.swarm_nodes import SETTLE_S, Returns
    from kran.domain.cluster import NodeInfo

    returns = Returns()
    node = NodeInfo("n1", "kran-sw1", "worker", "active", "ready", "")
    assert returns.view(node).state == "ready"
    returns.came_back("n1", inferred=True)
    assert returns.view(node).state == "settling" and not returns.view(node).schedulable
    returns._back["n1"] -= SETTLE_S  # settled
    assert returns.view(node).state == "ready"
    returns.came_back("n1", inferred=True)  # again within the minute: not from timing alone
    assert returns.view(node).state == "ready"
    returns.came_back("n1", inferred=False)  # "No such container", or down then ready: always
    assert returns.view(node).state == "settling"
