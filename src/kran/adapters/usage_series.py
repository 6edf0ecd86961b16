"""Each running attempt's CPU and memory over time, for the dashboard's chart: one small
CSV per attempt (`t,cpu_seconds,memory_bytes`) in a directory of kran's own, never in a
dir a job can write (a root process appends to these files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

MAX_POINTS = 2000


class SeriesFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def _path(self, job_id: int, attempt: int) -> Path:
        return self.root / f"{int(job_id)}.{int(attempt)}.csv"

    def append(self, job_id: int, attempt: int, at: float, cpu_seconds: float, memory_bytes: int) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path(job_id, attempt), flags, 0o600)
        try:
            os.write(fd, f"{at:.1f},{cpu_seconds:.3f},{int(memory_bytes)}\n".encode())
        finally:
            os.close(fd)

    def read(self, job_id: int, attempt: int) -> list[tuple[float, float, int]]:
        try:
            fd = os.open(self._path(job_id, attempt), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return []
        with os.fdopen(fd, "rb") as f:
            lines = f.read(MAX_POINTS * 64).decode("ascii", "replace").splitlines()
        out = []
        for line in lines[:MAX_POINTS]:
            parts = line.split(",")
            try:
                out.append((float(parts[0]), float(parts[1]), int(parts[2])))
            except (ValueError, IndexError):
                continue
        return out

    def expire(self, older_than_s: float) -> None:
        cutoff = time.time() - older_than_s
        for entry in os.scandir(self.root):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass
