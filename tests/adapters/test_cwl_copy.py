"""cwltool's copy of Directory outputs into a run's outputs, confined to the run's dirs
(the second line behind the walk of each step's output dir: tests/security/test_cwl_outputs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cwltool.errors import WorkflowException

from kran.adapters.cwl.outputs import RUN_ROOTS, confined_copytree, link_problem


def _tree(run: Path) -> Path:
    d = run / "cache" / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("f\n")
    os.symlink("sub/f", d / "inner")  # a link inside: copied as the file it names
    return d


def test_the_copy_follows_links_only_within_the_runs_dirs(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    d = _tree(run)
    RUN_ROOTS.roots = (run,)
    try:
        confined_copytree(str(d), str(run / "out1"))
        assert (run / "out1" / "inner").read_text() == "f\n" and not (run / "out1" / "inner").is_symlink()
        os.symlink(outside / "secret", d / "leak")
        with pytest.raises(WorkflowException, match="leads outside the run's dirs"):
            confined_copytree(str(d), str(run / "out2"))
        (d / "leak").unlink()
        os.symlink("..", d / "sub" / "up")  # a loop
        with pytest.raises(WorkflowException, match="reached twice"):
            confined_copytree(str(d), str(run / "out3"))
    finally:
        RUN_ROOTS.roots = None


def test_without_a_run_it_is_shutils_own(tmp_path: Path) -> None:
    d = _tree(tmp_path / "run")
    confined_copytree(str(d), str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "sub" / "f").read_text() == "f\n"


def test_the_walk_knows_the_run_dir_under_any_name(tmp_path: Path) -> None:
    """The run's dir is walked, never trusted as a shared root, also when the data dir is
    named through a link (the roots hold its real path): a link from the step's output
    into its tmp dir, and from there to a host file, is refused."""
    real_run = tmp_path / "data" / "run"
    out, tmp = real_run / "cache" / "out", real_run / "tmp" / "t1"
    out.mkdir(parents=True)
    tmp.mkdir(parents=True)
    (tmp_path / "secret").write_text("secret\n")
    os.symlink(tmp_path / "secret", tmp / "evil")
    os.symlink(tmp, out / "leak")
    os.symlink(tmp_path / "data", tmp_path / "named")
    named_run = tmp_path / "named" / "run"
    why = link_problem(str(named_run / "cache" / "out"), named_run, (real_run.resolve(),))
    assert why is not None and "leak/evil" in why and "leads outside" in why
