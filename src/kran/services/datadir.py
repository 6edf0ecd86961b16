"""Where a job's files live in the data dir (docs/data-dir.md):
jobs/<id>/<attempt>/{work/, stdout, stderr, exit_code}, uploads/<id>/, workflows/<run>/,
tes/<task>/fs/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kran.ports import AttemptRef


@dataclass(frozen=True)
class DataDir:
    root: Path

    def job_dir(self, job_id: int) -> Path:
        return self.root / "jobs" / str(job_id)

    def attempt_dir(self, job_id: int, attempt: int) -> Path:
        return self.job_dir(job_id) / str(attempt)

    def upload_dir(self, upload_id: str) -> Path:
        """Files uploaded with a job (`--input`), copied into each attempt's working dir."""
        return self.root / "uploads" / upload_id

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def workflows(self) -> Path:
        return self.root / "workflows"

    @property
    def tes(self) -> Path:
        return self.root / "tes"

    def tes_dir(self, task_id: str) -> Path:
        """A TES task's file system (`fs/`, its dirs at their container paths)."""
        return self.tes / task_id

    def ref(self, job_id: int, attempt: int, handle: str | None, grace_s: float | None = None) -> AttemptRef:
        return AttemptRef(job_id, attempt, handle, self.attempt_dir(job_id, attempt), grace_s)
