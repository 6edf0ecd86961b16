"""Host-process jobs against root: the environment, users' uids, escaping processes,
pids, /tmp and /dev/shm, out of memory."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kran.adapters.engines import cgroups
from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.process import ProcessEngine
from kran.errors import EngineUnavailable
from kran.ports import AttemptRef
from tests.engines.test_contract import shell_spec
from tests.security.conftest import logs, wait_job, wait_running

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _submit(server: Any, user: str | None, **body: Any) -> int:
    with server.api(user) as c:
        r = c.post("/api/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])


def _root_processes_of(job_id: int) -> list[dict[str, str]]:
    """The environments of the root processes that serve job `job_id` (in its attempt's
    cgroup: the fork server's child that waits for the job), each with its command line as
    "(cmdline)" (any host user can read that with ps)."""
    found = []
    mine = re.compile(rf"^\d+:[^:]*:/kran/[^/]+/{job_id}\.\d+$", re.M)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != 0 or not mine.search((entry / "cgroup").read_text()):
                continue
            raw = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        env = dict(v.decode(errors="replace").split("=", 1) for v in raw if b"=" in v)
        found.append({**env, "(cmdline)": cmdline})
    return found


def test_no_job_value_reaches_a_root_process(open_server: Any, tmp_path: Path) -> None:
    """Issue 17.1: the job's PATH made the root wrapper run the job's `setpriv`. Every tool
    the privileged part runs is faked in a dir on the job's PATH; none may run as root,
    and no root process of the job may carry any of the job's variables."""
    server = open_server()
    server.add_user("mallory")
    evil = Path(tempfile_dir(tmp_path))
    for tool in ("setpriv", "env", "sh", "mount", "unshare", "id", "cat", "echo"):
        fake = evil / tool
        fake.write_text(f'#!/bin/sh\n/usr/bin/id -u >> {evil}/who\nexec /usr/bin/{tool} "$@"\n')
        fake.chmod(0o755)
    hostile = {
        "PATH": f"{evil}:/usr/bin:/bin",
        "LD_PRELOAD": f"{evil}/evil.so",
        "LD_LIBRARY_PATH": str(evil),
        "LD_AUDIT": f"{evil}/evil.so",
        "BASH_ENV": f"{evil}/rc",
        "ENV": f"{evil}/rc",
        "IFS": "/",
        "KRAN_RUN_AS": "0:0",
        "KRAN_CGROUP_PROCS": "/etc/passwd",
        "KRAN_INSTANCE": "forged",
        "HOME": "/root",
        "API_TOKEN": "s3cr3t-token-of-mallory",
    }
    job = _submit(server, "mallory", command=["/bin/sh", "-c", "echo started; /usr/bin/id -u; sleep 3"], env=hostile)
    wait_running(server, job, "mallory", marker="started")
    roots = _root_processes_of(job)
    assert roots, "the root wrapper of the job was not found"
    for env in roots:
        leaked = {k: v for k, v in hostile.items() if env.get(k) == v}
        assert leaked == {}, f"job values in a root process's environment: {leaked}"
        assert env["PATH"] == BASE_PATH
        assert "s3cr3t-token-of-mallory" not in env["(cmdline)"], "the job's env in a root command line"
    done = wait_job(server, job, "mallory")
    assert done["state"] == "succeeded", done
    uid = int(logs(server, job, "mallory").split()[1])
    assert uid >= 1_100_000_000
    who = evil / "who"
    ran_as = who.read_text().split() if who.exists() else []
    assert "0" not in ran_as, f"a faked tool ran as root: {ran_as}"


def tempfile_dir(tmp_path: Path) -> str:
    """A dir on the host any job could have written to (world-writable, traversable)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="kran-evil-", dir="/tmp")
    os.chmod(d, 0o777)
    return d


def test_users_cannot_reach_each_others_files_or_the_store(open_server: Any) -> None:
    """Issue 17.4 and 17.5: every host job ran as 65534 in 0755 dirs, and the store was
    0644: any job read any other user's files, commands and environment."""
    server = open_server()
    server.add_user("alice")
    server.add_user("bob")
    data = server.data_dir
    alice = _submit(server, "alice", sh="echo secret-of-alice > secret; id -u", env={"TOKEN": "alice-token"})
    assert wait_job(server, alice, "alice")["state"] == "succeeded"
    work = data / "jobs" / str(alice) / "1" / "work"
    files = {
        "alice file": work / "secret",
        "alice stdout": work.parent / "stdout",
        "the store": data / "kran.db",
        "the store WAL": data / "kran.db-wal",
    }
    dirs = {  # a dir and an entry that listing it would show
        "alice work dir": (work, "secret"),
        "alice attempt dir": (work.parent, "stdout"),
        "the jobs dir": (data / "jobs", str(alice)),
        "the uploads": (data / "uploads", "."),
        "the data dir": (data, "kran.db"),
    }
    script = "".join(f"cat '{p}' >/dev/null 2>&1 && echo 'READ {name}'; " for name, p in files.items())
    script += "".join(
        f"ls -a '{p}' 2>/dev/null | grep -qx '{entry}' && echo 'READ {name}'; " for name, (p, entry) in dirs.items()
    )
    bob = _submit(server, "bob", sh=script + "id -u")
    assert wait_job(server, bob, "bob")["state"] == "succeeded"
    out = logs(server, bob, "bob").split("\n")
    assert [line for line in out if line.startswith("READ")] == []
    assert int(out[-2]) != int(logs(server, alice, "alice").strip()), "two users' jobs share a uid"
    assert (data.stat().st_mode & 0o777) == 0o711
    for name in ("kran.db", "kran.db-wal", "kran.db-shm"):
        if (data / name).exists():
            assert (data / name).stat().st_mode & 0o777 == 0o600, name
    assert work.stat().st_mode & 0o777 == 0o700


def _left(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _gone(marker: str, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while _left(marker):
        if time.monotonic() > deadline:
            for pid in _left(marker):  # a failing test still cleans up after itself
                os.kill(pid, 9)
            return False
        time.sleep(0.05)
    return True


def test_processes_end_with_their_job(open_server: Any) -> None:
    """Issue 17.6: `setsid sleep 600 &` outlived its job (and `kran kill`)."""
    server = open_server()
    a, b = f"60{secrets.randbelow(10**6)}.5", f"61{secrets.randbelow(10**6)}.5"
    escape = (
        f"setsid sleep {a} </dev/null >/dev/null 2>&1 & "
        f"(setsid sh -c 'sleep {b}' </dev/null >/dev/null 2>&1 &) ; echo started"
    )
    job = _submit(server, None, sh=escape)
    assert wait_job(server, job)["state"] == "succeeded"
    assert _gone(a) and _gone(b), "processes outlived their job"

    c, d = f"62{secrets.randbelow(10**6)}.5", f"63{secrets.randbelow(10**6)}.5"
    job = _submit(
        server, None, sh=f"setsid sleep {c} </dev/null >/dev/null 2>&1 & (sh -c 'sleep {d}' &); echo started; sleep 300"
    )
    wait_running(server, job, marker="started")
    with server.api() as cl:
        cl.post(f"/api/v1/jobs/{job}/kill").raise_for_status()
    assert wait_job(server, job)["state"] == "killed"
    assert _gone(c) and _gone(d), "processes outlived the kill of their job"


PIDS_DIR = (
    'p=$(awk -F: \'$2=="pids"{print "/sys/fs/cgroup/pids"$3}\' /proc/self/cgroup); '
    '[ -n "$p" ] || p=$(awk -F: \'$1=="0"{print "/sys/fs/cgroup"$3}\' /proc/self/cgroup); '
)


def test_host_jobs_have_a_pids_limit(open_server: Any) -> None:
    """Issue 17.7: 300 background processes, pids cgroup `/`. The default, and a small one."""
    server = open_server()
    job = _submit(server, None, sh=PIDS_DIR + 'cat "$p/pids.max"')
    assert wait_job(server, job)["state"] == "succeeded"
    assert logs(server, job).strip() == "4096"

    small = open_server(KRAN_LOCAL_PIDS_LIMIT="30")
    # the forking subshell dies at the limit; builtins only after it (no fork left)
    bomb = PIDS_DIR + '(for i in $(seq 100); do sleep 20 & done) 2>/dev/null; read n < "$p/pids.current"; echo $n'
    job = _submit(small, None, sh=bomb)
    wait_job(small, job)
    assert 5 < int(logs(small, job).strip()) <= 30


def test_a_host_job_gets_no_swap_past_its_memory_limit(open_server: Any) -> None:
    """Its memory limit without one on swap let a host job swap past it (docker jobs never
    could: memswap_limit = mem_limit). Where the kernel accounts swap."""
    v1 = Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
    v2 = Path("/sys/fs/cgroup/memory.swap.max")
    if not v1.exists() and not v2.exists():
        pytest.skip("this kernel does not account swap")
    server = open_server()
    where = (
        'p=$(awk -F: \'$2=="memory"{print "/sys/fs/cgroup/memory"$3}\' /proc/self/cgroup); '
        '[ -n "$p" ] && cat "$p/memory.memsw.limit_in_bytes" || '
        'cat "/sys/fs/cgroup$(awk -F: \'$1=="0"{print $3}\' /proc/self/cgroup)/memory.swap.max"'
    )
    job = _submit(server, None, sh=where, mem="64")
    assert wait_job(server, job)["state"] == "succeeded", logs(server, job)
    assert logs(server, job).strip() == (str(64 << 20) if v1.exists() else "0")


def test_tmp_and_shm_are_private_and_freed(open_server: Any) -> None:
    """Issue 17.8: 64 MiB stayed in the host's /dev/shm after the job; /tmp was shared."""
    server = open_server()
    server.add_user("alice")
    server.add_user("bob")
    tok = secrets.token_hex(6)
    write = (
        f"dd if=/dev/zero of=/dev/shm/kran-{tok} bs=1M count=20 2>/dev/null; echo private > /tmp/kran-{tok}; "
        f"echo started; sleep 4"
    )
    alice = _submit(server, "alice", sh=write, mem="256")
    wait_running(server, alice, "alice", marker="started")
    bob = _submit(server, "bob", sh=f"cat /tmp/kran-{tok} /dev/shm/kran-{tok} 2>/dev/null | wc -c")
    assert wait_job(server, bob, "bob")["state"] == "succeeded"
    assert logs(server, bob, "bob").strip() == "0", "bob's job read alice's /tmp or /dev/shm"
    assert not Path(f"/dev/shm/kran-{tok}").exists() and not Path(f"/tmp/kran-{tok}").exists()
    assert wait_job(server, alice, "alice")["state"] == "succeeded"
    assert not Path(f"/dev/shm/kran-{tok}").exists() and not Path(f"/tmp/kran-{tok}").exists()
    # the case: more than the memory limit into /dev/shm
    job = _submit(server, None, sh=f"dd if=/dev/zero of=/dev/shm/kran-{tok}-2 bs=1M count=200", mem="64")
    wait_job(server, job)
    assert not Path(f"/dev/shm/kran-{tok}-2").exists()


def test_out_of_memory_fails_whatever_the_script_exits_with(open_server: Any) -> None:
    """Issue 17.9: a host job killed for memory whose script exits 0 ended `succeeded`."""
    server = open_server()
    job = _submit(server, None, sh="head -c 400m /dev/zero | tail > /dev/null; exit 0", mem="64")
    done = wait_job(server, job)
    assert done["state"] == "failed" and "out of memory" in done["reason"], done
    # the script's own exit code, as its waiter wrote it: the kernel took `tail`, never the
    # root waiter beside the job (a forked Python: the biggest process in a memory cgroup)
    assert done["exit_code"] == 0, done
    ok = _submit(server, None, sh="head -c 10m /dev/zero | tail > /dev/null; exit 0", mem="64")
    assert wait_job(server, ok)["state"] == "succeeded"


def test_forged_wrapper_processes_are_not_trusted(open_server: Any) -> None:
    """The attack helper's first find: the server took any process with its instance id in
    the environment for one of its wrappers, and as root removed `tmp` and touched files in
    the dir that process named, or (given a job id that is not a number) failed to start."""
    server = open_server()
    server.add_user("mallory")
    victim = server.data_dir.parent / "victim"
    (victim / "tmp").mkdir(parents=True)
    (victim / "tmp" / "keep").write_text("root's")
    victim.chmod(0o700)
    forge = (
        "for j in x 9999; do setsid env -i KRAN_INSTANCE=$KRAN_INSTANCE KRAN_JOB_ID=$j KRAN_ATTEMPT=1 "
        f"KRAN_WORKDIR={victim}/work sleep 40 </dev/null >/dev/null 2>&1 & done; echo started; sleep 60"
    )
    job = _submit(server, "mallory", sh=forge)
    wait_running(server, job, "mallory", marker="started")
    server.stop()
    server.start()  # reconciles at start: strays are stopped
    assert (victim / "tmp" / "keep").exists() and not (victim / "stdout").exists()
    with server.api("mallory") as c:
        assert c.get(f"/api/v1/jobs/{job}").json()["state"] == "running"  # its own job is re-adopted
        c.post(f"/api/v1/jobs/{job}/kill").raise_for_status()
    assert wait_job(server, job, "mallory")["state"] == "killed"
    assert _gone("sleep 40")


def test_a_job_whose_cgroup_cannot_be_made_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cgroup the kernel refuses (a cgroup v1 machine whose memory cgroup ids ran out,
    ENOSPC) ran the job with no cgroup at all: no memory or pids limit, no kill of what it
    left, no accounting. The launch is held instead (EngineUnavailable: tried again later),
    and no part of the cgroup is left. Here the refusal is a real filesystem's, under a
    stand-in cgroup root: one hierarchy's `kran` is a file."""
    root = tmp_path / "cgroup"
    for h in ("memory", "cpuacct", "blkio", "pids", "freezer"):
        (root / h).mkdir(parents=True)
    (root / "pids" / "kran").write_text("")
    monkeypatch.setattr(cgroups, "ROOT", root)
    eng = ProcessEngine(uuid.uuid4().hex, kill_grace_s=1, cgroups=Cgroups(1))
    try:
        with pytest.raises(EngineUnavailable, match="could not make the job's cgroup"):
            eng.launch(shell_spec(tmp_path, 5, "touch ran", None))
        assert not (tmp_path / "j5" / "1" / "work" / "ran").exists()
        assert not list((root / "memory").rglob("5.1"))  # what was made of it went
    finally:
        eng.close()


def test_a_launch_that_fails_after_its_cgroup_was_made_leaves_none(tmp_path: Path) -> None:
    """Each left would keep one of the kernel's memory cgroup ids."""
    found = Cgroups.detect()
    if found.version is None:
        pytest.skip(f"no cgroups here: {found.unavailable}")
    instance = uuid.uuid4().hex
    eng = ProcessEngine(instance, kill_grace_s=1, cgroups=found, run_as=(65534, 65534))
    try:
        spec = shell_spec(tmp_path, 6, "true", None)
        for name in ("work", ""):  # its attempt dir gone: sealing it fails after the cgroup was made
            (spec.attempt_dir / name).rmdir()
        with pytest.raises(OSError):
            eng.launch(spec)
        assert not [d for d in found.all_dirs(found.relative(instance, 6, 1)) if d.exists()]
    finally:
        eng.close()
        found.remove_instance(instance)


def _mounted(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "kran-test", str(target)], check=True)


def test_where_no_cgroup_can_ever_be_made_the_server_says_so_at_start(tmp_path: Path) -> None:
    """A read-only cgroupfs (real EROFS, a `kran` dir already there or not), a cgroup v2
    tree without the memory and pids controllers: no cgroups, said at the start (host jobs
    then run without, as where there are none), rather than every job failing. A refusal
    of another kind (no memory cgroup ids left: a real ENOSPC, a tmpfs out of inodes) is
    not taken for that: the launches wait for it."""
    root = tmp_path / "cgroup"
    for h in ("cpuacct", "blkio"):
        (root / h).mkdir(parents=True)
    memory = root / "memory"
    _mounted(memory, "size=1m")
    try:
        (memory / "kran").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(memory)], check=True)
        found = Cgroups.detect(root)
        assert found.version is None and "Read-only" in str(found.unavailable)
        subprocess.run(["umount", str(memory)], check=True)
        _mounted(memory, "size=1m,nr_inodes=3")  # the root dir and two more
        (memory / "a").mkdir()
        (memory / "b").mkdir()
        assert Cgroups.detect(root).version == 1
        assert sorted(p.name for p in memory.iterdir()) == ["a", "b"]  # nothing left behind
    finally:
        subprocess.run(["umount", str(memory)], check=False)
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu io hugetlb\n")
    found = Cgroups.detect(v2)
    assert found.version is None and "memory and pids" in str(found.unavailable)


@pytest.fixture
def waited() -> Iterator[ProcessEngine]:
    """A process engine as the server makes it: cgroups, each attempt's root waiter."""
    cg = Cgroups.detect()
    engine = ProcessEngine(uuid.uuid4().hex, kill_grace_s=1, cgroups=cg)
    yield engine
    engine.close()
    cg.remove_instance(engine.instance, with_attempts=True)


def _start(engine: ProcessEngine, tmp_path: Path, job: int, script: str) -> AttemptRef:
    from tests.engines.test_contract import shell_spec

    spec = shell_spec(tmp_path, job, script, None)
    return AttemptRef(job, 1, engine.launch(spec), spec.attempt_dir)


def test_discover_takes_no_process_outside_the_attempts_cgroup(
    waited: ProcessEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart finds an attempt by the root process leading its group in the attempt's
    cgroup, from the cgroup's listing. A job holding thousands of processes there, cycling
    pids, could get a listed pid taken meanwhile by another attempt's waiter (a root group
    leader): the server would have signalled another user's job as this attempt's. The
    process chosen is now checked to be in the cgroup, after the listing."""
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)  # root, leads its group, in no kran cgroup
    monkeypatch.setattr(Cgroups, "attempts", lambda self, instance: [(7, 1, [stranger.pid])])
    try:
        assert waited.discover() == []
    finally:
        stranger.kill()
        stranger.wait()


def test_a_waiter_that_cannot_join_its_cgroup_stops_the_job(
    waited: ProcessEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root waiter of an attempt is found again after a restart in the attempt's cgroup:
    one that could not join would leave a job no restart finds (re-queued while it runs:
    twice). The attempt fails as a set-up failure instead, and the job is stopped."""
    from tests.engines.test_contract import wait_end

    monkeypatch.setattr(Cgroups, "for_waiter", lambda self, procs: [tmp_path / "no-cgroup" / "cgroup.procs"])
    ref = _start(waited, tmp_path, 3, "sleep 0.5; touch ran")
    end = wait_end(waited, ref)
    assert end.exit_code == 125 and "could not put the job into its cgroup" in str(end.error), end
    time.sleep(1)
    assert not (ref.attempt_dir / "work" / "ran").exists()
    waited.collect(ref)


def test_a_job_killed_while_it_starts_never_runs(waited: ProcessEngine, tmp_path: Path) -> None:
    """A kill signals the attempt's cgroup, which the job's process joins only at the end of
    its set-up: a kill in between (a short grace, a preemption at once) found no one, and
    the job then ran to its end, unkillable. The stop is marked in the attempt dir before
    the signals, and the job's process looks there once in its cgroups."""
    from kran.adapters.engines.spawner import STOP_SENT
    from tests.engines.test_contract import shell_spec, wait_end

    spec = shell_spec(tmp_path, 4, "touch ran", None)
    (spec.attempt_dir / STOP_SENT).write_text("0")  # the kill's mark, as if sent during the set-up
    ref = AttemptRef(4, 1, waited.launch(spec), spec.attempt_dir)
    end = wait_end(waited, ref)
    assert (end.exit_code, end.stopped) == (143, True), end
    assert not (spec.workdir / "ran").exists()
    waited.collect(ref)


def test_a_stray_attempt_leaves_no_cgroup(waited: ProcessEngine, tmp_path: Path) -> None:
    """A stray (work the store does not count as active, after a crash) is killed and
    collected at once. Its root waiter, in no cgroup a kill signals, ends a moment after its
    job: the collect removed the cgroups before, and the waiter's stayed."""
    _start(waited, tmp_path, 5, "sleep 30")
    time.sleep(0.5)
    [found] = waited.discover()
    waited.kill(found)
    waited.collect(found)
    left = waited.cgroups.all_dirs(waited.cgroups.relative(waited.instance, 5, 1))
    assert left == [], left
