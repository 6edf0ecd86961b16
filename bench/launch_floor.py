"""What a host job's isolation costs the kernel, without kran (issue 23.1): the floor under
any launcher that keeps it.

    .venv/bin/python bench/launch_floor.py [--n 300] [--concurrency 8]    # root, cgroup v1 or v2

A small Python process forks N children, C at a time, each running `true` through a chain
of programs, with and without the namespaces a host job gets (mount and IPC, and network
for a job without --network) and a cgroup of its own (made, joined, removed: in each v1
hierarchy kran uses, or one v2 cgroup). The chains:
- `true`: exec'd directly;
- `sh true`: through a shell (kran's loader, which reads the job's variables);
- `wrapper, setpriv, sh true`: kran's chain today (the root wrapper that writes the exit
  code, the privilege drop, the loader);
- `drop in child, sh true`: the child drops to the job's uid itself (no root wrapper, no
  setpriv), then a loader shell (kran's chain in session 24);
- `drop in child, true`: the same, the command exec'd directly (kran's chain since session
  25: the job's process changes dir and looks the command up itself).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from kran.adapters.engines.cgroups import ROOT, V1, Cgroups  # noqa: E402

NEWNS, NEWIPC, NEWNET = 0x00020000, 0x08000000, 0x40000000
UID = 61000
WRAPPER = '"$@" >/dev/null 2>/dev/null </dev/null; rc=$?; exit $rc'
LOADER = 'cd / && exec "$@"'
SETPRIV = ["/usr/bin/setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--no-new-privs", "--"]
CHAINS: dict[str, tuple[list[str], bool]] = {
    "true": (["/bin/true"], False),
    "sh true": (["/bin/sh", "-c", LOADER, "x", "/bin/true"], False),
    "wrapper, setpriv, sh true": (
        ["/bin/sh", "-c", WRAPPER, "x", *SETPRIV, "/bin/sh", "-c", LOADER, "x", "true"],
        False,
    ),
    "drop in child, sh true": (["/bin/sh", "-c", LOADER, "x", "/bin/true"], True),
    "drop in child, true": (["/bin/true"], True),
}
libc = ctypes.CDLL(None, use_errno=True)


def cgroup_dirs(version: int | None, name: str) -> list[Path]:
    if version == 1:
        return [ROOT / c / "kran-floor" / name for c in V1 if (ROOT / c).is_dir()]
    if version == 2:
        return [ROOT / "kran-floor" / name]
    return []


def run(n: int, concurrency: int, argv: list[str], drop: bool, flags: int, cgroups: int | None) -> float:
    """Launches per second."""
    live: dict[int, list[Path]] = {}
    started = done = 0
    t0 = time.perf_counter()
    while done < n:
        while len(live) < concurrency and started < n:
            dirs = cgroup_dirs(cgroups, str(started))
            for d in dirs:
                d.mkdir()
            pid = os.fork()
            if pid == 0:
                try:
                    for d in dirs:
                        (d / "cgroup.procs").write_text(str(os.getpid()))
                    if flags and libc.unshare(flags) != 0:
                        os._exit(99)
                    if drop:
                        os.setgroups([])
                        os.setresgid(UID, UID, UID)
                        os.setresuid(UID, UID, UID)
                    os.execv(argv[0], argv)
                finally:
                    os._exit(98)
            live[pid] = dirs
            started += 1
        pid, status = os.wait()
        assert os.waitstatus_to_exitcode(status) == 0, status
        for d in live.pop(pid):
            d.rmdir()
        done += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, cgroups, the user switch)")
    version = Cgroups.detect().version
    parents = cgroup_dirs(version, "")
    for p in parents:
        p.mkdir(exist_ok=True)
    if version == 2:
        with contextlib.suppress(OSError):
            (ROOT / "cgroup.subtree_control").write_text("+memory +pids")
    try:
        print(f"launches/s, {a.n} at concurrency {a.concurrency}, {os.cpu_count()} cpus, cgroup v{version}")
        print(f"{'chain':28} {'plain':>8} {'+mnt,ipc':>9} {'+net':>8} {'+cgroup':>8}")
        for name, (argv, drop) in CHAINS.items():
            rates = [
                run(a.n, a.concurrency, argv, drop, 0, None),
                run(a.n, a.concurrency, argv, drop, NEWNS | NEWIPC, None),
                run(a.n, a.concurrency, argv, drop, NEWNS | NEWIPC | NEWNET, None),
                run(a.n, a.concurrency, argv, drop, NEWNS | NEWIPC | NEWNET, version),
            ]
            print(f"{name:28} " + " ".join(f"{r:8.0f}" for r in rates))
    finally:
        for p in parents:
            with contextlib.suppress(OSError):
                p.rmdir()


if __name__ == "__main__":
    main()
