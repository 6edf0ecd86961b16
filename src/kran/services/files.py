"""A job's working dir, read safely: nothing outside it is ever reachable."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kran.errors import Gone, InvalidInput, NotFound
from kran.services.runtime import Runtime


@dataclass(frozen=True)
class Entry:
    name: str
    type: str  # file | dir | link | other
    size: int
    mtime: float


def workdir_of(rt: Runtime, job_id: int) -> Path:
    job = rt.store.get_job(job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.files_expired:
        raise Gone(f"job {job_id}'s files were removed by retention (files_expired)")
    if job.attempts == 0:
        raise NotFound(f"job {job_id} has not started yet: no files")
    return rt.attempt_dir(job_id, job.attempts) / "work"


def safe_path(root: Path, rel: str) -> Path:
    """root/rel, refusing anything that leaves root (.., absolute, symlinks outward)."""
    if "\0" in rel:
        raise InvalidInput("path contains a NUL byte", "path")
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if rel.startswith("/") or any(p == ".." for p in parts):
        raise InvalidInput(f"path {rel!r} must be relative and stay inside the job's dir", "path")
    real_root = root.resolve()
    target = (real_root.joinpath(*parts)).resolve()
    if target != real_root and real_root not in target.parents:
        raise InvalidInput(f"path {rel!r} leads outside the job's dir", "path")
    return target


def list_files(rt: Runtime, job_id: int, rel: str = "") -> list[Entry]:
    root = workdir_of(rt, job_id)
    target = safe_path(root, rel)
    if not target.exists():
        raise NotFound(f"no {rel or '/'} in job {job_id}'s dir")
    if not target.is_dir():
        return [_entry(target)]
    return sorted((_entry(p) for p in target.iterdir()), key=lambda e: e.name)


def file_path(rt: Runtime, job_id: int, rel: str) -> Path:
    target = safe_path(workdir_of(rt, job_id), rel)
    if not target.is_file():
        raise NotFound(f"no file {rel!r} in job {job_id}'s dir")
    return target


def _entry(p: Path) -> Entry:
    st = p.lstat()
    kind = (
        "dir"
        if stat.S_ISDIR(st.st_mode)
        else "file"
        if stat.S_ISREG(st.st_mode)
        else "link"
        if stat.S_ISLNK(st.st_mode)
        else "other"
    )
    return Entry(p.name, kind, st.st_size, st.st_mtime)


CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE


def tar_chunks(rt: Runtime, job_id: int) -> Iterator[bytes]:
    """The job's working dir as an uncompressed tar, streamed file by file (a file is
    never held in memory whole). Checks happen before the first chunk is asked for."""
    root = workdir_of(rt, job_id)
    if not root.is_dir():
        raise NotFound(f"job {job_id} has no working dir")
    return tar_tree(root)


def tar_tree(root: Path) -> Iterator[bytes]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in [*sorted(dirnames), *sorted(filenames)]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            try:
                st = path.lstat()
            except OSError:
                continue  # removed while we walked
            info = tarfile.TarInfo(rel)
            info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
            else:
                continue  # fifos, sockets, devices: not results
            yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            if info.size:
                yield from _file_blocks(path, info.size)
    yield b"\0" * (2 * BLOCK)


def _file_blocks(path: Path, size: int) -> Iterator[bytes]:
    """Exactly `size` bytes (a file that changed meanwhile is cut or zero-filled), padded."""
    left = size
    try:
        with open(path, "rb") as f:
            while left and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk
    except OSError:
        pass
    while left:
        n = min(CHUNK, left)
        left -= n
        yield b"\0" * n
    if size % BLOCK:
        yield b"\0" * (BLOCK - size % BLOCK)
