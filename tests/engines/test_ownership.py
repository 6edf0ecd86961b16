"""What a container job's user is given before it starts (needs root, as the server does)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kran.adapters.engines.ownership import give_to
from kran.domain.resources import Resources
from kran.ports import LaunchSpec

NOBODY = (65534, 65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_writable_binds_become_the_job_users_and_their_dirs_writable(tmp_path: Path) -> None:
    """A staged copy of a read-only input dir keeps its 0555 modes: root ignores them, the
    job user would not be able to write what the tool was promised as writable."""
    attempt = tmp_path / "jobs" / "1" / "1"
    (attempt / "work").mkdir(parents=True)
    staged = tmp_path / "staged" / "work_dir"
    (staged / "c").mkdir(parents=True)
    (staged / "c" / "d").write_text("")
    (staged / "c" / "d").chmod(0o444)
    for d in (staged / "c", staged):
        d.chmod(0o555)
    readonly = tmp_path / "input"
    readonly.mkdir(mode=0o555)
    spec = LaunchSpec(
        job_id=1,
        attempt=1,
        argv=("true",),
        image="x",
        env={},
        attempt_dir=attempt,
        allocation=Resources(500, 128, 0, 0),
        network=False,
        binds=((str(staged), "/out/work_dir", True), (str(readonly), "/in", False)),
    )
    give_to(spec, NOBODY)
    for path in (staged, staged / "c", staged / "c" / "d", attempt / "work"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == NOBODY, path
    assert stat.S_IMODE(staged.stat().st_mode) == 0o755 and stat.S_IMODE((staged / "c").stat().st_mode) == 0o755
    assert stat.S_IMODE((staged / "c" / "d").stat().st_mode) == 0o444  # files keep their modes
    assert readonly.stat().st_uid == 0 and stat.S_IMODE(readonly.stat().st_mode) == 0o555  # read-only: untouched
