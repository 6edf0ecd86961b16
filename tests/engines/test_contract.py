"""One contract, every engine: the same tests against the process and the Docker engine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.docker_engine import DockerEngine
from kran.adapters.engines.process import ProcessEngine, read_exit_code
from kran.adapters.engines.swarm import SwarmEngine
from kran.domain.resources import Resources
from kran.domain.retry import AttemptEnd
from kran.errors import EngineError
from kran.ports import AttemptRef, Engine, LaunchSpec


@pytest.fixture(params=["process", "process-cgroups", "docker", "swarm"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(engine_kind: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    instance = uuid.uuid4().hex
    if engine_kind == "process":  # (no cgroups: a server not run as root; the shell wrapper)
        eng: Any = ProcessEngine(instance, kill_grace_s=1)
    elif engine_kind == "process-cgroups":  # (the server's own: each attempt waited for by the fork server's child)
        eng = ProcessEngine(instance, kill_grace_s=1, cgroups=Cgroups.detect())
        request.addfinalizer(lambda: Cgroups.detect().remove_instance(instance, with_attempts=True))
    elif engine_kind == "docker":
        request.getfixturevalue("test_image")
        eng = DockerEngine(instance, kill_grace_s=1, on_exit=lambda: None)  # the server's: ends told by events
    else:
        eng = SwarmEngine(instance, request.getfixturevalue("swarm").manager.sock, kill_grace_s=1)
    yield eng
    for ref in eng.discover():
        eng.kill(ref)
        eng.collect(ref)
    eng.close()  # its fork server, its event followers


def shell_spec(
    tmp_path: Path, job: int, script: str, image: str | None, env: dict[str, str] | None = None
) -> LaunchSpec:
    """Attempt 1 of job `job`: `sh -c script`, in a fresh attempt dir under tmp_path."""
    attempt_dir = tmp_path / f"j{job}" / "1"
    (attempt_dir / "work").mkdir(parents=True)
    return LaunchSpec(
        job_id=job,
        attempt=1,
        argv=("/bin/sh", "-c", script),
        image=image,
        env={
            "KRAN_JOB_ID": str(job),
            "KRAN_ATTEMPT": "1",
            "KRAN_WORKDIR": str(attempt_dir / "work"),
            **(env or {}),
        },
        attempt_dir=attempt_dir,
        allocation=Resources(500, 128, 0, 0),
        network=False,
    )


@pytest.fixture
def launch(engine: Engine, engine_kind: str, tmp_path: Path, test_image: str) -> Any:
    counter = iter(range(1, 1000))

    def go(script: str, job_id: int | None = None, env: dict[str, str] | None = None) -> AttemptRef:
        job = job_id if job_id is not None else next(counter)
        spec = shell_spec(tmp_path, job, script, None if engine_kind.startswith("process") else test_image, env)
        return AttemptRef(job, 1, engine.launch(spec), spec.attempt_dir)

    return go


def wait_end(engine: Engine, ref: AttemptRef, timeout: float = 30) -> AttemptEnd:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ends = engine.check([ref])
        if (ref.job_id, ref.attempt) in ends:
            return ends[(ref.job_id, ref.attempt)]
        time.sleep(0.05)
    raise AssertionError("attempt did not end")


def test_exit_code_logs_env_and_workdir(engine: Engine, launch: Any) -> None:
    ref = launch('echo out; echo err >&2; echo "$GREETING" > file.txt; pwd; exit 7', env={"GREETING": "hi"})
    end = wait_end(engine, ref)
    assert end.exit_code == 7 and not end.vanished
    engine.collect(ref)
    assert (ref.attempt_dir / "stdout").read_text() == f"out\n{ref.attempt_dir / 'work'}\n"
    assert (ref.attempt_dir / "stderr").read_text() == "err\n"
    assert (ref.attempt_dir / "work" / "file.txt").read_text() == "hi\n"
    engine.collect(ref)  # idempotent


def test_logs_come_back_whole_and_each_to_its_own_file(engine: Engine, launch: Any) -> None:
    """Interleaved streams and a 300 kB line without a newline (the daemon splits it in
    16 kB pieces): each byte in its own file, in order."""
    ref = launch(
        'i=0; while [ $i -lt 2000 ]; do echo "o$i"; echo "e$i" >&2; i=$((i+1)); done;'
        " head -c 300000 /dev/zero | tr '\\0' x"
    )
    assert wait_end(engine, ref).exit_code == 0
    engine.collect(ref)
    out = (ref.attempt_dir / "stdout").read_text()
    assert out == "".join(f"o{i}\n" for i in range(2000)) + "x" * 300000
    assert (ref.attempt_dir / "stderr").read_text() == "".join(f"e{i}\n" for i in range(2000))


def test_success_and_running_attempts_are_left_out(engine: Engine, launch: Any) -> None:
    slow = launch("sleep 2")
    fast = launch("true")
    assert wait_end(engine, fast).exit_code == 0
    assert (slow.job_id, 1) not in engine.check([slow])
    assert wait_end(engine, slow).exit_code == 0


def test_kill_stops_the_attempt(engine: Engine, launch: Any) -> None:
    ref = launch("sleep 60")
    time.sleep(0.3)
    t0 = time.monotonic()
    engine.kill(ref)
    end = wait_end(engine, ref, timeout=15)
    assert time.monotonic() - t0 < 10
    assert end.exit_code != 0


def test_kill_escalates_when_sigterm_is_ignored(engine: Engine, launch: Any, engine_kind: str) -> None:
    """A host job is gone after the grace, also where nothing but its process group finds
    it: this fixture's process engine has no cgroups (a server not run as root), and the
    SIGTERM ends the job's wrapper first (the job ran on, unseen, before)."""
    marker = f"kran-ignores-term-{uuid.uuid4().hex[:8]}"
    ref = launch(f"trap '' TERM; while true; do sleep 0.1; done # {marker}")
    time.sleep(0.3)

    def left() -> list[str]:
        return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()

    try:
        engine.kill(ref)
        end = wait_end(engine, ref, timeout=15)
        assert end.exit_code != 0
        if engine_kind.startswith("process"):
            deadline = time.monotonic() + 10  # (the grace is 1 s)
            while left() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not left(), "the job outlived its kill"
        if engine_kind == "process-cgroups":  # its waiter outlives the SIGKILL and says how the job ended
            assert (end.exit_code, end.error, read_exit_code(ref.attempt_dir)) == (137, None, 137)
    finally:  # (a swarm task's container may take a while to go)
        for pid in left():
            os.kill(int(pid), signal.SIGKILL)


def test_an_end_after_the_stop_is_a_stop_whatever_the_exit_code(engine: Engine, launch: Any, engine_kind: str) -> None:
    """A preempted job that saves its work on SIGTERM and exits 0 was stopped, not done (it
    is re-queued). The root waiter records the job's own 0 where the shell wrapper died of
    the signal: the attempt now says it ended after kran's stop."""
    if engine_kind == "swarm":
        pytest.skip("a swarm service's end time is the daemon's")
    ref = launch("trap 'exit 0' TERM; echo started; while true; do sleep 0.1; done")
    deadline = time.monotonic() + 10
    while b"started" not in b"".join(engine.stream_logs(ref, "stdout", False)) and time.monotonic() < deadline:
        time.sleep(0.05)
    engine.kill(ref)
    end = wait_end(engine, ref, timeout=15)
    assert end.stopped, end


def test_kill_does_not_wait_out_the_grace(engine: Engine, launch: Any, engine_kind: str) -> None:
    """A kill sends its signal and returns: the SIGKILL follows after the grace without a
    thread waiting for it (a docker kill held one of the server's 16 engine threads for the
    job's grace: a user's jobs that ignore SIGTERM with `--grace 1h` stalled every launch
    and collect for an hour). A second kill keeps the first one's time: its SIGKILL comes
    at the first's time plus its own grace."""
    marker = f"kran-ignores-term-{uuid.uuid4().hex[:8]}"
    ref = launch(f"trap '' TERM; while true; do sleep 0.1; done # {marker}")
    time.sleep(0.3)

    def left() -> list[str]:  # (a container's processes are seen from the host too)
        return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()

    killer = threading.Thread(target=engine.kill, args=(replace(ref, grace_s=600),), daemon=True)
    killer.start()
    killer.join(20)
    try:
        assert not killer.is_alive(), "the kill waited for the job's grace"
        if engine_kind != "swarm":  # (swarm's grace is the daemon's: the service is removed, its task goes later)
            time.sleep(1.5)
            assert left(), "it ignores SIGTERM: it runs on during its grace"
            engine.kill(replace(ref, grace_s=1))
            deadline = time.monotonic() + 15
            while left() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not left(), "no SIGKILL after the grace"
        assert wait_end(engine, ref, timeout=15).exit_code != 0
    finally:
        for pid in left():  # (what is listed may end before its signal: swarm removes its task meanwhile)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def test_discover_finds_running_attempts_of_this_instance(engine: Engine, launch: Any) -> None:
    ref = launch("sleep 30", job_id=41)
    time.sleep(0.3)
    found = {(r.job_id, r.attempt): r for r in engine.discover()}
    assert (41, 1) in found and found[(41, 1)].handle == ref.handle
    engine.kill(ref)
    wait_end(engine, ref)


def test_stream_logs_follows_until_the_end(engine: Engine, launch: Any) -> None:
    ref = launch("for i in 1 2 3; do echo line$i; sleep 0.2; done")
    time.sleep(0.1)
    data = b"".join(engine.stream_logs(ref, "stdout", follow=True))
    assert data == b"line1\nline2\nline3\n"


def test_vanished_work_is_reported(
    engine: Engine, launch: Any, engine_kind: str, request: pytest.FixtureRequest
) -> None:
    ref = launch("sleep 30")
    time.sleep(0.3)
    if engine_kind == "process-cgroups":  # the waiter, then the job
        os.kill(int(ref.handle.split(":")[1]), signal.SIGKILL)
        Cgroups.detect().signal_all(engine._rel(ref.job_id, 1), signal.SIGKILL)
    elif engine_kind == "process":
        pid = int(ref.handle.split(":")[1])
        os.killpg(pid, signal.SIGKILL)
    elif engine_kind == "docker":
        import docker

        docker.from_env().containers.get(ref.handle.split(":", 1)[1]).remove(force=True)
    else:
        request.getfixturevalue("swarm").manager.docker("service", "rm", ref.handle.split(":", 1)[1])
    end = wait_end(engine, ref)
    assert end.vanished or end.exit_code == 137


def test_a_container_removed_after_its_end_was_seen_is_collected(engine_kind: str, engine: Engine, launch: Any) -> None:
    """Its end inspected, then removed by someone else before the collect: the exit code
    the check read is kept, the logs are empty, the collect does not fail."""
    if engine_kind != "docker":
        pytest.skip("the local docker engine's collect")
    import docker

    ref = launch("echo gone; exit 3")
    assert wait_end(engine, ref).exit_code == 3
    docker.from_env().containers.get(ref.handle.split(":", 1)[1]).remove(force=True)
    engine.collect(ref)
    assert (ref.attempt_dir / "stdout").read_bytes() == b"" and (ref.attempt_dir / "stderr").exists()
    assert read_exit_code(ref.attempt_dir) == 3


def test_bad_command_fails_cleanly(engine: Engine, launch: Any) -> None:
    ref = launch("exec /does/not/exist")
    end = wait_end(engine, ref)
    assert end.exit_code == 127


def test_a_host_jobs_command_is_found_and_run_as_a_shell_would(
    engine_kind: str, engine: Engine, tmp_path: Path
) -> None:
    """The job's own command, not a shell script of ours: looked up in the job's PATH (a
    program in its work dir's bin), run from its work dir (PWD as the shell set it), a file
    without #! run as a shell script; exit codes as the shell's exec gives them (127 not
    found, a link loop too; 126 not runnable, an empty name too), each said on stderr. (The
    cgroup chain execs it without a loader shell; the other through one: both the same.)"""
    if not engine_kind.startswith("process"):
        pytest.skip("host jobs' command lookup")
    cases: list[tuple[tuple[str, ...], int, str, str]] = [
        (("kran-no-such-program",), 127, "", "kran-no-such-program: not found"),
        (("./not-runnable",), 126, "", "Permission denied"),
        (("./loop",), 127, "", "loop"),
        (("",), 126, "", ""),
        (("./plain", "a b"), 0, "plain a b {work}\n", ""),
        (("mytool", "z"), 0, "tool z {work}\n", ""),
    ]
    refs = []
    for job, (argv, *_) in enumerate(cases, start=1):
        spec = shell_spec(tmp_path, job, "", None)
        work = spec.attempt_dir / "work"
        (work / "bin").mkdir()
        for name, text, mode in (
            ("not-runnable", "echo no\n", 0o644),
            ("plain", 'echo "plain $1 $PWD"\n', 0o755),  # (no #! line)
            ("bin/mytool", '#!/bin/sh\necho "tool $1 $(pwd)"\n', 0o755),
        ):
            (work / name).write_text(text)
            (work / name).chmod(mode)
        (work / "loop").symlink_to("loop")
        spec = replace(spec, argv=argv, env={**spec.env, "PATH": f"{work}/bin:/usr/bin:/bin"})
        refs.append(AttemptRef(job, 1, engine.launch(spec), spec.attempt_dir))
    for ref, (argv, code, out, err) in zip(refs, cases, strict=True):
        end = wait_end(engine, ref)
        engine.collect(ref)
        work = ref.attempt_dir / "work"
        assert (end.exit_code, (ref.attempt_dir / "stdout").read_text()) == (code, out.format(work=work)), argv
        assert err in (ref.attempt_dir / "stderr").read_text(), argv


def test_docker_relaunch_of_same_attempt_does_not_run_twice(
    engine_kind: str, engine: Engine, launch: Any, tmp_path: Path, test_image: str
) -> None:
    if engine_kind.startswith("process"):
        pytest.skip("name-based idempotence is a container engine property")
    ref = launch("echo once >> count.txt; sleep 1", job_id=77)
    spec = LaunchSpec(
        job_id=77,
        attempt=1,
        argv=("/bin/sh", "-c", "echo once >> count.txt"),
        image=test_image,
        env={},
        attempt_dir=ref.attempt_dir,
        allocation=Resources(500, 128, 0, 0),
        network=False,
    )
    assert engine.launch(spec) == ref.handle
    wait_end(engine, ref)
    assert (ref.attempt_dir / "work" / "count.txt").read_text() == "once\n"


def test_docker_unknown_image_is_an_engine_error(engine_kind: str, engine: Engine, tmp_path: Path) -> None:
    """The engine does not pull (its own pull ignored the stored credentials and the pull
    timeout, and split @sha256 references wrongly): the image manager pulls before launch."""
    if engine_kind != "docker":
        pytest.skip("the local docker engine's: a process engine runs no image; on a swarm the node rejects the task")
    (tmp_path / "work").mkdir()
    spec = LaunchSpec(
        job_id=1,
        attempt=1,
        argv=("true",),
        image="127.0.0.1:1/nope:latest",
        env={},
        attempt_dir=tmp_path,
        allocation=Resources(500, 128, 0, 0),
        network=False,
    )
    with pytest.raises(EngineError, match="nope:latest is not on this node"):
        engine.launch(spec)


def test_container_jobs_keep_the_image_entrypoint(
    engine_kind: str, engine: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """As `docker run IMAGE ARGS`: the job's command goes to the image's ENTRYPOINT, on
    every container engine (a swarm service's Command would replace the entrypoint)."""
    if engine_kind.startswith("process"):
        pytest.skip("images only")
    image = request.getfixturevalue("entrypoint_image")
    if engine_kind == "swarm":
        request.getfixturevalue("swarm").load_image(image)
    (tmp_path / "work").mkdir()
    spec = LaunchSpec(
        job_id=5,
        attempt=1,
        argv=("hello",),
        image=image,
        env={},
        attempt_dir=tmp_path,
        allocation=Resources(500, 128, 0, 0),
        network=False,
    )
    ref = AttemptRef(5, 1, engine.launch(spec), tmp_path)
    assert wait_end(engine, ref).exit_code == 0
    engine.collect(ref)
    assert (tmp_path / "stdout").read_text() == "entry hello\n"


def test_capabilities_say_what_it_runs(engine: Engine, launch: Any, tmp_path: Path) -> None:
    """Admission asks the engine what it runs (never its name): its answers must hold."""
    can = engine.capabilities
    assert can.host_processes or can.containers
    assert (engine.unavailable(image=False) is None) == can.host_processes
    assert (engine.unavailable(image=True) is None) == can.containers  # the engines here are healthy
    # an attempt that ended while the server was down: only an engine whose ended work is
    # not kept for discover gives a handle, from what the work left in its dir
    ref = launch("exit 3")
    wait_end(engine, ref)
    engine.collect(ref)
    handle = engine.handle_of_ended(ref.attempt_dir)
    assert (handle is not None) == (can.host_processes and not can.containers)
    assert engine.handle_of_ended(tmp_path / "never-ran") is None
