"""Process engine: each attempt is a host process group in its own session, cgroup and
(as root) mount namespace, run as its owner's uid (host_launch.py says how it starts).

The server's fork server (spawner.py) starts each attempt: its child, the attempt's root
waiter, runs the job (in a session of its own) with stdout/stderr redirected into the
attempt dir, waits for it and writes its exit code to `exit_code` (without cgroups a small
/bin/sh wrapper does, the job in its process group). Every process of the job is in its
cgroups: a kill, and the attempt's end, reach them all, however they detached; the waiter
is not signalled (on v1 it is in the attempt's cpuacct cgroup only). The waiter keeps
running if the server (and its fork server) dies, so after a restart the attempt is found
again (the root process leading its group in the attempt's cgroup; without cgroups, the
wrapper by its environment, KRAN_INSTANCE/KRAN_JOB_ID/KRAN_ATTEMPT in /proc) and its exit
code read from the file. A process is identified by pid *and* start time, so a reused pid
is never mistaken for the job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from kran.adapters.engines.cgroups import Cgroups
from kran.adapters.engines.host_launch import (
    ENV_FILE,
    launch_request,
    private_mounts_unavailable,
    wrapper_env,
    write_env_file,
)
from kran.adapters.engines.later import Later
from kran.adapters.engines.ownership import effective_user, private_tmp_dir, seal_attempt
from kran.adapters.engines.spawner import BASE_PATH, SETUP_FAILED, STOP_SENT, mark_stop, proc_start
from kran.adapters.engines.spawner_client import Spawner
from kran.domain.accounting import Usage
from kran.domain.retry import AttemptEnd
from kran.errors import EngineError
from kran.jobfs_removal import remove_tree
from kran.ports import AttemptRef, EngineCapabilities, LaunchSpec

PREFIX = "proc:"
SHM_DEFAULT = 64 << 20  # a job without a memory limit: Docker's default /dev/shm
OOM = "out of memory (killed by the kernel)"
log = logging.getLogger("kran.engine")


def _start_time(pid: int) -> str | None:
    """Start time (clock ticks since boot) of a live, non-zombie process."""
    stat = proc_start(pid)
    return None if stat is None or stat[0] in ("Z", "X") else stat[1]


def _parse(handle: str) -> tuple[int, str]:
    pid, start = handle[len(PREFIX) :].split(":")
    return int(pid), start


def _stopped(attempt_dir: Path) -> bool:
    """Did the attempt end after kran sent its stop (by the files' times: the exit code
    written at or after the mark)?"""
    try:
        sent = (attempt_dir / STOP_SENT).stat().st_mtime
    except OSError:
        return False
    try:
        return (attempt_dir / "exit_code").stat().st_mtime >= sent
    except OSError:
        return True


def read_exit_code(attempt_dir: Path) -> int | None:
    try:
        return int((attempt_dir / "exit_code").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_exit_code(attempt_dir: Path, code: int) -> None:
    tmp = attempt_dir / "exit_code.tmp"
    tmp.write_text(f"{code}\n")
    tmp.replace(attempt_dir / "exit_code")


class ProcessEngine:
    capabilities = EngineCapabilities(host_processes=True, containers=False, volumes=True)

    def __init__(
        self,
        instance: str,
        kill_grace_s: float = 10.0,
        on_exit: Callable[[], None] | None = None,
        cgroups: Cgroups | None = None,
        run_as: tuple[int, int] | None = None,
        pids_limit: int | None = 4096,
    ) -> None:
        self.cgroups = cgroups or Cgroups(None, "not configured")
        self.run_as = run_as
        self.pids_limit = pids_limit
        self.instance = instance
        self.kill_grace_s = kill_grace_s
        self._spawner = Spawner(on_exit, {"PATH": BASE_PATH, "LANG": "C.UTF-8"})
        self.later = Later("kran-process-kills")  # their SIGKILLs after the grace
        self._spawner.start()
        # a mount namespace per job (private /tmp, /dev/shm, /proc) needs root
        self.no_private_mounts = "not running as root" if os.geteuid() != 0 else private_mounts_unavailable()
        if self.no_private_mounts and os.geteuid() == 0:
            log.error("host jobs get no private /tmp, /dev/shm and /proc: %s", self.no_private_mounts)

    def close(self) -> None:
        """End the fork server (running attempts run on, as after a restart)."""
        self._spawner.close()

    def _rel(self, job_id: int, attempt: int) -> str:
        return self.cgroups.relative(self.instance, job_id, attempt)

    def launch(self, spec: LaunchSpec) -> str:
        mem = spec.allocation.mem_mb * 1024 * 1024 if spec.allocation.mem_mb else None
        rel = self._rel(spec.job_id, spec.attempt)
        procs = self.cgroups.create(rel, mem, self.pids_limit)
        try:
            return self._start(spec, procs, mem)
        except BaseException:
            self.cgroups.remove(rel)  # (one a process joined stays: a cgroup in use is not removed)
            raise

    def _start(self, spec: LaunchSpec, procs: list[Path], mem: int | None) -> str:
        run_as = effective_user(spec, self.run_as)
        private = run_as is not None and self.no_private_mounts is None
        if run_as:  # the wrapper stays root (cgroup, mounts, exit code); the job does not
            seal_attempt(spec, run_as, private_tmp=private)
        env = {"PATH": BASE_PATH, "HOME": str(spec.workdir), "LANG": "C.UTF-8", **spec.env}
        env["KRAN_INSTANCE"] = self.instance
        dropped = self.cgroups.version is not None  # (else the root wrapper, setpriv and job.env)
        if not dropped:
            write_env_file(spec.attempt_dir, env, run_as[1] if run_as else None)
        request = launch_request(
            spec.attempt_dir,
            procs,
            (mem or SHM_DEFAULT) if private else None,
            spec.argv,
            run_as,
            wrapper_env(self.instance, spec.job_id, spec.attempt, spec.workdir),
            network=spec.network,
            job_env=env if dropped else None,
            waiter_procs=self.cgroups.for_waiter(procs),
        )
        try:
            pid, start = self._spawner.spawn(request)
        except OSError as e:
            raise EngineError(f"could not start process: {e}") from e
        return f"{PREFIX}{pid}:{start}"

    def _ended(self, ref: AttemptRef) -> AttemptEnd | None:
        end = self._exit_of(ref)
        if end is not None and _stopped(ref.attempt_dir):  # (a preempted job that exits 0 on SIGTERM is not done)
            end = replace(end, stopped=True)
        if end is not None and not end.vanished and self.cgroups.oom_kills(self._rel(ref.job_id, ref.attempt)):
            # the kernel killed one of its processes: whatever the script made of that
            return replace(end, error=OOM)
        return end

    def _exit_of(self, ref: AttemptRef) -> AttemptEnd | None:
        assert ref.handle is not None
        pid, start = _parse(ref.handle)
        state, status, why = self._spawner.outcome(pid, start)
        if state == "running":
            return None
        if state == "ended" and status is not None:
            self._spawner.forget(pid, start)
            code = read_exit_code(ref.attempt_dir)
            if why is not None:  # the job never started (the files may not say: a full disk)
                return AttemptEnd(SETUP_FAILED, error=why)
            if code is not None:
                return AttemptEnd(code)
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                return AttemptEnd(128 + sig, error=f"killed by signal {signal.Signals(sig).name}")
            return AttemptEnd(os.waitstatus_to_exitcode(status))
        # found after a restart, or its spawner went away: the wrapper's own file tells
        if start != "0" and _start_time(pid) == start:
            return None
        code = read_exit_code(ref.attempt_dir)
        if code is not None:
            return AttemptEnd(code)
        return AttemptEnd(None, error="the job's process vanished without an exit code", vanished=True)

    def check(self, refs: Sequence[AttemptRef]) -> dict[tuple[int, int], AttemptEnd]:
        out = {}
        for ref in refs:
            if ref.handle and ref.handle.startswith(PREFIX):
                end = self._ended(ref)
                if end is not None:
                    out[(ref.job_id, ref.attempt)] = end
        return out

    def _signal(self, ref: AttemptRef, sig: signal.Signals) -> None:
        """Everything in the attempt's cgroup (setsid, double forks: a job's processes
        cannot leave it) but its root waiter, which records how the job ended; without
        cgroups, the wrapper's process group."""
        assert ref.handle is not None
        pid, start = _parse(ref.handle)
        if self.cgroups.version is not None:
            self.cgroups.signal_all(self._rel(ref.job_id, ref.attempt), sig, spare=pid or None)
            return
        alive = _start_time(pid) if pid > 1 and start != "0" else ""  # proc:0:0 is no process: never our own group
        if alive == start:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:  # started a moment ago: not yet the leader of its group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            except PermissionError:
                pass
        elif alive is None and self._group_left(pid, ref.job_id, ref.attempt):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)  # the SIGKILL after the grace, for a job that outlived its wrapper
        self.cgroups.signal_all(self._rel(ref.job_id, ref.attempt), sig)

    def _group_left(self, pgid: int, job_id: int, attempt: int) -> bool:
        """The wrapper `pgid` has ended (a SIGTERM ends it): do processes of its attempt
        remain in its group, a job that ignored the signal? Without cgroups (a server not
        run as root) nothing else finds them. No other group can take the id while they
        are in it; the attempt's ids in their environment tell them from a group that took
        it after they had all gone."""
        wanted = {
            f"KRAN_INSTANCE={self.instance}".encode(),
            f"KRAN_JOB_ID={job_id}".encode(),
            f"KRAN_ATTEMPT={attempt}".encode(),
        }
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if os.getpgid(int(name)) != pgid:
                    continue
                with open(f"/proc/{name}/environ", "rb") as f:
                    if wanted <= set(f.read().split(b"\0")):
                        return True
            except OSError:
                continue
        return False

    def kill(self, ref: AttemptRef) -> None:
        """SIGTERM now, SIGKILL after the grace. The stop is marked in the attempt dir first:
        a job still starting (not in its cgroup yet) sees it there and never runs, and an
        end after it was a stop, whatever the job exits with."""
        if not ref.handle:
            return
        mark_stop(ref.attempt_dir, time.time())
        self._signal(ref, signal.SIGTERM)
        grace = self.kill_grace_s if ref.grace_s is None else ref.grace_s
        self.later.call(grace, self._signal, ref, signal.SIGKILL)

    def cheap_launch(self, image: bool) -> bool:
        """A few cgroup dirs, the attempt's files and one request to the fork server, while
        it is up and idle (one that went away is started again, one that hangs is waited
        for up to 30 s: not in the scheduler's pass)."""
        return self._spawner.ready()

    def cheap_collect(self, ref: AttemptRef) -> bool:
        """Local files and cgroup reads: quicker in the loop than a hand-off to the pool,
        unless the job had private mounts: removing its /tmp waits for the kernel to let go
        of the mounts of its namespace (milliseconds each, for a work dir under /tmp)."""
        return self.no_private_mounts is not None

    def collect(self, ref: AttemptRef) -> Usage:
        """After the end: what the job left running is killed, its /tmp removed (its
        /dev/shm went with its mount namespace), its usage read, its cgroup removed."""
        for name in ("stdout", "stderr"):
            (ref.attempt_dir / name).touch(exist_ok=True)
        rel = self._rel(ref.job_id, ref.attempt)
        self.cgroups.signal_all(rel, signal.SIGKILL, wait_s=5.0)
        self.cgroups.wait_empty(rel, 2.0)  # (a stray's waiter ends as its job does, a moment later)
        remove_tree(private_tmp_dir(ref.attempt_dir))  # never follows links, to any depth
        (ref.attempt_dir / ENV_FILE).unlink(missing_ok=True)  # the job's variables: in the store already
        usage = self.cgroups.usage(rel)
        self.cgroups.remove(rel)
        return usage

    def stream_logs(self, ref: AttemptRef, stream: str, follow: bool) -> Iterator[bytes]:
        path = ref.attempt_dir / stream
        while not path.exists():
            if not follow or self._ended_quietly(ref):
                return
            time.sleep(0.05)
        with open(path, "rb") as f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    yield chunk
                    continue
                if not follow or self._ended_quietly(ref):
                    rest = f.read()
                    if rest:
                        yield rest
                    return
                time.sleep(0.1)

    def _ended_quietly(self, ref: AttemptRef) -> bool:
        if not ref.handle:
            return False
        pid, start = _parse(ref.handle)
        return _start_time(pid) != start

    def discover(self) -> list[AttemptRef]:
        """The attempts of this instance still running. Where attempts have cgroups, by those:
        in each, the process of the server's own uid that leads its group and started first
        (the root waiter: only root puts processes there, and a job runs as root only for an
        admin's app with such a user, its process forked after the waiter), checked to be
        in that cgroup after the listing. Without cgroups, the wrapper processes
        through /proc: a job's own processes carry KRAN_INSTANCE too, and could forge the
        rest, so only one of the server's own uid counts (root: jobs never are). Callers take
        the attempt dir from the store's layout, not from here."""
        if self.cgroups.version is not None:
            return self._discover_cgroups()
        found = []
        needle = f"KRAN_INSTANCE={self.instance}".encode()
        me = os.geteuid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if os.getpgid(pid) != pid or (me == 0 and entry.stat().st_uid != 0):
                    continue
                environ = (entry / "environ").read_bytes().split(b"\0")
                if needle not in environ:
                    continue
                env = dict(v.decode(errors="replace").split("=", 1) for v in environ if b"=" in v)
                job_id, attempt = int(env["KRAN_JOB_ID"]), int(env["KRAN_ATTEMPT"])
            except (OSError, ProcessLookupError, KeyError, ValueError):
                continue
            start = _start_time(pid)
            if start is not None:
                cwd = Path(env.get("KRAN_WORKDIR", "/nonexistent")).parent
                found.append(AttemptRef(job_id, attempt, f"{PREFIX}{pid}:{start}", cwd))
        return found

    def _discover_cgroups(self) -> list[AttemptRef]:
        me = os.geteuid()
        found = []
        for job_id, attempt, pids in self.cgroups.attempts(self.instance):
            leaders = []
            for pid in pids:
                try:
                    if os.getpgid(pid) != pid or os.stat(f"/proc/{pid}").st_uid != me:
                        continue
                except OSError:
                    continue
                start = _start_time(pid)
                if start is not None:
                    leaders.append((int(start), pid, start))
            if leaders:
                _, pid, start = min(leaders)
                try:
                    cwd = Path(os.readlink(f"/proc/{pid}/cwd"))  # the waiter's: the attempt dir
                    if not self.cgroups.holds(pid, self._rel(job_id, attempt)) or _start_time(pid) != start:
                        continue  # the pid was taken by another process after the listing
                except OSError:
                    continue
                found.append(AttemptRef(job_id, attempt, f"{PREFIX}{pid}:{start}", cwd))
        return found

    def health(self) -> dict[str, str | None]:
        return {"process": None}

    def probe(self) -> bool:
        return False  # this process is the engine

    def warnings(self) -> list[str]:
        return []

    def unavailable(self, image: bool) -> str | None:
        return "host processes only" if image else None

    def handle_of_ended(self, attempt_dir: Path) -> str | None:
        """The wrapper wrote the exit code: the process ended (pid 0: nothing left to watch)."""
        return f"{PREFIX}0:0" if (attempt_dir / "exit_code").exists() else None
