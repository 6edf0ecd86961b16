"""How a host-process attempt is started: the privileged part never sees the job's values.

The server starts a fixed chain of programs, each by absolute path, with a fixed
environment of its own making (PATH, LANG and the KRAN_* ids that find the attempt again
after a restart); nothing the job chose is in that environment or is interpreted on the
way. As root:

    /usr/bin/unshare --mount --propagation private     a mount namespace of its own
      /bin/sh -c WRAPPER                               joins the attempt's cgroups, mounts
                                                       a private /dev/shm, /tmp and /proc
        /usr/bin/setpriv --reuid U --regid G --clear-groups --no-new-privs --
          /usr/bin/env -i -C work -- NAME=VALUE...     now unprivileged: the job's env
                                                       and working dir
            COMMAND ARGS...                            found through the job's PATH

The job's variables and command are plain arguments until `env` runs them, after the
privileges are gone: a PATH, LD_PRELOAD or KRAN_* a job sets reaches only itself. The
wrapper stays root to write `exit_code` into the root-owned attempt dir, where the job
cannot write.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

UNSHARE = "/usr/bin/unshare"
SH = "/bin/sh"
MOUNT = "/bin/mount"
SETPRIV = "/usr/bin/setpriv"
ENV = "/usr/bin/env"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Run in the attempt dir (every path relative to it: a private /tmp may hide its absolute
# path). $1 cgroup.procs files to join, $2 /dev/shm size in bytes ("": no private mounts),
# then the unprivileged command line. Only builtins after the job (no extra fork).
# exit_code needs no atomic rename: it is read only once the wrapper is gone.
WRAPPER = (
    'for f in $1; do echo $$ >"$f"; done 2>/dev/null; '
    'if [ -n "$2" ]; then '
    f'{MOUNT} -t tmpfs -o nosuid,nodev,mode=1777,size="$2" kran-shm /dev/shm '
    f"&& {MOUNT} --bind tmp /tmp "
    f"&& {MOUNT} -t proc -o nosuid,nodev,noexec,hidepid=invisible proc /proc "
    '|| { echo "kran: could not set up the job\'s private /tmp, /dev/shm and /proc" >stderr; '
    "echo 125 >exit_code; exit 125; }; fi; "
    'shift 2; "$@" >stdout 2>stderr </dev/null; rc=$?; '
    "echo $rc >exit_code; exit $rc"
)


@dataclass(frozen=True)
class HostLaunch:
    argv: list[str]
    env: dict[str, str]


def wrapper_env(instance: str, job_id: int, attempt: int, workdir: Path) -> dict[str, str]:
    """The root wrapper's whole environment: server values only (discover() reads them)."""
    return {
        "PATH": BASE_PATH,
        "LANG": "C.UTF-8",
        "KRAN_INSTANCE": instance,
        "KRAN_JOB_ID": str(job_id),
        "KRAN_ATTEMPT": str(attempt),
        "KRAN_WORKDIR": str(workdir),
    }


def job_command(argv: Sequence[str], env: Mapping[str, str], run_as: tuple[int, int] | None) -> list[str]:
    """The unprivileged part: drop to run_as (when root), then the job's exact environment."""
    command = list(argv)
    if command and "=" in command[0]:  # `env` would take it for a variable
        command = [SH, "-c", 'exec "$@"', "sh", *command]
    tail = [ENV, "-i", "-C", "work", "--", *(f"{k}={v}" for k, v in env.items()), *command]
    if run_as is None:
        return tail
    uid, gid = run_as
    return [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--", *tail]


def host_launch(
    cgroup_procs: Sequence[Path],
    shm_bytes: int | None,
    command: list[str],
    env: dict[str, str],
) -> HostLaunch:
    """The whole argv: private mounts (through unshare) when `shm_bytes` is given."""
    wrapper = [SH, "-c", WRAPPER, "kran-job", " ".join(str(p) for p in cgroup_procs)]
    if shm_bytes is None:
        return HostLaunch([*wrapper, "", *command], env)
    return HostLaunch([UNSHARE, "--mount", "--propagation", "private", *wrapper, str(shm_bytes), *command], env)


def private_mounts_unavailable() -> str | None:
    """Why a host job cannot get its own /tmp, /dev/shm and /proc here (None: it can)."""
    probe = (
        f"{MOUNT} -t tmpfs -o size=1m kran-probe /dev/shm && {MOUNT} --bind /dev/shm /tmp "
        f"&& {MOUNT} -t proc -o hidepid=invisible proc /proc"
    )
    try:
        r = subprocess.run(
            [UNSHARE, "--mount", "--propagation", "private", SH, "-c", probe],
            env={"PATH": BASE_PATH},
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if r.returncode == 0 else (r.stderr.decode(errors="replace").strip() or f"exit {r.returncode}")
