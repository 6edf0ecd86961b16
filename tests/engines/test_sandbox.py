"""One confinement, every engine: a job runs as the same user and, in a container, under
the same sandbox on the Docker engine and on a swarm (issue 19.4)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.containers import Sandbox
from kran.adapters.engines.docker_engine import DockerEngine
from kran.adapters.engines.process import ProcessEngine
from kran.adapters.engines.swarm import SwarmEngine
from kran.domain.resources import Resources
from kran.errors import EngineError
from kran.ports import AttemptRef, Engine, LaunchSpec
from tests.engines.test_contract import wait_end

JOB_USER = (54321, 54322)
PIDS = 123
PROBE = (
    'echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"; '
    "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; "
    'echo "pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"; '
    'awk \'$2 == "/" {split($4, o, ","); print "rootfs=" o[1]}\' /proc/mounts; '
    "if touch /tmp/probe; then echo tmp=rw; else echo tmp=ro; fi; "
    "grep ' /tmp ' /proc/mounts | cut -d' ' -f3,4; "
    'echo "work=$(stat -c %u:%g:%a .)"'
)


@pytest.fixture
def root_dir() -> Iterator[Path]:
    """Attempt dirs the job user can reach on the host too (pytest's tmp dirs are root's
    0700), not under /tmp (the binds' mount points would be made in the job's /tmp)."""
    d = Path(tempfile.mkdtemp(prefix="kran-sandbox-", dir="/var/tmp"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_engine(kind: str, sandbox: Sandbox, request: pytest.FixtureRequest) -> Any:
    instance = uuid.uuid4().hex
    if kind.startswith("process"):  # without cgroups: setpriv drops; with (the server's): the fork server's child
        cgroups = Cgroups.detect() if kind == "process-cgroups" else None
        process = ProcessEngine(instance, kill_grace_s=1, run_as=sandbox.run_as, cgroups=cgroups)
        request.addfinalizer(process.close)  # its fork server
        if cgroups is not None:
            request.addfinalizer(lambda: cgroups.remove_instance(instance, with_attempts=True))
        return process
    request.getfixturevalue("test_image")
    if kind == "docker":
        return DockerEngine(instance, kill_grace_s=1, sandbox=sandbox)
    swarm = SwarmEngine(instance, request.getfixturevalue("swarm").manager.sock, kill_grace_s=1, sandbox=sandbox)
    request.addfinalizer(swarm.close)  # its event follower
    return swarm


def run_probe(engine: Engine, kind: str, root: Path, test_image: str, run_as: tuple[int, int] | None = None) -> str:
    attempt_dir = root / "j1" / "1"
    (attempt_dir / "work").mkdir(parents=True)
    spec = LaunchSpec(
        job_id=1,
        attempt=1,
        argv=("/bin/sh", "-c", PROBE),
        image=None if kind.startswith("process") else test_image,
        env={},
        attempt_dir=attempt_dir,
        allocation=Resources(500, 128, 0, 0),
        network=False,
        run_as=run_as,
    )
    ref = AttemptRef(1, 1, engine.launch(spec), attempt_dir)
    end = wait_end(engine, ref)
    engine.collect(ref)
    assert end.exit_code == 0, (attempt_dir / "stderr").read_text()
    return (attempt_dir / "stdout").read_text()


def facts(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        key, sep, value = line.replace(":\t", "=").partition("=")
        if line.startswith("tmpfs "):
            found["tmp_mount"] = line
        elif sep:
            found[key.strip()] = value.strip()
    return found


@pytest.fixture(params=["process", "process-cgroups", "docker", "swarm"])
def any_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["docker", "swarm"])
def container_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_job_runs_as_the_engines_job_user_or_its_own(
    any_kind: str, root_dir: Path, test_image: str, request: pytest.FixtureRequest
) -> None:
    """The engine's user unless staging chose the job's own; no supplementary groups; its
    working dir its own and private. Same answer on every engine."""
    engine = make_engine(any_kind, Sandbox(run_as=JOB_USER), request)
    got = facts(run_probe(engine, any_kind, root_dir, test_image))
    assert (got["uid"], got["gid"], got["groups"]) == ("54321", "54322", "54322")
    assert got["work"] == "54321:54322:700"
    shutil.rmtree(root_dir / "j1")
    got = facts(run_probe(engine, any_kind, root_dir, test_image, run_as=(54400, 54401)))
    assert (got["uid"], got["gid"], got["work"]) == ("54400", "54401", "54400:54401:700")


def test_a_container_job_is_confined_alike_on_every_container_engine(
    container_kind: str, root_dir: Path, test_image: str, request: pytest.FixtureRequest
) -> None:
    """No capabilities, the pids limit, a read-only root with a small private /tmp (the
    swarm had none of the last three: its jobs could fork without bound and write their
    image's root)."""
    engine = make_engine(container_kind, Sandbox(run_as=JOB_USER, read_only=True, pids_limit=PIDS), request)
    got = facts(run_probe(engine, container_kind, root_dir, test_image))
    tmp_options = set(got.get("tmp_mount", "tmpfs -").split()[1].split(","))
    assert {
        "caps": (got["CapEff"], got["CapBnd"]),
        "pids": got["pids"],
        "rootfs": got["rootfs"],
        "tmp": got["tmp"],
        "tmp_options": tmp_options >= {"rw", "nosuid", "nodev", "noexec", "size=262144k"},
    } == {"caps": ("0" * 16, "0" * 16), "pids": str(PIDS), "rootfs": "ro", "tmp": "rw", "tmp_options": True}


def test_without_read_only_the_root_is_the_containers_own(
    container_kind: str, root_dir: Path, test_image: str, request: pytest.FixtureRequest
) -> None:
    engine = make_engine(container_kind, Sandbox(), request)
    got = facts(run_probe(engine, container_kind, root_dir, test_image))
    assert (got["rootfs"], "tmp_mount" in got, got["pids"]) == ("rw", False, "4096")


def test_a_job_cannot_gain_privileges(
    any_kind: str, root_dir: Path, test_image: str, request: pytest.FixtureRequest
) -> None:
    """no_new_privs: a setuid binary in the image gives the job nothing."""
    engine = make_engine(any_kind, Sandbox(run_as=JOB_USER), request)
    if any_kind == "swarm" and _api_version(engine) < (1, 44):
        pytest.xfail(
            "Swarm takes NoNewPrivileges from API 1.44 (Docker 25); an older engine ignores it "
            "(its daemon.json can set no-new-privileges for every container)"
        )
    got = facts(run_probe(engine, any_kind, root_dir, test_image))
    assert got["NoNewPrivs"] == "1"
    if any_kind.startswith("process"):  # (dropped by setpriv, or by the fork server's child itself)
        assert [got[c] for c in ("CapInh", "CapPrm", "CapEff", "CapAmb")] == ["0" * 16] * 4


def _api_version(engine: SwarmEngine) -> tuple[int, ...]:
    return tuple(int(p) for p in engine.client.version()["ApiVersion"].split("."))


def test_a_missing_mount_source_is_refused_not_made(
    container_kind: str, root_dir: Path, test_image: str, request: pytest.FixtureRequest
) -> None:
    """An app volume not mounted (or gone) fails the attempt on both engines; Docker's
    `-v` used to make it, empty and root's, on the host, and the job ran on that."""
    engine = make_engine(container_kind, Sandbox(), request)
    attempt_dir = root_dir / "j1" / "1"
    (attempt_dir / "work").mkdir(parents=True)
    volume = root_dir / "volume-not-mounted"
    spec = LaunchSpec(
        job_id=1,
        attempt=1,
        argv=("true",),
        image=test_image,
        env={},
        attempt_dir=attempt_dir,
        allocation=Resources(500, 128, 0, 0),
        network=False,
        mounts=(volume,),
    )
    try:
        ref = AttemptRef(1, 1, engine.launch(spec), attempt_dir)
    except EngineError as e:
        assert "does not exist" in str(e)
    else:  # a swarm's node rejects the task
        end = wait_end(engine, ref)
        engine.collect(ref)
        assert end.exit_code is None and "does not exist" in (end.error or "")
    assert not volume.exists()
