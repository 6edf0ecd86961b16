"""A workflow run's step graph for its page. kran stores no step graph (cwltool works the
order out as it runs), so the steps and what each needs come from the run's CWL document:
a step needs another when one of its inputs has that step's output as a source. Each
step job (labelled `kran.step`, cwltool's job name: the step's name, `_2`, `_3`... added
for a scatter's jobs and for names used before in the server's process) is put on its step.
A document that cannot be read gives the steps of the jobs alone, without edges."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from kran.adapters.cwl.documents import yaml_problem
from kran.web.dag import Step

MAX_DEPTH = 8  # subworkflows in subworkflows
MAX_SHOWN_BYTES = 1 << 20  # a bigger document (or job order) is not parsed for the page
UNIQUE_SUFFIX = re.compile(r"(.+)_\d+")
RUNNING = ("running", "starting")
FAILED = ("failed", "timed_out", "lost", "dependency_failed")

Read = Callable[[Path], Any]  # a document by path: its data, or None


@dataclass(frozen=True)
class StepGraph:
    steps: tuple[str, ...] = ()  # the workflow's own steps, in its order
    edges: tuple[tuple[str, str], ...] = ()  # (needed, needing)
    aliases: dict[str, str] = field(default_factory=dict)  # any step's name, nested ones too -> its own step


@dataclass(frozen=True)
class StepJob:
    label: str  # cwltool's job name
    job_id: int
    state: str


def _short(ref: str) -> list[str]:
    """A CWL id or source as its parts after the '#': '#main/say/out' -> [main, say, out]."""
    return ref.rpartition("#")[2].strip("/").split("/")


def _named(items: Any) -> list[tuple[str, Any]]:
    """A CWL map-or-list field (steps, in) as (short name, value) pairs."""
    if isinstance(items, dict):
        return [(str(k), v) for k, v in items.items()]
    if isinstance(items, list):
        return [(_short(str(v["id"]))[-1], v) for v in items if isinstance(v, dict) and "id" in v]
    return []


def _sources(value: Any) -> list[str]:
    """The sources of one step input: `x`, `[x, y]` or `{source: ...}`."""
    if isinstance(value, dict):
        value = value.get("source")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _pick(doc: Any, fragment: str) -> tuple[Any, list[Any]]:
    """The process a document (or its `$graph`) holds: the one `fragment` names, else `main`."""
    if not (isinstance(doc, dict) and isinstance(doc.get("$graph"), list)):
        return doc, []
    graph = [p for p in doc["$graph"] if isinstance(p, dict)]
    wanted = fragment or "main"
    found = next((p for p in graph if _short(str(p.get("id", "")))[-1] == wanted), None)
    if found is None and not fragment and len(graph) == 1:
        found = graph[0]
    return found, graph


def step_graph(doc: Any, fragment: str, base: Path, read: Read, depth: int = 0) -> StepGraph:
    """The steps and edges of the workflow in `doc` (read from `base`): `read` opens the
    documents its steps run, for the names of their own steps."""
    process, graph = _pick(doc, fragment)
    if not isinstance(process, dict) or process.get("class") != "Workflow":
        return StepGraph()
    own = _short(str(process.get("id", "")))[0] if process.get("id") else ""
    steps = _named(process.get("steps"))
    names = tuple(name for name, _ in steps)
    edges: list[tuple[str, str]] = []
    aliases = {name: name for name in names}
    for name, step in steps:
        if not isinstance(step, dict):
            continue
        for _, value in _named(step.get("in")):
            for source in _sources(value):
                parts = _short(source)
                if own and "#" in source and parts[0] == own:  # an absolute id: #main/step/out
                    parts = parts[1:]
                if len(parts) == 2 and parts[0] in aliases and (parts[0], name) not in edges:
                    edges.append((parts[0], name))
        if depth < MAX_DEPTH:
            inner = _run_of(step.get("run"), graph, base, read, depth)
            for alias in inner.aliases:
                aliases.setdefault(alias, name)
    return StepGraph(names, tuple(edges), aliases)


def _run_of(run: Any, graph: list[Any], base: Path, read: Read, depth: int) -> StepGraph:
    """The graph of what a step runs: inline, `#id` in the same `$graph`, or a file."""
    if isinstance(run, dict):
        return step_graph(run, "", base, read, depth + 1)
    if not isinstance(run, str):
        return StepGraph()
    if run.startswith("#"):
        return step_graph({"$graph": graph}, run[1:], base, read, depth + 1)
    rel, _, fragment = run.removeprefix("file://").partition("#")
    path = base.parent / rel
    doc = read(path)
    return StepGraph() if doc is None else step_graph(doc, fragment, path, read, depth + 1)


def step_of(label: str, aliases: dict[str, str]) -> str:
    """The step a job belongs to, by its cwltool job name."""
    if label in aliases:
        return aliases[label]
    m = UNIQUE_SUFFIX.fullmatch(label)
    if m is None:
        return label
    return aliases.get(m.group(1), m.group(1))


def step_state(states: list[str], run_active: bool) -> str:
    """One state for a step's jobs: running while any runs, then queued, failed, killed."""
    if not states:
        return "waiting" if run_active else "not_run"
    if len(set(states)) == 1:
        return states[0]
    for group, shown in ((RUNNING, "running"), (("queued",), "queued"), (FAILED, "failed"), (("killed",), "killed")):
        if any(s in group for s in states):
            return shown
    return "succeeded"


def graph_steps(
    graph: StepGraph, jobs: Iterable[StepJob], run_active: bool, jobs_link: Callable[[str], str]
) -> list[Step]:
    """A box for each step of the document, then one for each other job name (a plain
    tool's run, a document that could not be read); `jobs_link(step)` lists a step's jobs."""
    found: dict[str, list[StepJob]] = {name: [] for name in graph.steps}
    for job in sorted(jobs, key=lambda j: j.job_id):
        found.setdefault(step_of(job.label, graph.aliases), []).append(job)
    out = []
    for name, mine in found.items():
        state = step_state([j.state for j in mine], run_active)
        if len(mine) == 1:
            out.append(Step(name, state, mine[0].job_id, "", f"/ui/jobs/{mine[0].job_id}"))
        elif mine:
            done = sum(j.state == "succeeded" for j in mine)
            out.append(Step(name, state, None, f"{done}/{len(mine)} done", jobs_link(name)))
        else:
            out.append(Step(name, state))
    return out


def read_cwl(roots: tuple[Path, ...]) -> Read:
    """A reader of documents under `roots` only (the run's dir, the shared roots), each
    checked for YAML aliases as cwltool's fetcher checks them, and at most MAX_SHOWN_BYTES,
    before it is parsed."""

    def read(path: Path) -> Any:
        try:
            resolved = path.resolve()
            if not any(resolved.is_relative_to(r) for r in roots) or not resolved.is_file():
                return None
            st = resolved.stat()
            return _parsed(str(resolved), st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    return read


@lru_cache(maxsize=32)
def _parsed(path: str, mtime_ns: int, size: int) -> Any:
    """A document's data (cached: the page asks again every few seconds while a run runs)."""
    if size > MAX_SHOWN_BYTES:
        return None
    try:
        text = Path(path).read_text(errors="replace")
        if yaml_problem(text, Path(path).name):
            return None
        return YAML(typ="safe", pure=True).load(text)
    except Exception:  # not YAML, or not readable: no graph, the jobs still show
        return None
