"""When a job waiting on other jobs may start, or must give up: a pure decision.

`after` (Slurm's afterok): the dependency must succeed; if it ends any other way the
dependent job ends as dependency_failed without running. `after_any` (afterany): the
dependency must end, however it ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kran.domain.states import JobState

AFTER_OK = "ok"
AFTER_ANY = "any"


@dataclass(frozen=True)
class Dependency:
    job_id: int
    kind: str  # AFTER_OK | AFTER_ANY
    state: JobState


@dataclass(frozen=True)
class Verdict:
    status: str  # "wait" | "ready" | "failed"
    reason: str | None = None


def dependency_verdict(deps: Sequence[Dependency]) -> Verdict:
    waiting = None
    for d in sorted(deps, key=lambda d: d.job_id):
        if d.kind == AFTER_OK and d.state.is_final and d.state != JobState.SUCCEEDED:
            return Verdict("failed", f"dependency job {d.job_id} ended {d.state}")
        if not d.state.is_final and waiting is None:
            waiting = f"waiting for job {d.job_id}"
    return Verdict("wait", waiting) if waiting else Verdict("ready")
