"""The container plan both container engines translate: pure, so tested over explicit specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kran.adapters.engines.containers import Bind, Handles, Sandbox, log_frames, plan_container
from kran.domain.resources import Resources
from kran.errors import EngineError
from kran.ports import LaunchSpec


def spec(**kw: object) -> LaunchSpec:
    base: dict[str, object] = {
        "job_id": 7,
        "attempt": 2,
        "argv": ("echo", "hi"),
        "image": "busybox",
        "env": {"A": "1", "B": "x=y"},
        "attempt_dir": Path("/data/jobs/7/2"),
        "allocation": Resources(1500, 256, 1, 0),
        "network": False,
    }
    return LaunchSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_names_labels_env_and_limits() -> None:
    plan = plan_container(spec(), "0123456789abcdef", Sandbox(), kill_grace_s=10)
    assert plan.name == "kran-0123456789ab-7-2"
    assert plan.labels == {
        "kran.instance": "0123456789abcdef",
        "kran.job": "7",
        "kran.attempt": "2",
        "kran.dir": "/data/jobs/7/2",
    }
    # a left-behind task container is GC's, never an attempt the Docker engine adopts
    assert plan.container_labels == {"kran.instance": "0123456789abcdef", "kran.job": "7"}
    assert plan.env == ("A=1", "B=x=y")
    assert plan.args == ("echo", "hi") and plan.workdir == "/data/jobs/7/2/work"
    assert (plan.millicpus, plan.mem_mb, plan.gpus, plan.network) == (1500, 256, 1, False)
    assert (plan.cap_drop, plan.no_new_privileges, plan.init, plan.pids_limit) == (("ALL",), True, True, 4096)


def test_binds_the_workdir_the_volumes_and_the_jobs_binds() -> None:
    s = spec(mounts=(Path("/vol/app"),), binds=(("/data/in", "/in", False), ("/data/out", "/out", True)), cwd="/in")
    plan = plan_container(s, "i", Sandbox(), 10)
    assert plan.binds == (
        Bind("/data/jobs/7/2/work", "/data/jobs/7/2/work"),
        Bind("/vol/app", "/vol/app"),
        Bind("/data/in", "/in", read_only=True),
        Bind("/data/out", "/out"),
    )
    assert plan.workdir == "/in"


def test_a_read_only_root_gets_a_tmp_unless_the_job_binds_one() -> None:
    assert plan_container(spec(), "i", Sandbox(), 10).tmpfs_mb == {}
    plan = plan_container(spec(), "i", Sandbox(read_only=True, pids_limit=50), 10)
    assert (plan.read_only, plan.tmpfs_mb, plan.pids_limit) == (True, {"/tmp": 256}, 50)
    bound = plan_container(spec(binds=(("/scratch", "/tmp", True),)), "i", Sandbox(read_only=True), 10)
    assert bound.tmpfs_mb == {}


def test_grace_is_the_jobs_else_the_engines() -> None:
    assert plan_container(spec(), "i", Sandbox(), 10).grace_s == 10
    assert plan_container(spec(grace_s=0.5), "i", Sandbox(), 10).grace_s == 0.5


def test_the_user_is_the_jobs_else_the_sandboxs() -> None:
    # kran runs as root here (tests/engines): it can switch users
    assert plan_container(spec(), "i", Sandbox(), 10).user is None
    assert plan_container(spec(), "i", Sandbox(run_as=(5, 6)), 10).user == "5:6"
    assert plan_container(spec(run_as=(7, 8)), "i", Sandbox(run_as=(5, 6)), 10).user == "7:8"


def test_a_job_without_an_image_is_refused() -> None:
    with pytest.raises(EngineError, match="--image"):
        plan_container(spec(image=None), "i", Sandbox(), 10)


def test_handles() -> None:
    h = Handles("docker:")
    assert h.of("abc") == "docker:abc" and h.object_id("docker:abc") == "abc"
    assert h.owns("docker:abc") and not h.owns("swarm:abc") and not h.owns(None) and not h.owns("")


class Trickle:
    """A response body that gives at most `step` bytes a read, as a socket may."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def read(self, n: int) -> bytes:
        got, self.data = self.data[: min(n, self.step)], self.data[min(n, self.step) :]
        return got


def _frame(kind: int, data: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def test_log_frames_split_the_streams_however_the_bytes_arrive() -> None:
    body = _frame(1, b"out\n") + _frame(2, b"err\n") + _frame(1, b"\x00\xff" * 3000) + _frame(2, b"")
    for step in (1, 3, 7, 4096, 1 << 20):
        got: dict[int, bytes] = {1: b"", 2: b""}
        for kind, data in log_frames(Trickle(body, step)):
            got[kind] += data
        assert got == {1: b"out\n" + b"\x00\xff" * 3000, 2: b"err\n"}
    # a body that ends inside a frame (a dropped connection raises in the HTTP client
    # before this sees it): the frames read so far, then the end, not an endless loop
    cut = list(log_frames(Trickle(body[:30], 5)))
    assert b"".join(d for _, d in cut) == b"out\nerr\n\x00\xff"[: sum(len(d) for _, d in cut)]
