"""The workflow engine port. cwltool (a third of a second and some 30 MB to import) is
loaded by the first run, not at every server start."""

from __future__ import annotations

from pathlib import Path

from kran.domain.workflows import RunResult
from kran.ports import StepLauncher


class CwlRunner:
    """The workflow engine port, with cwltool (execute.py)."""

    def __init__(self, default_image: str, max_parallel: int) -> None:
        self.default_image = default_image
        self.max_parallel = max_parallel

    def run(
        self, document: str, job_order: str | None, run_dir: Path, launcher: StepLauncher, roots: tuple[Path, ...]
    ) -> RunResult:
        from kran.adapters.cwl import execute  # noqa: PLC0415 - cwltool on first use

        execute.install_nodejs()
        paths = execute.RunPaths(run_dir)
        return execute.run_cwl(document, job_order, paths, launcher, roots, self.default_image, self.max_parallel)
