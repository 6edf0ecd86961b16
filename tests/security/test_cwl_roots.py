"""A CWL document under a shared root is read by path: cwltool opens the URL as given, so
every dir on that way must be root's alone too, not only on the resolved way (a link in a
dir users may write passed the check pointing into a root-only dir, then could be
re-pointed at any host file before the open: a reviewer's finding)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from schema_salad.exceptions import ValidationException

from kran.adapters.cwl.execute import restricted_fetcher


def test_a_link_in_a_dir_users_may_change_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "rootonly").mkdir(parents=True)
    (shared / "rootonly" / "doc.cwl").write_text("cwlVersion: v1.2\n")
    (shared / "user").mkdir()
    (shared / "user").chmod(0o777)
    os.symlink(shared / "rootonly", shared / "user" / "link")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fetcher = restricted_fetcher((run_dir, shared), run_dir)
    allowed = fetcher._allowed  # (no state of the fetcher is read)
    allowed(None, (shared / "rootonly" / "doc.cwl").as_uri())  # root's all the way: read
    with pytest.raises(ValidationException, match="may be changed by users"):
        allowed(None, (shared / "user" / "link" / "doc.cwl").as_uri())
