"""How a swarm task's final status reads (pure: the manager's Status in), and Docker's times."""

from __future__ import annotations

from kran.adapters.engines.containers import docker_time
from kran.adapters.engines.swarm import task_end


def _status(state: str, code: int, err: str | None = None) -> dict[str, object]:
    return {"State": state, "Err": err, "ContainerStatus": {"ExitCode": code}}


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
