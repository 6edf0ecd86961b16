"""When a job waiting on other jobs may start, or must give up: a pure decision.

`after` (Slurm's afterok): the dependency must succeed; if it ends any other way the
dependent job ends as dependency_failed without running. `after_any` (afterany): the
dependency must end, however it ends. `after_notok` (afternotok): the dependency must end
any way but succeeded; if it succeeds, the dependent ends as dependency_failed.
`singleton` (Slurm's): at most one active job per owner and name (decided at dispatch,
services.scheduler.dispatch). `--dependency` takes Slurm's form (parse_dependency).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kran.domain.states import JobState

AFTER_OK = "ok"
AFTER_ANY = "any"
AFTER_NOTOK = "notok"
SLURM_KINDS = {"afterok": "after", "afterany": "after_any", "afternotok": "after_notok"}
MAX_ID = 2**63 - 1  # the store's integers are 64-bit
_ID = re.compile(r"[0-9]{1,19}")
ARRAY_KIND = {"afterok": AFTER_OK, "afterany": AFTER_ANY, "afternotok": AFTER_NOTOK}


@dataclass(frozen=True)
class Dependency:
    job_id: int  # or the array's id
    kind: str  # AFTER_OK | AFTER_ANY | AFTER_NOTOK
    state: JobState  # an array's: running while active, then its outcome
    what: str = "job"  # job | array


@dataclass(frozen=True)
class Verdict:
    status: str  # "wait" | "ready" | "failed"
    reason: str | None = None


def dependency_verdict(deps: Sequence[Dependency]) -> Verdict:
    waiting = None
    for d in sorted(deps, key=lambda d: d.job_id):
        if d.kind == AFTER_OK and d.state.is_final and d.state != JobState.SUCCEEDED:
            return Verdict("failed", f"dependency {d.what} {d.job_id} ended {d.state}")
        if d.kind == AFTER_NOTOK and d.state == JobState.SUCCEEDED:
            return Verdict("failed", f"dependency {d.what} {d.job_id} succeeded (the job was to run after a failure)")
        if not d.state.is_final and waiting is None:
            waiting = f"waiting for {d.what} {d.job_id}"
    return Verdict("wait", waiting) if waiting else Verdict("ready")


@dataclass(frozen=True)
class ParsedDependency:
    after: list[int]
    after_any: list[int]
    after_notok: list[int]
    arrays: list[tuple[str, int]]  # (AFTER_OK | AFTER_ANY | AFTER_NOTOK, array id): every task
    corr: int | None  # aftercorr: task i after that array's task i succeeded
    singleton: bool


def parse_dependency(text: str) -> ParsedDependency:
    """Slurm's --dependency: `afterok:12:13,afterany:14,afternotok:15,singleton`; an id
    written `a7` is array 7 as a whole (every task), and `aftercorr:a7` makes task i of an
    array wait for task i of array 7. All must hold (Slurm's `,`); `?` (any of them) and
    `after` are refused with a reason."""
    lists: dict[str, list[int]] = {v: [] for v in SLURM_KINDS.values()}
    arrays: list[tuple[str, int]] = []
    corr = None
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
        if kind not in (*SLURM_KINDS, "aftercorr"):
            raise ValueError(f"{kind!r}: use afterok, afterany, afternotok, aftercorr or singleton")
        items = ids.split(":") if ids else []
        if not items:
            raise ValueError(f"{part!r}: name at least one job, e.g. {kind}:12 (or an array, {kind}:a7)")
        for item in items:
            is_array = item.startswith("a")
            number = item[1:] if is_array else item
            if not _ID.fullmatch(number) or not 1 <= int(number) <= MAX_ID:
                raise ValueError(f"{part[:40]!r}: ids are numbers (an array's written a7), e.g. afterok:12:a7")
            if kind == "aftercorr":
                if not is_array or corr is not None:
                    raise ValueError("aftercorr names one array, e.g. aftercorr:a7")
                corr = int(number)
            elif is_array:
                arrays.append((ARRAY_KIND[kind], int(number)))
            else:
                lists[SLURM_KINDS[kind]].append(int(number))
    return ParsedDependency(lists["after"], lists["after_any"], lists["after_notok"], arrays, corr, singleton)
