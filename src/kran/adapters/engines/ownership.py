"""Who owns an attempt's files: the job's user its working dir, root the rest.

The attempt dir (stdout, stderr, exit_code, written by root) stays root's and is mode
0710 with the job's group, as is the job's dir above it: a job reaches its own working
dir and nothing beside it, and another user's job cannot even look in. The working dir
is 0700 and the job user's, and so is the attempt's private /tmp.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kran.jobfs import MAX_DEPTH
from kran.ports import LaunchSpec


def effective_user(spec: LaunchSpec, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """The user the attempt runs as (set by staging), else the engine's default, when
    kran can switch users (runs as root)."""
    if os.geteuid() != 0:
        return None
    return spec.run_as or default


def seal_attempt(spec: LaunchSpec, run_as: tuple[int, int], private_tmp: bool = False) -> None:
    """The attempt's dirs private to its job, its working dir (and /tmp) the job user's."""
    gid = run_as[1]
    for d in (spec.attempt_dir.parent, spec.attempt_dir):
        os.chown(d, 0, gid)
        os.chmod(d, 0o710)
    give_to(spec, run_as)
    os.chmod(spec.workdir, 0o700)
    if private_tmp:
        tmp = private_tmp_dir(spec.attempt_dir)
        tmp.mkdir(mode=0o700, exist_ok=True)
        os.lchown(tmp, *run_as)


def private_tmp_dir(attempt_dir: Path) -> Path:
    """A host job's /tmp (bound there in its mount namespace), removed when it ends."""
    return attempt_dir / "tmp"


def give_to(spec: LaunchSpec, run_as: tuple[int, int]) -> None:
    """The job's user owns its working dir, what was staged in it, its app volume and the
    writable dirs bound into its container. An app volume is the app's state, used by one
    job at a time, of whichever user runs the app: it becomes theirs while they use it
    (users' jobs have uids of their own, and the next user's job must write it too)."""
    _chown_tree(spec.workdir, run_as)
    for m in spec.mounts:
        _chown_tree(m, run_as)
    for host, _, writable in spec.binds:
        if writable:
            _chown_tree(Path(host), run_as)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _chown_tree(top: Path, run_as: tuple[int, int]) -> None:
    """The tree becomes the user's, its dirs writable by their owner (staged copies of
    read-only inputs keep their modes, which root ignores and the job user would not).

    Root walks a tree a job may have written (an app volume, a bind): the top is made
    root's and 0700 first, so no job can enter it meanwhile, and becomes the user's last;
    each entry is changed through an fd opened with O_NOFOLLOW, never by its path again,
    so a dir swapped for a link is not followed; a root file with other hard links (one
    linked in from outside) is left root's."""
    try:
        fd = os.open(top, _PATH)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            return
        if not stat.S_ISDIR(st.st_mode):
            _give_inode(fd, st, run_as)
            return
        dfd = os.open(top, _DIR)
        try:
            os.fchown(dfd, 0, 0)
            os.fchmod(dfd, 0o700)
            _chown_below(dfd, run_as)
            os.fchmod(dfd, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
            os.fchown(dfd, *run_as)
        finally:
            os.close(dfd)
    finally:
        os.close(fd)


def _chown_below(top: int, run_as: tuple[int, int]) -> None:
    """Everything below the dir `top`, depth first, without recursion and with at most
    MAX_DEPTH dirs open: dirs deeper are left as they are (a job's tree thousands of
    levels deep raised RecursionError, and failed every launch of the app)."""
    stack: list[tuple[int, list[str]]] = [(top, _names(top))]
    try:
        while stack:
            dfd, names = stack[-1]
            if not names:
                stack.pop()
                if stack:
                    os.close(dfd)
                continue
            name = names.pop()
            try:
                fd = os.open(name, _PATH, dir_fd=dfd)
            except OSError:
                continue  # gone meanwhile
            try:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode):
                    try:
                        sub = os.open(name, _DIR, dir_fd=dfd)
                    except OSError:
                        continue  # swapped meanwhile: not followed
                    if (os.fstat(sub).st_dev, os.fstat(sub).st_ino) != (st.st_dev, st.st_ino):
                        os.close(sub)
                        continue
                    try:
                        os.fchown(sub, *run_as)
                        os.fchmod(sub, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
                        below = _names(sub) if len(stack) <= MAX_DEPTH else []
                    except BaseException:
                        os.close(sub)
                        raise
                    stack.append((sub, below))
                elif stat.S_ISLNK(st.st_mode):
                    os.chown(name, *run_as, dir_fd=dfd, follow_symlinks=False)
                else:
                    _give_inode(fd, st, run_as)
            finally:
                os.close(fd)
    finally:
        for dfd, _ in stack[1:]:
            os.close(dfd)


def _names(dfd: int) -> list[str]:
    with os.scandir(dfd) as it:
        return [e.name for e in it]


def _give_inode(path_fd: int, st: os.stat_result, run_as: tuple[int, int]) -> None:
    """chown the inode an O_PATH fd holds (through /proc/self/fd: that inode, no path)."""
    if st.st_nlink > 1 and st.st_uid == 0:
        return
    os.chown(f"/proc/self/fd/{path_fd}", *run_as)
