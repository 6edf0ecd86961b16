"""Removing a job's tree at any depth, never following a link (retention, a host job's /tmp
at its end, an evicted job's working dir): the removal half of the one safe walk (jobfs)."""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from kran.jobfs import MAX_DEPTH

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # (as jobfs opens a dir)


def remove_tree(path: Path) -> None:
    """`rm -rf path` for a tree a job wrote: never follows a link, no recursion, at most
    MAX_DEPTH dirs open at any depth (a dir found at that depth is moved up, under `path`,
    and emptied from there). What cannot be removed stays; no error is raised.
    (shutil.rmtree raised RecursionError for a tree a few thousand levels deep, with
    `ignore_errors` too.)"""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            path.unlink()
            return
        root = os.open(path, _DIR)
    except OSError:
        return
    try:
        moved: list[str] = []
        names = itertools.count()
        _empty(root, root, moved, names)
        while moved:
            name = moved.pop()
            try:
                fd = os.open(name, _DIR, dir_fd=root)
            except OSError:
                continue
            try:
                _empty(fd, root, moved, names)
            finally:
                os.close(fd)
            with suppress(OSError):
                os.rmdir(name, dir_fd=root)
    finally:
        os.close(root)
    with suppress(OSError):
        os.rmdir(path)


def _empty(top: int, root: int, moved: list[str], names: Iterator[int]) -> None:
    """Remove everything in the dir `top` (not `top` itself); dirs MAX_DEPTH below it are
    renamed into `root` (names appended to `moved`) instead of entered."""
    stack: list[tuple[int, str, list[str]]] = [(top, "", _unlink_all_but_dirs(top))]
    try:
        while stack:
            fd, name, subdirs = stack[-1]
            if not subdirs:
                stack.pop()
                if stack:
                    os.close(fd)
                    with suppress(OSError):
                        os.rmdir(name, dir_fd=stack[-1][0])
                continue
            sub = subdirs.pop()
            if len(stack) > MAX_DEPTH:
                up = f".kran-removing-{os.getpid()}-{next(names)}"
                with suppress(OSError):
                    os.rename(sub, up, src_dir_fd=fd, dst_dir_fd=root)
                    moved.append(up)
                continue
            try:
                sub_fd = os.open(sub, _DIR, dir_fd=fd)
            except OSError:
                with suppress(OSError):
                    os.unlink(sub, dir_fd=fd)  # swapped for a file or a link meanwhile
                continue
            try:
                stack.append((sub_fd, sub, _unlink_all_but_dirs(sub_fd)))
            except BaseException:
                os.close(sub_fd)
                raise
    finally:
        for fd, _, _ in stack[1:]:
            os.close(fd)


def _unlink_all_but_dirs(fd: int) -> list[str]:
    """Unlinks what is in the dir `fd` except dirs; returns the dirs' names."""
    dirs = []
    try:
        with os.scandir(fd) as it:
            entries = list(it)
    except OSError:
        return []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                dirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
        except OSError:
            continue
    return dirs
