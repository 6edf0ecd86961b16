"""The one safe walk: reading a tree that a job can write, without ever leaving it.

A job can change its working dir while the server reads it: swap a file for a symlink,
a dir for a link, put a FIFO or a hard link to someone else's file there. So nothing here
opens a path twice or follows a link. Every component is opened relative to the fd of the
dir above it with O_NOFOLLOW (O_PATH: opening it has no side effect, even for a device or
a FIFO); what it is comes from fstat of that fd; a regular file is then opened for
reading through its own fd (/proc/self/fd/N, the same inode), never through its path again.
What a caller gets is an open fd, streamed from and closed by the caller.

Every reader of a job's files goes through here: the files routes (list, get, archive),
workflow outputs, CWL output collection and retention's size walk. It sits below
services and adapters (both read job trees) and does I/O, so not in domain.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # a dir is safe to open


MAX_DEPTH = 128  # dirs below the root that a walk enters; a removal moves deeper ones up
MAX_ENTRIES = 1_000_000  # entries a size walk reads (its time, and its memory for hard links)


class Refused(Exception):
    """The path cannot be read safely; the message says why (for the user)."""


class Disrupted(Refused):
    """The tree moved under a walk that had to leave a dir's fd (past MAX_DEPTH), or held
    more than MAX_ENTRIES entries; `counted`: the bytes counted until then (a floor)."""

    def __init__(self, message: str, counted: int = 0) -> None:
        super().__init__(message)
        self.counted = counted


class Missing(Refused):
    """Nothing there (or it went while we looked)."""


def kind_of(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def split_relative(rel: str) -> list[str]:
    """The components of a relative path; refuses NUL, absolute paths and `..`."""
    if "\0" in rel:
        raise Refused("path contains a NUL byte")
    if rel.startswith("/"):
        raise Refused(f"path {rel!r} must be relative and stay inside the job's dir")
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Refused(f"path {rel!r} must be relative and stay inside the job's dir")
    return parts


@dataclass(frozen=True)
class OpenFile:
    """A regular file opened for reading; the caller closes `fd`."""

    fd: int
    size: int
    mtime: float


@dataclass(frozen=True)
class Item:
    """One entry of a walk: `rel` from the root, its lstat-like stat, its parent's fd."""

    rel: str
    name: str
    st: os.stat_result
    dir_fd: int

    @property
    def kind(self) -> str:
        return kind_of(self.st)


class Tree:
    """A dir tree read through fds. `owner` is the uid whose files these are (the root's
    owner): a file with other hard links that this uid could not read itself is refused,
    since a job could have linked it in where the kernel lets it (protected_hardlinks=0)."""

    def __init__(self, root: Path, fd: int | None = None) -> None:
        if fd is None:
            try:
                fd = os.open(root, _DIR)
            except FileNotFoundError:
                raise Missing(f"{root.name} does not exist") from None
            except OSError as e:
                raise Refused(_why(e, root.name)) from None
        self._fd = fd
        st = os.fstat(self._fd)
        self.owner, self.group = st.st_uid, st.st_gid

    @classmethod
    def beneath(cls, top: Path, rel: str) -> Tree:
        """The tree at `rel` below the dir `top`, reached as `open_beneath` does."""
        fd = open_beneath(top, rel, _DIR & ~os.O_NOFOLLOW)
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise Refused(f"{rel!r} is not a dir")
        return cls(top / rel, fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one path

    @contextmanager
    def _dir(self, parts: list[str]) -> Iterator[int]:
        """An fd of the dir at `parts` (the root for []), every component a real dir."""
        fd = os.dup(self._fd)
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, _DIR, dir_fd=fd)
                except OSError as e:
                    raise _refusal(e, "/".join(parts[: i + 1])) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def stat(self, rel: str) -> os.stat_result:
        """What is at `rel` (a link is reported as a link, never followed)."""
        parts = split_relative(rel)
        if not parts:
            return os.fstat(self._fd)
        with self._dir(parts[:-1]) as parent:
            try:
                return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except OSError as e:
                raise _refusal(e, rel) from None

    def listdir(self, rel: str, after: str | None = None, limit: int | None = None) -> list[Item]:
        """The entries of the dir at `rel`, sorted by name: with `limit`, at most that many
        of those named after `after`, picked from the names as they stream (a dir of a
        million files took a GiB to list whole); only those are looked at."""
        with self._dir(split_relative(rel)) as fd:
            if limit is None:
                return sorted(self._entries(fd, rel), key=lambda i: i.name)
            with os.scandir(fd) as it:
                names = heapq.nsmallest(limit, (e.name for e in it if after is None or e.name > after))
            out = []
            for name in names:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue  # removed while we looked
                out.append(Item(f"{rel}/{name}" if rel else name, name, st, fd))
            return out

    def count(self, rel: str) -> int:
        """How many entries the dir at `rel` has (counted as they stream)."""
        with self._dir(split_relative(rel)) as fd, os.scandir(fd) as it:
            return sum(1 for _ in it)

    def _entries(self, fd: int, rel: str) -> Iterator[Item]:
        with os.scandir(fd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while we looked
                yield Item(f"{rel}/{entry.name}" if rel else entry.name, entry.name, st, fd)

    def open_file(self, rel: str) -> OpenFile:
        """The regular file at `rel`, opened; refuses links, dirs, FIFOs, devices."""
        parts = split_relative(rel)
        if not parts:
            raise Refused("a dir is not a file")
        with self._dir(parts[:-1]) as parent:
            return self.open_at(parent, parts[-1], rel)

    def open_at(self, dir_fd: int, name: str, rel: str) -> OpenFile:
        try:
            pfd = os.open(name, _PATH, dir_fd=dir_fd)
        except OSError as e:
            raise _refusal(e, rel) from None
        try:
            st = os.fstat(pfd)
            if not stat.S_ISREG(st.st_mode):
                kind = {"link": "a symlink", "dir": "a dir"}.get(kind_of(st), "not a regular file")
                raise Refused(f"{rel!r} is {kind}")
            if st.st_nlink > 1 and not self._owner_may_read(st):
                raise Refused(f"{rel!r} is a hard link to a file the job cannot read itself")
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        finally:
            os.close(pfd)
        st2 = os.fstat(fd)
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):  # cannot happen; never serve if it did
            os.close(fd)
            raise Refused(f"{rel!r} changed while it was opened")
        return OpenFile(fd, st2.st_size, st2.st_mtime)

    def _owner_may_read(self, st: os.stat_result) -> bool:
        if self.owner == 0 or st.st_mode & stat.S_IROTH:
            return True
        if st.st_uid == self.owner:
            return bool(st.st_mode & stat.S_IRUSR)
        return st.st_gid == self.group and bool(st.st_mode & stat.S_IRGRP)

    # ---- the whole tree

    def walk(self) -> Iterator[Item]:
        """Every entry below the root, depth first, sorted; dirs before their contents.
        A dir is entered through its own fd, so a dir swapped for a link mid-walk is not.
        No recursion, and at most MAX_DEPTH dirs open: a dir at that depth is listed but
        not entered (a job's tree thousands of levels deep raised RecursionError, or would
        take as many fds)."""
        stack: list[tuple[int, Iterator[Item]]] = [(self._fd, self._sorted(self._fd, ""))]
        try:
            while stack:
                fd, items = stack[-1]
                item = next(items, None)
                if item is None:
                    stack.pop()
                    if stack:
                        os.close(fd)
                    continue
                yield item
                if item.kind != "dir" or len(stack) > MAX_DEPTH:
                    continue
                try:
                    sub = os.open(item.name, _DIR, dir_fd=fd)
                except OSError:
                    continue  # swapped or removed meanwhile: skipped, never followed
                try:
                    stack.append((sub, self._sorted(sub, item.rel)))
                except BaseException:
                    os.close(sub)
                    raise
        finally:
            for fd, _ in stack[1:]:
                os.close(fd)

    def _sorted(self, fd: int, rel: str) -> Iterator[Item]:
        return iter(sorted(self._entries(fd, rel), key=lambda i: i.name))

    def used_bytes(self, max_entries: int | None = MAX_ENTRIES) -> int:
        """Bytes allocated under the root at any depth, each inode once (a tree's hard links
        to one file count it once): what a job's files take of the disk, for its eviction,
        which a tree nested past MAX_DEPTH must not escape. At most MAX_DEPTH fds are open:
        a deeper dir's fd is closed on the way down and its parent reached again through
        "..", checked to be the same dir (dev and inode), else Disrupted (the job moved its
        dirs meanwhile: what it counted would understate, and a job could hide its files
        so). Past `max_entries` entries, Disrupted too (a job's millions of files cost the
        server seconds and memory at every walk). Only sizes are read; nothing is followed or
        opened but dirs. Retention's size threshold counts with it too."""
        seen: set[tuple[int, int]] = set()
        total = entries = 0

        def listing(fd: int) -> list[str]:  # counts the dir's entries; returns its subdirs
            nonlocal total, entries
            subdirs = []
            for item in self._entries(fd, ""):
                entries += 1
                if max_entries is not None and entries > max_entries:
                    raise Disrupted(f"more than {max_entries} files and dirs", total)
                st = item.st
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(item.name)
            return sorted(subdirs, reverse=True)  # (taken from the end: in order)

        top = os.fstat(self._fd)
        # a frame: the dir's fd (-1 once closed on the way down), its subdirs left, its identity
        stack: list[list[Any]] = [[self._fd, listing(self._fd), (top.st_dev, top.st_ino)]]
        try:
            while stack:
                frame = stack[-1]
                if not frame[1]:
                    stack.pop()
                    moved = False
                    try:
                        if stack and stack[-1][0] < 0:  # closed: back up through "..", if still the same dir
                            up = stack[-1][0] = os.open("..", _DIR, dir_fd=frame[0])
                            st = os.fstat(up)
                            moved = (st.st_dev, st.st_ino) != stack[-1][2]
                    finally:
                        if frame[0] != self._fd:
                            os.close(frame[0])
                    if moved:
                        raise Disrupted("the tree moved while it was measured", total)
                    continue
                name = frame[1].pop()
                try:
                    sub = os.open(name, _DIR, dir_fd=frame[0])
                except OSError:
                    continue  # swapped or removed meanwhile: skipped, never followed
                st = os.fstat(sub)
                stack.append([sub, [], (st.st_dev, st.st_ino)])
                if len(stack) > MAX_DEPTH and frame[0] != self._fd:
                    os.close(frame[0])
                    frame[0] = -1
                stack[-1][1] = listing(sub)
        finally:
            for frame in stack:
                if frame[0] >= 0 and frame[0] != self._fd:
                    os.close(frame[0])
        return total


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437  # (one number on every Linux architecture since 5.6)
_RESOLVE_NO_MAGICLINKS, _RESOLVE_BENEATH = 0x02, 0x08
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def open_beneath(top: Path, rel: str, flags: int = os.O_PATH | os.O_CLOEXEC) -> int:
    """An fd of `rel` below the dir `top` (a dir an admin allowed, that users may write
    into), resolved by the kernel without ever leaving `top`: a link that stays below it is
    followed, `..` or a link out is refused, and nothing can be swapped between a check
    and the open (openat2 RESOLVE_BENEATH). O_PATH by default: the open has no side
    effect, even for a FIFO or a device. Refused (or Missing) with the reason."""
    try:
        top_fd = os.open(top, _DIR & ~os.O_NOFOLLOW)
    except OSError as e:
        raise _refusal(e, str(top)) from None
    try:
        how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(
            _SYS_OPENAT2, ctypes.c_int(top_fd), os.fsencode(rel or "."), ctypes.byref(how), ctypes.sizeof(how)
        )
        if fd < 0:
            err = ctypes.get_errno()
            if err == errno.EXDEV:  # (a link or `..` leading out)
                raise Refused(f"{rel!r} leads out of {top}")
            raise _refusal(OSError(err, os.strerror(err)), rel)
        return int(fd)
    finally:
        os.close(top_fd)


def under_root(path: str, roots: Sequence[Path]) -> tuple[Path, str] | None:
    """(the root, the path below it) for an absolute `path` that resolves under one of
    `roots` (resolved dirs), else None. A check only: open it with `open_beneath`, which
    holds whatever is swapped in after it."""
    resolved = Path(path).resolve()
    for root in roots:
        if resolved == root or root in resolved.parents:
            return root, str(resolved.relative_to(root))
    return None


def open_regular_beneath(top: Path, rel: str) -> OpenFile:
    """The regular file at `rel` below `top` (as `open_beneath`), opened for reading."""
    pfd = open_beneath(top, rel)
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{rel!r} is not a regular file")
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    finally:
        os.close(pfd)
    st2 = os.fstat(fd)
    return OpenFile(fd, st2.st_size, st2.st_mtime)


def read_chunks(f: OpenFile, chunk: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes [start, end) of the file as it was when opened: a file that grew is cut at its
    size then, one that shrank is zero-filled, so a reader always gets what was announced."""
    pos, stop = start, f.size if end is None else end
    while pos < stop:
        want = min(chunk, stop - pos)
        try:
            data = os.pread(f.fd, want, pos)
        except OSError:
            data = b""
        if not data:
            data = b"\0" * want
        pos += len(data)
        yield data


def _refusal(e: OSError, rel: str) -> Refused:
    if e.errno == errno.ENOENT:
        return Missing(f"no {rel!r}")
    return Refused(_why(e, rel))


def _why(e: OSError, rel: str) -> str:
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return f"{rel!r} leads through a symlink or a non-dir"
    return f"{rel!r}: {e.strerror}"
