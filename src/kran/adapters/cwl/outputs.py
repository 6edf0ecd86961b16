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
from collections.abc import Sequence
from pathlib import Path

from cwltool.errors import WorkflowException
from cwltool.stdfsaccess import StdFsAccess


class StepOutputs(StdFsAccess):
    def __init__(self, basedir: str, *, outdir: str, roots: Sequence[Path]) -> None:
        super().__init__(basedir)
        self.outdir = Path(os.path.realpath(outdir))
        self.given = Path(os.path.normpath(os.path.abspath(outdir)))
        self.allowed = (self.outdir, *(Path(os.path.realpath(r)) for r in roots))

    def _abs(self, p: str) -> str:
        path = super()._abs(p)
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(r) for r in self.allowed):
            shown = p.removeprefix("file://")
            raise WorkflowException(f"output {shown!r} leads outside the step's output dir (refused)")
        return path

    def glob(self, pattern: str) -> list[str]:
        """The pattern must name places inside the output dir (no climbing out with `..` or
        an absolute path). What it matches may be a link to an input (cwltool links staged
        InitialWorkDir inputs back there) and is checked as it is read (`_abs`)."""
        where = Path(os.path.normpath(super()._abs(pattern)))
        if not (where.is_relative_to(self.given) or where.is_relative_to(self.outdir)):
            raise WorkflowException(f"output glob {pattern!r} leads outside the step's output dir (refused)")
        return super().glob(pattern)


def link_problem(outdir: str, roots: Sequence[Path]) -> str | None:
    """What the step left in its output dir that the server, collecting it as root, must
    not follow: a link leading outside the output dir and the run's roots (copying a
    Directory output follows the links in it), or a link to a directory in the output dir
    or holding it (a loop that listing it would follow for ever). None when all is well."""
    real_out = Path(os.path.realpath(outdir))
    allowed = (real_out, *(Path(os.path.realpath(r)) for r in roots))
    for top, dirs, files in os.walk(real_out):  # links are listed, not followed
        for name in (*dirs, *files):
            path = Path(top, name)
            if not path.is_symlink():
                continue
            target = Path(os.path.realpath(path))
            shown = path.relative_to(real_out)
            if not any(target.is_relative_to(r) for r in allowed):
                return f"output {str(shown)!r} is a link that leads outside the step's output dir (refused)"
            if target.is_dir() and (target.is_relative_to(real_out) or real_out.is_relative_to(target)):
                return f"output {str(shown)!r} links to a directory of the step's own output dir or above it (refused)"
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
