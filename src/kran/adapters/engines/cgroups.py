"""Per-attempt cgroups (v1 here, v2 where mounted), for accounting and process limits.

Each attempt gets a cgroup `kran/<instance>/<job>.<attempt>` in the memory, cpuacct,
blkio, pids and freezer hierarchies (v2: one cgroup). A host process joins it before the
job starts; a container gets it as its cgroup parent. Counters in a parent are
hierarchical and outlive the child, so after the attempt ended (and its container was
removed) the attempt's CPU time, peak memory and block I/O are read exactly, then the
cgroup is removed. A host job's processes cannot leave it (the files are root's), so
signalling the cgroup reaches all of them.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from kran.domain.accounting import Usage
from kran.errors import EngineUnavailable

ROOT = Path("/sys/fs/cgroup")
V1 = ("memory", "cpuacct", "blkio", "pids", "freezer")
V2_NEEDED = ("memory", "pids")  # the limits; cpu and io only count


@dataclass(frozen=True)
class Cgroups:
    """Where cgroups live on this machine; `unavailable` says why when they cannot be used."""

    version: int | None
    unavailable: str | None = None

    @staticmethod
    def detect(root: Path = ROOT) -> Cgroups:
        if os.geteuid() != 0:
            return Cgroups(None, "not running as root")
        if (root / "cgroup.controllers").exists():
            missing = set(V2_NEEDED) - set((root / "cgroup.controllers").read_text().split())
            if missing:  # (a v1 machine's `unified` mount, a container's delegated tree)
                return Cgroups(None, f"cgroup v2 without the {' and '.join(sorted(missing))} controller")
            found, where = Cgroups(2), root
        elif all((root / c).is_dir() for c in V1[:3]):
            found, where = Cgroups(1), root / "memory"
        else:
            return Cgroups(None, "no cgroup hierarchy found")
        probe = where / f"kran-probe-{os.getpid()}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):  # never: said at start, jobs run without
                return Cgroups(None, f"cannot make cgroups ({e.strerror})")
            # not now (no memory cgroup ids left, say): each launch waits for it (create)
        return found

    def relative(self, instance: str, job_id: int, attempt: int) -> str:
        return f"kran/{instance[:12]}/{job_id}.{attempt}"

    @cached_property
    def _roots(self) -> list[Path]:
        """The hierarchies an attempt's cgroup is made in (looked up once, not per launch)."""
        if self.version == 1:
            return [ROOT / c for c in V1 if (ROOT / c).is_dir()]
        return [ROOT] if self.version == 2 else []

    @cached_property
    def _all_roots(self) -> list[Path]:
        if self.version == 1:
            return sorted(h for h in ROOT.iterdir() if h.is_dir())
        return self._roots

    def dirs(self, rel: str) -> list[Path]:
        return [r / rel for r in self._roots]

    def all_dirs(self, rel: str) -> list[Path]:
        """Every hierarchy's dir for `rel`: Docker creates a container's cgroup parent in all
        of them (cpu, pids, devices, ...), and leaves it behind when the container goes."""
        return [d for d in (r / rel for r in self._all_roots) if d.is_dir()]

    def create(self, rel: str, mem_limit_bytes: int | None = None, pids_limit: int | None = None) -> list[Path]:
        """Make the attempt's cgroup; returns the cgroup.procs files a process joins by.
        EngineUnavailable when it cannot be made now (the job is held and launched again)."""
        if self.version is None:
            return []
        try:
            if self.version == 2:
                self._enable_v2_controllers(rel)
            made = self.dirs(rel)
            for d in made:
                try:
                    os.mkdir(d)
                except FileExistsError:
                    pass
                except FileNotFoundError:  # the first of this instance
                    d.mkdir(parents=True, exist_ok=True)
            if mem_limit_bytes:  # and no swap past it (as kran's docker jobs: memswap_limit = mem_limit)
                limit = ROOT / ("memory" if self.version == 1 else "") / rel
                if self.version == 1:
                    _put(limit / "memory.limit_in_bytes", str(mem_limit_bytes))
                    swap, value = limit / "memory.memsw.limit_in_bytes", str(mem_limit_bytes)
                else:
                    _put(limit / "memory.max", str(mem_limit_bytes))
                    swap, value = limit / "memory.swap.max", "0"
                if swap.exists():  # (only where the kernel accounts swap)
                    _put(swap, value)
            pids = ROOT / "pids" if self.version == 1 else ROOT
            if pids_limit and pids in self._roots:
                _put(pids / rel / "pids.max", str(pids_limit))
        except OSError as e:  # (memory cgroups the kernel still keeps can use up its 65,535 ids)
            self.remove(rel)  # never a job outside its limits, its kill, its accounting
            raise EngineUnavailable(f"could not make the job's cgroup ({e.strerror or e})") from None
        return [d / "cgroup.procs" for d in made]

    def _enable_v2_controllers(self, rel: str) -> None:
        """Each controller by a write of its own: one the kernel refuses (cpu, with
        real-time threads about) must not cost the others (memory and pids: the limits).
        Once per instance: its parent passing the limits on says the ones above do too."""
        try:
            if set(V2_NEEDED) <= set((ROOT / rel).parent.joinpath("cgroup.subtree_control").read_text().split()):
                return
        except OSError:
            pass  # not made yet
        path = ROOT
        for part in ("", *Path(rel).parts[:-1]):
            path = path / part
            path.mkdir(exist_ok=True)
            for controller in (*V2_NEEDED, "cpu", "io"):
                try:
                    (path / "cgroup.subtree_control").write_text(f"+{controller}")
                except OSError:
                    pass  # a missing limit file fails the create below

    def usage(self, rel: str) -> Usage:
        """CPU seconds, peak memory and I/O bytes of the attempt's cgroup (None if unknown)."""
        try:
            if self.version == 1:
                return Usage(
                    cpu_seconds=int(_read(ROOT / "cpuacct" / rel / "cpuacct.usage")) / 1e9,
                    peak_memory_bytes=int(_read(ROOT / "memory" / rel / "memory.max_usage_in_bytes")),
                    io_bytes=_blkio_bytes(ROOT / "blkio" / rel),
                )
            if self.version == 2:
                d = ROOT / rel
                stat = dict(line.split() for line in _read(d / "cpu.stat").splitlines())
                peak = d / "memory.peak"
                return Usage(
                    cpu_seconds=int(stat["usage_usec"]) / 1e6,
                    peak_memory_bytes=int(_read(peak)) if peak.exists() else None,
                    io_bytes=_io_stat_bytes(d / "io.stat"),
                )
        except (OSError, ValueError, KeyError):
            pass
        return Usage()

    def sample(self, rel: str) -> tuple[float, int] | None:
        """CPU seconds so far and memory in use now, of a running attempt's cgroup."""
        try:
            if self.version == 1:
                cpu = int(_read(ROOT / "cpuacct" / rel / "cpuacct.usage")) / 1e9
                return cpu, int(_read(ROOT / "memory" / rel / "memory.usage_in_bytes"))
            if self.version == 2:
                stat = dict(line.split() for line in _read(ROOT / rel / "cpu.stat").splitlines())
                return int(stat["usage_usec"]) / 1e6, int(_read(ROOT / rel / "memory.current"))
        except (OSError, ValueError, KeyError):
            pass
        return None

    def for_waiter(self, procs: list[Path]) -> list[Path]:
        """Of an attempt's cgroup.procs files, those its root waiter (spawner.py) joins: in v1
        only cpuacct's (where `attempts` finds it), none a kill signals or that limits the
        job (its memory is not the job's, nor its process); in v2 the one (a kill spares it)."""
        return [p for p in procs if self.version != 1 or p.is_relative_to(ROOT / "cpuacct")]

    def holds(self, pid: int, rel: str) -> bool:
        """Whether process `pid` is in the attempt's cgroup `rel` now (v1: its cpuacct one,
        where every process of the attempt is). OSError when there is no such process."""
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if (self.version == 1 and "cpuacct" in controllers.split(",")) or (self.version == 2 and not controllers):
                return path == "/" + rel
        return False

    @property
    def _everyone(self) -> Path | None:
        """The hierarchy where every process of an attempt is, its root waiter too: v1's
        cpuacct, v2's one."""
        return ROOT / "cpuacct" if self.version == 1 else ROOT if self.version == 2 else None

    def attempts(self, instance: str) -> list[tuple[int, int, list[int]]]:
        """The instance's attempt cgroups that hold processes: (job id, attempt, their pids),
        in v1 from the cpuacct hierarchy (every process of the attempt is in it). Only root
        makes these and puts processes in them: no job can claim another's."""
        parent = Path(self.relative(instance, 0, 0)).parent
        base = self._everyone
        if base is None:
            return []
        try:
            names = [e.name for e in os.scandir(base / parent) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return []
        found = []
        for name in names:
            job, dot, attempt = name.partition(".")
            if dot and job.isdecimal() and attempt.isdecimal() and job.isascii() and attempt.isascii():
                pids = _pids(base / parent / name / "cgroup.procs")
                if pids:
                    found.append((int(job), int(attempt), pids))
        return found

    def signal_all(self, rel: str, sig: int, wait_s: float = 0.0, spare: int | None = None) -> None:
        """Signal every process in the attempt's cgroup but `spare` (its waiter, on v2),
        frozen meanwhile so none forks past the signal; with `wait_s`, wait (that long at
        most) until they are gone."""
        procs = self._procs_file(rel)
        pids = set(_pids(procs)) if procs is not None else set()
        if procs is None or not pids - {spare}:  # nothing in it can fork
            return
        kill_file = procs.parent / "cgroup.kill"
        if sig == signal.SIGKILL and kill_file.exists() and spare not in pids:  # v2, Linux >= 5.14
            _write(kill_file, "1")
        else:
            self._frozen(rel, True)
            try:
                for pid in _pids(procs):
                    try:
                        if pid != spare:
                            os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            finally:
                self._frozen(rel, False)
        deadline = time.monotonic() + wait_s
        while set(_pids(procs)) - {spare} and time.monotonic() < deadline:
            time.sleep(0.01)

    def wait_empty(self, rel: str, wait_s: float) -> None:
        """Wait (that long at most) until no process is in any of the attempt's cgroups (in
        the one where every process of it is)."""
        if self._everyone is None:
            return
        procs = self._everyone / rel / "cgroup.procs"
        deadline = time.monotonic() + wait_s
        while _pids(procs) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _procs_file(self, rel: str) -> Path | None:
        if self.version == 1:
            frozen = ROOT / "freezer" / rel / "cgroup.procs"
            return frozen if frozen.exists() else ROOT / "memory" / rel / "cgroup.procs"
        if self.version == 2:
            return ROOT / rel / "cgroup.procs"
        return None

    def _frozen(self, rel: str, frozen: bool) -> None:
        if self.version == 1:
            state = ROOT / "freezer" / rel / "freezer.state"
            _write(state, "FROZEN" if frozen else "THAWED")
            deadline = time.monotonic() + 1.0
            while frozen and time.monotonic() < deadline:
                try:
                    if _read(state) == "FROZEN":
                        return
                except OSError:
                    return
                time.sleep(0.002)
        elif self.version == 2:
            _write(ROOT / rel / "cgroup.freeze", "1" if frozen else "0")

    def oom_kills(self, rel: str) -> int:
        """How many of the attempt's processes the kernel killed for lack of memory."""
        name = ROOT / "memory" / rel / "memory.oom_control" if self.version == 1 else ROOT / rel / "memory.events"
        if self.version is None:
            return 0
        try:
            lines = _read(name).splitlines()
        except OSError:
            return 0
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self, rel: str) -> None:
        """Remove the attempt's cgroup (the instance's parent stays for the next attempts)."""
        for r in self._all_roots:
            try:
                os.rmdir(r / rel)
            except OSError:  # not in this hierarchy, or still in use
                pass

    def remove_instance(self, instance: str, with_attempts: bool = False) -> None:
        """At shutdown: remove this instance's parent cgroup if empty, and `kran` if empty.
        `with_attempts` also removes leftover empty attempt cgroups (their counters are lost:
        only for cleaning up after tests)."""
        parent = Path(self.relative(instance, 0, 0)).parent
        for d in self.all_dirs(str(parent)):
            if with_attempts and d.is_dir():
                for child in d.iterdir():
                    if child.is_dir():
                        try:
                            child.rmdir()
                        except OSError:
                            pass
            for path in (d, d.parent):
                try:
                    path.rmdir()
                except OSError:
                    break


def _read(path: Path) -> str:
    return path.read_text().strip()


def _put(path: Path, text: str) -> None:
    """One write, OSError as it comes (a limit the kernel refuses fails the create)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError:
        pass


def _pids(procs: Path) -> list[int]:
    try:
        return [int(p) for p in _read(procs).split()]
    except (OSError, ValueError):
        return []


def _blkio_bytes(d: Path) -> int | None:
    for name in ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes"):
        try:
            lines = _read(d / name).splitlines()
        except OSError:
            continue
        return sum(int(p[2]) for p in (line.split() for line in lines) if len(p) == 3 and p[1] in ("Read", "Write"))
    return None


def _io_stat_bytes(path: Path) -> int | None:
    try:
        text = _read(path)
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key in ("rbytes", "wbytes"):
                total += int(value)
    return total
