"""file:// URLs read as root below the roots an admin allowed (files.file_url_roots),
where users may write too (a shared dir). The path was checked, then opened again by
name: a link swapped in between read a root-only file (an outside attack got one in 80
tries), and a FIFO held an engine thread for ever (16 of them: no launch or collect for
anyone). Now the kernel opens it beneath the root (openat2), and only a regular file."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from kran.jobfs import Refused, Tree, open_regular_beneath, under_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    top = tmp_path / "shared"
    (top / "real").mkdir(parents=True)
    (top / "real" / "data").write_text("public")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "data").write_text("ROOT-ONLY")
    (top / "swapped").symlink_to(secret)  # what a user swaps in after the check
    (top / "alias").symlink_to("real")  # a link that stays below the root: fine
    os.mkfifo(top / "pipe")
    return top


def test_the_open_never_leaves_the_root_whatever_was_checked(root: Path) -> None:
    assert under_root(str(root / "real" / "data"), [root]) == (root, "real/data")
    assert under_root(str(root / "swapped" / "data"), [root]) is None  # the check alone, as before
    f = open_regular_beneath(root, "alias/data")
    assert os.read(f.fd, 100) == b"public"
    os.close(f.fd)
    for rel in ("swapped/data", "real/../../secret/data", "../secret/data"):  # past the check: a swap
        with pytest.raises(Refused, match="leads out"):
            open_regular_beneath(root, rel)
    with pytest.raises(Refused, match="leads out"):
        Tree.beneath(root, "swapped")
    t = time.monotonic()
    with pytest.raises(Refused, match="not a regular file"):
        open_regular_beneath(root, "pipe")
    assert time.monotonic() - t < 5


def test_a_job_fetching_a_fifo_fails_at_once(make_server: Any, root: Path) -> None:
    server = make_server(KRAN_FILES_FILE_URL_ROOTS=str(root))
    with server.api() as c:
        ids = [
            c.post("/api/v1/jobs", json={"command": ["true"], "files": [f"file://{root}/pipe"]}).json()["id"]
            for _ in range(17)  # more than the engine's threads
        ]
        ok = c.post("/api/v1/jobs", json={"command": ["cat", "data"], "files": [f"file://{root}/alias/data"]})
        for job_id in ids:
            end = server.wait_state(job_id, {"failed", "succeeded"}, timeout=30)
            assert end["state"] == "failed" and "not a regular file" in end["reason"], end
        assert server.wait_state(ok.json()["id"], {"failed", "succeeded"}, timeout=30)["state"] == "succeeded"
