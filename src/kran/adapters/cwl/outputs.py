"""A step's outputs are collected from its output dir and nowhere else.

cwltool collects outputs as root, in the server: a glob like `../../etc/shadow`, or an
output that is a symlink to a host file, would have it read (loadContents, checksum) and
copied into the run's outputs. `StepOutputs` is the file access cwltool gets for output
collection: a glob must stay inside the step's output dir, and every file it reads must
really be inside that dir or the run's own inputs (cwltool links staged inputs there).
The step has ended when this runs and the run dir is the server's alone (0700), so the
paths checked cannot change under it.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cwltool.errors import WorkflowException
from cwltool.stdfsaccess import StdFsAccess

MAX_LISTED = 100_000


class StepOutputs(StdFsAccess):
    def __init__(self, basedir: str, *, outdir: str, roots: Sequence[Path]) -> None:
        super().__init__(basedir)
        self.outdir = Path(os.path.realpath(outdir))
        self.given = Path(os.path.normpath(os.path.abspath(outdir)))
        self.allowed = (self.outdir, *(Path(os.path.realpath(r)) for r in roots))
        self.listed = 0

    def _abs(self, p: str) -> str:
        path = super()._abs(p)
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(r) for r in self.allowed):
            shown = p.removeprefix("file://")
            raise WorkflowException(f"output {shown!r} leads outside the step's output dir (refused)")
        return path

    def listdir(self, fn: str) -> list[str]:
        self.listed += 1
        if self.listed > MAX_LISTED:  # links between dirs can make a finite tree list for ages
            raise WorkflowException(f"listing the step's outputs went past {MAX_LISTED} directories (refused)")
        return super().listdir(fn)

    def glob(self, pattern: str) -> list[str]:
        """The pattern must name places inside the output dir (no climbing out with `..` or
        an absolute path). What it matches may be a link to an input (cwltool links staged
        InitialWorkDir inputs back there) and is checked as it is read (`_abs`)."""
        where = Path(os.path.normpath(super()._abs(pattern)))
        if not (where.is_relative_to(self.given) or where.is_relative_to(self.outdir)):
            raise WorkflowException(f"output glob {pattern!r} leads outside the step's output dir (refused)")
        return super().glob(pattern)


def link_problem(outdir: str, run_dir: Path, roots: Sequence[Path]) -> str | None:
    """What the server, collecting a step's outputs as root, must not follow: from the
    step's output dir (after cwltool has linked the staged inputs back), through every
    link into the run's dir (steps write there: their tmp dirs, earlier steps' outputs
    updated in place), a link leading outside the run's dir and the shared roots (copying
    a Directory output follows the links in it), or a link to a directory holding one on
    the way to it (a loop that listing it would follow for ever). The shared roots are
    trusted as a whole and not walked (`roots`: those and the run's dir, under whatever
    name: compared by their real paths). A link to nothing (a path in the container) is
    left: whatever is there when it is read or copied is checked then (`_abs`,
    `confined_copytree`). None when all is well."""
    run = Path(os.path.realpath(run_dir))
    trusted = tuple(real for r in roots if (real := Path(os.path.realpath(r))) != run)
    start = Path(os.path.realpath(outdir))
    walked = {start}
    todo: list[tuple[Path, tuple[Path, ...], str]] = [(start, (start,), "")]
    while todo:
        here, chain, shown = todo.pop()
        try:
            entries = list(os.scandir(here))
        except OSError as e:
            return f"output {shown or '.'!r} could not be listed: {e.strerror} (refused)"
        for entry in entries:
            name = f"{shown}{entry.name}"
            if not entry.is_symlink():
                if entry.is_dir(follow_symlinks=False):
                    sub = here / entry.name
                    walked.add(sub)
                    todo.append((sub, (*chain, sub), f"{name}/"))
                continue
            if not os.path.exists(entry.path):
                continue  # leads nowhere on this host (a path in the container): nothing to follow
            target = Path(os.path.realpath(entry.path))
            if not (target.is_relative_to(run) or any(target.is_relative_to(r) for r in trusted)):
                return f"output {name!r} is a link that leads outside the step's output dir (refused)"
            if not target.is_dir():
                continue
            if any(c.is_relative_to(target) for c in chain):
                return f"output {name!r} links to a directory holding it (a loop: refused)"
            if target not in walked and not any(target.is_relative_to(r) for r in trusted):
                walked.add(target)
                todo.append((target, (*chain, target), f"{name}/"))
    return None


def staged_places_problem(outdir: str, targets: Sequence[str]) -> str | None:
    """cwltool puts links to the staged InitialWorkDir inputs back in the output dir, as
    root, removing what is at each place first: every dir on the way to a place must
    still be a real dir of the output dir (a step that moved one and left a link there
    would have root remove and link files wherever the link leads)."""
    real_out = Path(os.path.realpath(outdir))
    for rel in targets:
        parent = Path(os.path.normpath(real_out / rel)).parent
        if not parent.is_relative_to(real_out) or Path(os.path.realpath(parent)) != parent:
            return f"the place of staged input {rel!r} was moved or replaced by a link (refused)"
    return None


class _RunRoots(threading.local):
    roots: tuple[Path, ...] | None = None  # set on a run's thread while cwltool runs it


RUN_ROOTS = _RunRoots()


def confined_copytree(src: str, dst: str, *args: Any, **kwargs: Any) -> Any:
    """cwltool's copy of a Directory output into the run's outputs (its relocation, as
    root, on the run's thread): every file and dir it reaches, links followed, must be
    in the run's dir or a shared root, and no dir is reached twice (a loop). Elsewhere
    (no run on this thread) shutil's own."""
    roots = RUN_ROOTS.roots
    if roots is None:
        return shutil.copytree(src, dst, *args, **kwargs)
    seen: set[Path] = set()

    def inside(path: str) -> Path:
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(r) for r in roots):
            raise WorkflowException(f"output {os.path.basename(path)!r} leads outside the run's dirs (refused)")
        return real

    def ignore(directory: str, names: list[str]) -> list[str]:
        real = inside(directory)
        if real in seen:
            raise WorkflowException(f"output dir {os.path.basename(directory)!r} is reached twice by links (refused)")
        seen.add(real)
        return []

    def copy(s: str, d: str) -> Any:
        inside(s)
        return shutil.copy2(s, d)

    return shutil.copytree(src, dst, ignore=ignore, copy_function=copy)
