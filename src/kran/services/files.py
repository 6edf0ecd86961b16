"""A job's working dir, read safely: nothing outside it is ever reachable."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from kran.errors import InvalidInput, NotFound
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
