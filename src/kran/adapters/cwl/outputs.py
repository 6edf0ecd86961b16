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
