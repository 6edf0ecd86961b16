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
