"""How a host-process attempt is started: the privileged part never sees the job's values.

The server's fork server (spawner.py, a small root process of its own) forks a child for
each attempt; then a fixed chain, each program by absolute path, with a fixed environment
of the server's making (PATH, LANG and the KRAN_* ids); nothing the job chose is in a root
process's environment or is interpreted on the way. Where attempts have cgroups (the
server's own case, as root):

    (spawner child, root: the waiter)                  forks the job's process; joins the
                                                       attempt's cgroups (v1: cpuacct only);
                                                       waits, writes the exit code
      (the job's process, root until the drop)         its own session; stdout, stderr; a
                                                       mount and an IPC namespace, a network
                                                       one (loopback only, up) without
                                                       --network; a private /tmp, /dev/shm
                                                       and /proc; joins the cgroups; drops
                                                       to U:G (no groups, not dumpable,
                                                       no_new_privs); as U: cd ./work
        COMMAND ARGS...                                exec'd with the job's variables,
                                                       found through the job's PATH (as
                                                       `sh -c 'exec "$@"'` finds it)

Without cgroups (a server not run as root, or none can be made) the attempt is found again
after a restart by its root process's environment, so a root shell wrapper is that
process, and setpriv drops:

    (spawner child)
      /bin/sh -c WRAPPER                               the root wrapper: runs the rest,
                                                       writes its exit code
        /usr/bin/setpriv --reuid U --regid G --clear-groups --no-new-privs --
          /bin/sh -c LOADER
            COMMAND ARGS...

The job's variables are the environment of the first exec after the drop or, without
cgroups, in `job.env` (written by the server as quoted shell assignments, mode 0640
root:<job's group>), read only by the unprivileged shell: they are never in a root
process's environment or command line (which any host user can read with `ps`). The
command line is plain arguments ("$@") until that shell execs it. So a PATH, LD_PRELOAD
or KRAN_* a job sets reaches only itself. The waiter (or wrapper) stays root to write
`exit_code` into the root-owned attempt dir, where the job cannot write.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from kran.adapters.engines.spawner import BASE_PATH, SH

UNSHARE = "/usr/bin/unshare"
MOUNT = "/bin/mount"
SETPRIV = "/usr/bin/setpriv"
ENV_FILE = "job.env"

# Run in the attempt dir, as root, then the unprivileged command line: only builtins after
# the job (no extra fork); exit_code is read only once the wrapper is gone.
WRAPPER = '"$@" >stdout 2>stderr </dev/null; rc=$?; echo $rc >exit_code; exit $rc'
# The job user's first step where no waiter drops it: its own variables, its working dir,
# its command (./work: no CDPATH of the job's takes the cd elsewhere). A waiter's job's
# process does the same itself (spawner.py), its variables in its environment.
LOADER = f'. ./{ENV_FILE} && cd ./work && exec "$@"'
WORK = "work"  # the job's working dir, in its attempt dir


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


def job_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables a job's process gets (names are identifiers, checked at submit)."""
    return {name: value for name, value in env.items() if name.isidentifier() and name.isascii()}


def env_script(env: Mapping[str, str]) -> str:
    """The job's variables as shell assignments (values quoted, so nothing in them is code)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in job_variables(env).items())


def write_env_file(attempt_dir: Path, env: Mapping[str, str], gid: int | None) -> None:
    """job.env, readable by root and the job's group only."""
    path = attempt_dir / ENV_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        if gid is not None:
            os.fchown(f.fileno(), 0, gid)
            os.fchmod(f.fileno(), 0o640)
        f.write(env_script(env))


def job_command(argv: Sequence[str], run_as: tuple[int, int] | None) -> list[str]:
    """The unprivileged part: drop to run_as (when root), then the loader of job.env."""
    tail = [SH, "-c", LOADER, "kran-job", *argv]
    if run_as is None:
        return tail
    uid, gid = run_as
    return [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--", *tail]


def launch_request(
    attempt_dir: Path,
    cgroup_procs: Sequence[Path],
    shm_bytes: int | None,
    argv: Sequence[str],
    run_as: tuple[int, int] | None,
    env: dict[str, str],
    network: bool = True,
    job_env: Mapping[str, str] | None = None,
    waiter_procs: Sequence[Path] = (),
) -> dict[str, object]:
    """What the fork server is asked for (spawner.py): private mounts and IPC when `shm_bytes`
    is given and then, without `network`, a network namespace with only its loopback (as a
    container without --network): the job reaches no other process's sockets on the host,
    neither the server's nor another user's job's, and listens where no one else can.

    With `job_env` (where attempts have cgroups: they are found again by those) the fork
    server's child waits for the job itself and drops it to `run_as` by system calls, and
    the job's variables go into the environment of its exec after the drop, into its work
    dir: no program before the job's own. The waiter itself joins `waiter_procs`. Without, the root
    shell wrapper, setpriv and job.env."""
    private = None
    if shm_bytes is not None:
        private = {"shm": shm_bytes, "network": network, "workdir": env.get("KRAN_WORKDIR", "")}
    request: dict[str, object] = {"dir": str(attempt_dir), "procs": [str(p) for p in cgroup_procs], "env": env}
    if job_env is not None:
        request.update(
            argv=list(argv),
            cd=WORK,
            env={**env, **job_variables(job_env)},
            run_as=list(run_as) if run_as else None,
            waiter=True,
            waiter_procs=[str(p) for p in waiter_procs],
        )
    else:
        request["argv"] = [SH, "-c", WRAPPER, "kran-job", *job_command(argv, run_as)]
    return {**request, "private": private}


def private_mounts_unavailable() -> str | None:
    """Why a host job cannot get its own /tmp, /dev/shm, /proc and IPC here (None: it can)."""
    probe = (
        f"{MOUNT} -t tmpfs -o size=1m kran-probe /dev/shm && {MOUNT} --bind /dev/shm /tmp "
        f"&& {MOUNT} -t proc -o hidepid=invisible proc /proc"
    )
    try:
        r = subprocess.run(
            [UNSHARE, "--mount", "--ipc", "--propagation", "private", SH, "-c", probe],
            env={"PATH": BASE_PATH},
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if r.returncode == 0 else (r.stderr.decode(errors="replace").strip() or f"exit {r.returncode}")
