"""The fork server that starts host jobs (spawner.py): its pure parts, and what the process
engine reads when a wrapper is killed or the fork server itself goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.process import ProcessEngine
from kran.adapters.engines.spawner import SetupError, _nofollow_dirs, nsfs_mounts, proc_start
from kran.ports import AttemptRef
from tests.engines.test_contract import shell_spec, wait_end

MOUNTINFO = b"""\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
840 25 0:4 net:[4026532290] /run/docker/netns/1a2b rw shared:380 - nsfs nsfs rw
841 25 0:4 net:[4026532291] /run/netns/with\\040space rw shared:381 - nsfs nsfs rw
844 25 0:4 net:[4026532292] /run/netns/a\xc2\xa0b\x1c/etc rw - nsfs nsfs rw
842 22 0:48 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
843 22 0:49 / /mnt/nsfs rw - ext4 /dev/sdb1 rw
"""


def test_namespace_files_are_found_by_type_not_by_name() -> None:
    """Split only where the kernel does (a space, a newline): a path with other whitespace is
    one path, not a shorter one."""
    assert nsfs_mounts(MOUNTINFO) == [
        b"/run/docker/netns/1a2b",
        b"/run/netns/with space",
        b"/run/netns/a\xc2\xa0b\x1c/etc",
    ]
    assert nsfs_mounts(b"") == []


def test_the_work_dir_inside_the_private_tmp_is_made_without_following_links(tmp_path: Path) -> None:
    """The job's user owns its private /tmp: a link planted there never takes root's mkdir
    or mount elsewhere."""
    base = tmp_path / "tmp"
    base.mkdir()
    fd = _nofollow_dirs(str(base), "data/jobs/1/work")
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(base / "data/jobs/1/work"))
    finally:
        os.close(fd)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (base / "planted").symlink_to(elsewhere)
    with pytest.raises(OSError):
        _nofollow_dirs(str(base), "planted/jobs/1/work")
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(SetupError):
        _nofollow_dirs(str(base), "data/../../x")


@pytest.fixture
def engine() -> Iterator[ProcessEngine]:
    eng = ProcessEngine(uuid.uuid4().hex, kill_grace_s=1)
    yield eng
    for ref in eng.discover():
        eng.kill(ref)
        eng.collect(ref)
    eng.close()


def _launch(engine: ProcessEngine, tmp_path: Path, job: int, script: str) -> AttemptRef:
    spec = shell_spec(tmp_path, job, script, None)
    return AttemptRef(job, 1, engine.launch(spec), spec.attempt_dir)


def _wrapper(ref: AttemptRef) -> int:
    assert ref.handle is not None
    return int(ref.handle.split(":")[1])


def test_a_wrapper_killed_before_its_exit_code_ends_with_the_signal(engine: ProcessEngine, tmp_path: Path) -> None:
    ref = _launch(engine, tmp_path, 1, "sleep 30")
    time.sleep(0.3)
    assert engine.check([ref]) == {}
    os.kill(_wrapper(ref), signal.SIGKILL)  # the wrapper alone: no exit code written
    end = wait_end(engine, ref)
    assert (end.exit_code, end.error) == (137, "killed by signal SIGKILL")
    engine.kill(ref)


def test_the_fork_server_going_away_loses_no_attempt(engine: ProcessEngine, tmp_path: Path) -> None:
    """Its wrappers run on (as after a server restart) and write their exit codes; the next
    launch starts a fork server again."""
    ref = _launch(engine, tmp_path, 2, "sleep 1; exit 7")
    first = engine._spawner.pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_end(engine, ref).exit_code == 7
    again = _launch(engine, tmp_path, 3, "exit 3")
    assert wait_end(engine, again).exit_code == 3
    assert engine._spawner.pid() not in (None, first)


def test_a_job_gets_no_signal_the_server_ignores(tmp_path: Path) -> None:
    """A server started under nohup ignores SIGHUP, and Python ignores SIGPIPE and SIGXFSZ:
    a job starts with every signal at its default, as from a fresh login."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        engine = ProcessEngine(uuid.uuid4().hex, kill_grace_s=1)  # its fork server inherits the ignore
    finally:
        signal.signal(signal.SIGHUP, before)
    try:
        ref = _launch(engine, tmp_path, 4, "grep -E '^Sig(Ign|Blk)' /proc/self/status")
        assert wait_end(engine, ref).exit_code == 0
        assert (ref.attempt_dir / "stdout").read_text().split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]
    finally:
        engine.close()


def test_an_attempt_without_a_process_never_signals_the_servers_group() -> None:
    """proc:0:0 (an attempt that ended before the server could record its process) names no
    process: signalling its group would be killpg(0), the server's own."""
    code = (
        "import signal, uuid; from pathlib import Path;"
        "from kran.adapters.engines.process import ProcessEngine; from kran.ports import AttemptRef;"
        "e = ProcessEngine(uuid.uuid4().hex);"
        "e._signal(AttemptRef(1, 1, 'proc:0:0', Path('/nonexistent')), signal.SIGTERM);"
        "e.close(); print('alive')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, start_new_session=True)
    assert r.stdout.strip() == "alive", (r.returncode, r.stderr[-500:])


def test_a_job_that_cannot_join_its_cgroup_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside its cgroup a job would escape its memory limit, its kill and its accounting:
    the attempt fails as a set-up failure (125) instead (it ran unconfined before)."""
    gone = tmp_path / "removed-cgroup" / "cgroup.procs"
    monkeypatch.setattr(Cgroups, "create", lambda self, *a, **k: [gone])
    eng = ProcessEngine(uuid.uuid4().hex, kill_grace_s=1, cgroups=Cgroups(None, "test"))
    try:
        ref = _launch(eng, tmp_path, 4, "touch ran")
        end = wait_end(eng, ref)
        assert end.exit_code == 125
        assert "could not put the job into its cgroup" in (ref.attempt_dir / "stderr").read_text()
        assert not (ref.attempt_dir / "work" / "ran").exists()
    finally:
        eng.close()


def test_a_set_up_failure_says_why_where_the_attempt_dir_takes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the fork server's child could write neither its reason nor its exit
    code: the job failed as a bare 'exit code 125'. The reason now also comes through the
    fork server. Here `stderr` is a dir, so no file takes it."""
    gone = tmp_path / "removed-cgroup" / "cgroup.procs"
    monkeypatch.setattr(Cgroups, "create", lambda self, *a, **k: [gone])
    eng = ProcessEngine(uuid.uuid4().hex, kill_grace_s=1, cgroups=Cgroups(None, "test"))
    try:
        spec = shell_spec(tmp_path, 7, "touch ran", None)
        (spec.attempt_dir / "stderr").mkdir()
        ref = AttemptRef(7, 1, eng.launch(spec), spec.attempt_dir)
        end = wait_end(eng, ref)
        assert end.exit_code == 125 and "could not put the job into its cgroup" in str(end.error), end
        assert not (ref.attempt_dir / "work" / "ran").exists()
    finally:
        eng.close()


def test_the_start_time_the_fork_server_tells_is_the_one_proc_shows(tmp_path: Path) -> None:
    """It is what a wrapper is known by (with its pid) for as long as it runs, and after a
    restart: the fork server takes it from the clock when it can, and it must be /proc's."""
    eng = ProcessEngine(uuid.uuid4().hex, kill_grace_s=1, cgroups=Cgroups(None, "test"))
    try:
        for job in range(1, 41):
            ref = _launch(eng, tmp_path, job, "sleep 2")
            pid, start = ref.handle.split(":")[1:] if ref.handle else ("0", "")
            assert (proc_start(int(pid)) or ("", ""))[1] == start, (job, ref.handle)
    finally:
        eng.close()
