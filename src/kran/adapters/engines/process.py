"""Process engine: each attempt is a host process group in its own session.

A small /bin/sh wrapper runs the job with stdout/stderr redirected into the attempt
dir and writes the exit code to `exit_code` atomically. The wrapper keeps running if
the server dies, so after a restart the attempt is found again (by its environment,
KRAN_INSTANCE/KRAN_JOB_ID/KRAN_ATTEMPT in /proc) and its exit code read from the file.
A process is identified by pid *and* start time, so a reused pid is never mistaken
for the job.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from kran.adapters.engines.cgroups import Cgroups
from kran.domain.accounting import Usage
from kran.domain.retry import AttemptEnd
from kran.errors import EngineError
from kran.ports import AttemptRef, LaunchSpec

# Only shell builtins after the job (no extra fork). exit_code needs no atomic rename: it
# is read only once the wrapper is gone, and the wrapper writes it before it exits.
WRAPPER = (
    'for f in $KRAN_CGROUP_PROCS; do echo $$ >"$f"; done 2>/dev/null; unset KRAN_CGROUP_PROCS; '
    'd="$1"; shift; cd "$d/work" || exit 127; '
    'if [ -n "$KRAN_RUN_AS" ]; then '
    'set -- setpriv --reuid="${KRAN_RUN_AS%:*}" --regid="${KRAN_RUN_AS#*:}" --clear-groups -- "$@"; fi; '
    "unset KRAN_RUN_AS; "
    '"$@" >"$d/stdout" 2>"$d/stderr" </dev/null; rc=$?; '
    'echo $rc >"$d/exit_code"; exit $rc'
)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PREFIX = "proc:"


def _start_time(pid: int) -> str | None:
    """Start time (clock ticks since boot) of a live, non-zombie process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = stat.rsplit(")", 1)[1].split()
    if rest[0] in ("Z", "X"):
        return None
    return rest[19]


def _parse(handle: str) -> tuple[int, str]:
    pid, start = handle[len(PREFIX) :].split(":")
    return int(pid), start


def effective_user(spec: LaunchSpec, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """The app's user when it names one (and kran can switch users), else the default."""
    if spec.run_as and os.geteuid() == 0:
        return spec.run_as
    return default


def give_to(spec: LaunchSpec, run_as: tuple[int, int]) -> None:
    """The job's user owns its working dir, what was staged in it, its volume's root and
    the writable dirs bound into its container."""
    _chown_tree(spec.workdir, run_as)
    for m in spec.mounts:
        os.chown(m, *run_as)
    for host, _, writable in spec.binds:
        if writable:
            _chown_tree(Path(host), run_as)


def _chown_tree(top: Path, run_as: tuple[int, int]) -> None:
    """The tree becomes the user's, and its dirs writable by their owner: staged copies of
    read-only inputs keep their modes, which root ignores and the job user would not."""
    os.lchown(top, *run_as)
    if top.is_dir() and not top.is_symlink():
        _owner_rwx(top)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(root, name)
                os.lchown(path, *run_as)
                if name in dirs and not os.path.islink(path):
                    _owner_rwx(Path(path))


def _owner_rwx(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & stat.S_IRWXU != stat.S_IRWXU:
        path.chmod(mode | stat.S_IRWXU)


def read_exit_code(attempt_dir: Path) -> int | None:
    try:
        return int((attempt_dir / "exit_code").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_exit_code(attempt_dir: Path, code: int) -> None:
    tmp = attempt_dir / "exit_code.tmp"
    tmp.write_text(f"{code}\n")
    tmp.replace(attempt_dir / "exit_code")


class ExitWatcher:
    """Calls `notify` as soon as a watched child exits (pidfd + epoll, Linux >= 5.3), so
    the monitor reacts to exits instead of finding them at its next poll."""

    def __init__(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        self._epoll = select.epoll()
        self._thread = threading.Thread(target=self._run, name="kran-exits", daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone already, or no pidfd here: the monitor's poll finds it
            self._notify()
            return
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLONESHOT)

    def _run(self) -> None:
        while True:
            try:
                events = self._epoll.poll()
            except OSError:
                return
            for fd, _ in events:
                self._epoll.unregister(fd)
                os.close(fd)
            if events:
                self._notify()


class ProcessEngine:
    def __init__(
        self,
        instance: str,
        kill_grace_s: float = 10.0,
        on_exit: Callable[[], None] | None = None,
        cgroups: Cgroups | None = None,
        run_as: tuple[int, int] | None = None,
    ) -> None:
        self.cgroups = cgroups or Cgroups(None, "not configured")
        self.run_as = run_as
        self.instance = instance
        self.kill_grace_s = kill_grace_s
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._watcher = ExitWatcher(on_exit) if on_exit else None

    def launch(self, spec: LaunchSpec) -> str:
        env = {"PATH": BASE_PATH, "HOME": str(spec.workdir), "LANG": "C.UTF-8"}
        env.update(spec.env)
        env["KRAN_INSTANCE"] = self.instance
        limit = spec.allocation.mem_mb * 1024 * 1024 if spec.allocation.mem_mb else None
        procs = self.cgroups.create(self.cgroups.relative(self.instance, spec.job_id, spec.attempt), limit)
        if procs:
            env["KRAN_CGROUP_PROCS"] = " ".join(str(p) for p in procs)
        run_as = effective_user(spec, self.run_as)
        if run_as:  # the wrapper stays root (cgroup, exit code); the job does not
            give_to(spec, run_as)
            env["KRAN_RUN_AS"] = f"{run_as[0]}:{run_as[1]}"
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, "kran-job", str(spec.attempt_dir), *spec.argv],
                env=env,
                cwd=spec.attempt_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            raise EngineError(f"could not start process: {e}") from e
        if self._watcher:
            self._watcher.watch(proc.pid)
        start = _start_time(proc.pid)
        with self._lock:
            self._children[proc.pid] = proc
        if start is None:  # already ended; identify it by the exit file
            proc.wait()
            start = "0"
        return f"{PREFIX}{proc.pid}:{start}"

    def _ended(self, ref: AttemptRef) -> AttemptEnd | None:
        assert ref.handle is not None
        pid, start = _parse(ref.handle)
        with self._lock:
            child = self._children.get(pid)
        if child is not None:
            rc = child.poll()
            if rc is None:
                return None
            with self._lock:
                self._children.pop(pid, None)
            code = read_exit_code(ref.attempt_dir)
            if code is not None:
                return AttemptEnd(code)
            if rc < 0:
                return AttemptEnd(128 - rc, error=f"killed by signal {signal.Signals(-rc).name}")
            return AttemptEnd(rc)
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
        assert ref.handle is not None
        pid, start = _parse(ref.handle)
        if start != "0" and _start_time(pid) != start:
            return
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self, ref: AttemptRef) -> None:
        if not ref.handle:
            return
        self._signal(ref, signal.SIGTERM)
        grace = self.kill_grace_s if ref.grace_s is None else ref.grace_s
        timer = threading.Timer(grace, self._signal, (ref, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def cheap_collect(self, ref: AttemptRef) -> bool:
        return True  # local files and cgroup reads: quicker here than a hand-off to the pool

    def collect(self, ref: AttemptRef) -> Usage:
        for name in ("stdout", "stderr"):
            (ref.attempt_dir / name).touch(exist_ok=True)
        rel = self.cgroups.relative(self.instance, ref.job_id, ref.attempt)
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
        """Wrapper processes of this instance still alive, found through /proc."""
        found = []
        needle = f"KRAN_INSTANCE={self.instance}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if os.getpgid(pid) != pid:
                    continue
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, ProcessLookupError):
                continue
            if needle not in environ:
                continue
            env = dict(v.decode(errors="replace").split("=", 1) for v in environ if b"=" in v)
            start = _start_time(pid)
            if start is None or "KRAN_JOB_ID" not in env:
                continue
            cwd = Path(env.get("KRAN_WORKDIR", "/nonexistent")).parent
            found.append(AttemptRef(int(env["KRAN_JOB_ID"]), int(env["KRAN_ATTEMPT"]), f"{PREFIX}{pid}:{start}", cwd))
        return found

    def health(self) -> dict[str, str | None]:
        return {"process": None}

    def image_disk_bytes(self) -> int | None:
        return None
