"""Workflow runs: their states, what a run records, and what a CWL runner exits with."""

from __future__ import annotations

import enum
import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


class RunState(enum.StrEnum):
    QUEUED = "queued"  # stored, its executor not started yet (or again, after a restart)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


# The CWL runner interface's exit codes: success, permanent failure, unsupported feature.
EXIT_SUCCESS, EXIT_FAILED, EXIT_UNSUPPORTED = 0, 1, 33


@dataclass(frozen=True)
class WorkflowRecord:
    id: int
    owner: str
    name: str
    state: RunState
    labels: dict[str, str]
    dir: str  # the run's directory on the data dir: documents, work, outputs, log
    document: str  # the workflow's path (in the run dir, or under a shared root)
    job_order: str | None  # the job order file's path, likewise
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] | None = None  # the CWL output object, locations under dir/outputs
    reason: str | None = None
    exit_code: int | None = None  # what `kran-cwl-runner` exits with (0, 1, 33)
    cancel_requested: bool = False
    steps: list[Any] = field(default_factory=list)  # filled by queries: the run's jobs


@dataclass(frozen=True)
class RunResult:
    """How the workflow engine ended a run."""

    exit_code: int  # 0, 1 or 33 as the CWL runner interface has them
    outputs: dict[str, Any] | None
    reason: str | None


def final_state(exit_code: int, cancelled: bool) -> RunState:
    if cancelled:
        return RunState.CANCELLED
    return RunState.SUCCEEDED if exit_code == EXIT_SUCCESS else RunState.FAILED


def step_label(run_id: int) -> dict[str, str]:
    """The label each step job of a run carries (how `kran workflow show` finds them)."""
    return {"kran.workflow": str(run_id)}


# A step's place in the run's job cache: the digest of its inputs, then cwltool's key
# (command line, files, requirements). cwltool's key alone misses inputs that reach the
# step other than on its command line (an env var from an input, a staged directory), and
# two such steps of one run would share a result.
CACHE_KEY = re.compile(r"[0-9a-f]{32}/[0-9a-f]{32}")


def inputs_digest(job_order: Any) -> str:
    """A stable digest of a step's input object: `path` (derived) and the random
    locations of literal files (`_:...`) are left out, the rest in canonical JSON."""

    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {
                k: norm(x)
                for k, x in v.items()
                if k != "path" and not (k == "location" and isinstance(x, str) and x.startswith("_:"))
            }
        if isinstance(v, list | tuple):
            return [norm(x) for x in v]
        return v

    text = json.dumps(norm(job_order), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def without_run_dir(text: str, run_dir: str) -> str:
    """`text` (a reason, the run's log) with the run's dir on the server left out: what is
    under it is named relative to it (`in/wf.cwl`), as cwltool's own relative form of it
    (`../../data/workflows/7/in/wf.cwl`) is too."""
    top = run_dir.strip("/")
    if not top:
        return text
    pattern = r"(?:file://)?(?:\.\./)*/?" + re.escape(top) + r"(/|\b)"
    return re.sub(pattern, lambda m: "" if m.group(1) else ".", text)


def run_relative(obj: Any, outputs_dir: str) -> Any:
    """The CWL output object with the locations and paths under the run's outputs dir made
    relative to it: the names its files have in the outputs archive."""
    if isinstance(obj, list):
        return [run_relative(v, outputs_dir) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: run_relative(v, outputs_dir) for k, v in obj.items()}
    top = outputs_dir.rstrip("/")
    prefixes = {
        "location": ("file://" + urllib.parse.quote(top) + "/", f"file://{top}/"),
        "path": (f"{top}/",),
        "dirname": (f"{top}/",),
    }
    for key, starts in prefixes.items():
        v = out.get(key)
        if not isinstance(v, str):
            continue
        if v in (top, f"file://{top}"):
            out[key] = "."
        for start in starts:
            if v.startswith(start):
                out[key] = v[len(start) :]
                break
    return out
