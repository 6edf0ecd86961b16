"""A job's working dir, read safely: nothing outside it is ever reachable.

Every read goes through `adapters.jobfs` (fd-relative opens that never follow a link), so
a job that swaps its files for links while they are served gets a refusal, not the target.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kran.errors import Gone, InvalidInput, NotFound
from kran.jobfs import Item, Missing, OpenFile, Refused, Tree, kind_of, read_chunks, split_relative
from kran.ports import Store
from kran.services.datadir import DataDir


@dataclass(frozen=True)
class Entry:
    name: str
    type: str  # file | dir | link | other
    size: int
    mtime: float


def safe_path(root: Path, rel: str) -> Path:
    """root/rel for a tree the server itself writes (uploads): relative, no `..`."""
    try:
        parts = split_relative(rel)
    except Refused as e:
        raise InvalidInput(str(e), "path") from None
    return root.resolve().joinpath(*parts)


def _readlink(item: Item) -> str:
    return os.readlink(item.name, dir_fd=item.dir_fd)


def _tree(root: Path, job_id: int) -> Tree:
    try:
        return Tree(root)
    except Missing:
        raise NotFound(f"job {job_id} has no working dir") from None
    except Refused as e:
        raise InvalidInput(str(e), "path") from None


def tree_kind(tree: Tree, rel: str) -> str | None:
    try:
        return kind_of(tree.stat(rel))
    except Refused:
        return None


CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE


def tar_dir(root: Path, what: str) -> Iterator[bytes]:
    """Any dir a job wrote into (a workflow's outputs) as a tar, through the same walk."""
    try:
        return tar_tree(Tree(root))
    except Refused:
        raise NotFound(f"{what} has no files") from None


def tar_tree(tree: Tree) -> Iterator[bytes]:
    """The tree as a tar: dirs, regular files and symlinks (as links, never followed);
    FIFOs, sockets, devices and foreign hard links are left out. Closes the tree."""
    with tree:
        for item in tree.walk():
            info = tarfile.TarInfo(item.rel)
            info.mode, info.mtime = item.st.st_mode & 0o7777, int(item.st.st_mtime)
            f = None
            if item.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif item.kind == "link":
                try:
                    info.type, info.linkname = tarfile.SYMTYPE, _readlink(item)
                except OSError:
                    continue
            elif item.kind == "file":
                try:
                    f = tree.open_at(item.dir_fd, item.name, item.rel)
                except Refused:
                    continue  # swapped for something else, or gone, while we walked
                info.size = f.size
            else:
                continue  # fifos, sockets, devices: not results
            try:
                yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                if f is not None:
                    yield from read_chunks(f, CHUNK)
                    if f.size % BLOCK:
                        yield b"\0" * (BLOCK - f.size % BLOCK)
            finally:
                if f is not None:
                    os.close(f.fd)
        yield b"\0" * (2 * BLOCK)


LIST_MAX = 10_000  # entries of a dir in one listing (a page)


class JobFiles:
    """A job's working dir, read through the safe walk."""

    def __init__(self, store: Store, dirs: DataDir) -> None:
        self.store = store
        self.dirs = dirs

    def workdir_of(self, job_id: int) -> Path:
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.files_expired:
            raise Gone(f"job {job_id}'s files were removed by retention (files_expired)")
        if job.attempts == 0:
            raise NotFound(f"job {job_id} has not started yet: no files")
        return self.dirs.attempt_dir(job_id, job.attempts) / "work"

    def list_files(self, job_id: int, rel: str = "", after: str | None = None, limit: int = LIST_MAX) -> list[Entry]:
        """At most `limit` entries of the dir, by name, those after `after` (a page)."""
        with _tree(self.workdir_of(job_id), job_id) as tree:
            try:
                st = tree.stat(rel)
                if kind_of(st) != "dir":
                    return [Entry(Path(rel).name, kind_of(st), st.st_size, st.st_mtime)][: 1 if after is None else 0]
                return [Entry(i.name, i.kind, i.st.st_size, i.st.st_mtime) for i in tree.listdir(rel, after, limit)]
            except Missing:
                raise NotFound(f"no {rel or '/'} in job {job_id}'s dir") from None
            except Refused as e:
                raise InvalidInput(str(e), "path") from None

    def count(self, job_id: int, rel: str = "") -> int:
        """How many entries the dir has (0 for what is not a dir)."""
        with _tree(self.workdir_of(job_id), job_id) as tree:
            try:
                return tree.count(rel) if kind_of(tree.stat(rel)) == "dir" else 0
            except Refused:
                return 0

    def open_file(self, job_id: int, rel: str) -> OpenFile:
        """The job's file opened for reading (the caller closes it)."""
        with _tree(self.workdir_of(job_id), job_id) as tree:
            try:
                return tree.open_file(rel)
            except Missing:
                raise NotFound(f"no file {rel!r} in job {job_id}'s dir") from None
            except Refused as e:
                if tree_kind(tree, rel) == "dir":
                    raise NotFound(f"no file {rel!r} in job {job_id}'s dir: it is a dir") from None
                raise InvalidInput(str(e), "path") from None

    def tar_chunks(self, job_id: int) -> Iterator[bytes]:
        """The job's working dir as an uncompressed tar, streamed file by file (a file is
        never held in memory whole). Checks happen before the first chunk is asked for."""
        return tar_tree(_tree(self.workdir_of(job_id), job_id))
