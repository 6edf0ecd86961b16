"""When a job waiting on other jobs may start, or must give up: a pure decision.

`after` (Slurm's afterok): the dependency must succeed; if it ends any other way the
dependent job ends as dependency_failed without running. `after_any` (afterany): the
dependency must end, however it ends. `after_notok` (afternotok): the dependency must end
any way but succeeded; if it succeeds, the dependent ends as dependency_failed.
`singleton` (Slurm's): at most one active job per owner and name (decided at dispatch,
services.scheduler.dispatch). `--dependency` takes Slurm's form (parse_dependency).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kran.domain.states import JobState

AFTER_OK = "ok"
AFTER_ANY = "any"
AFTER_NOTOK = "notok"
SLURM_KINDS = {"afterok": "after", "afterany": "after_any", "afternotok": "after_notok"}


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
        if d.kind == AFTER_NOTOK and d.state == JobState.SUCCEEDED:
            return Verdict("failed", f"dependency job {d.job_id} succeeded (the job was to run after a failure)")
        if not d.state.is_final and waiting is None:
            waiting = f"waiting for job {d.job_id}"
    return Verdict("wait", waiting) if waiting else Verdict("ready")


def parse_dependency(text: str) -> tuple[dict[str, list[int]], bool]:
    """Slurm's --dependency: `afterok:12:13,afterany:14,afternotok:15,singleton` ->
    ({"after": [12, 13], "after_any": [14], "after_notok": [15]}, singleton). All must hold
    (Slurm's `,`); `?` (any of them) and `after`/`aftercorr` are refused with a reason."""
    out: dict[str, list[int]] = {v: [] for v in SLURM_KINDS.values()}
    singleton = False
    if "?" in text:
        raise ValueError("'?' (any of the dependencies) is not supported; list them with ','")
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part == "singleton":
            singleton = True
            continue
        kind, _, ids = part.partition(":")
        if kind not in SLURM_KINDS:
            raise ValueError(f"{kind!r}: use afterok, afterany, afternotok or singleton")
        try:
            numbers = [int(i) for i in ids.split(":")] if ids else []
        except ValueError:
            raise ValueError(f"{part!r}: job ids are numbers, e.g. afterok:12:13") from None
        if not numbers:
            raise ValueError(f"{part!r}: name at least one job, e.g. {kind}:12")
        out[SLURM_KINDS[kind]] += numbers
    return out, singleton
