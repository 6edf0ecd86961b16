"""The CWL v1.2 conformance suite's `required` tests, through `kran-cwl-runner`, with cwltest.

The whole suite (all tags, badges, JUnit) runs outside CI: `bash scripts/conformance.sh`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from tests.conftest import ServerProc

pytestmark = pytest.mark.docker

SUITE = Path(os.environ.get("KRAN_CWL_SUITE", Path(__file__).resolve().parents[3] / "shared" / "cwl-v1.2-conformance"))
STAND_INS = ("debian:stable-slim", "python:3-slim", "bash:4.4", "alpine:latest")


@pytest.mark.timeout(900)
def test_required_conformance_tests_pass(make_server: Any, tmp_path: Path, docker_client: Any) -> None:
    if not (SUITE / "conformance_tests.yaml").exists():
        pytest.fail(f"the CWL v1.2 conformance suite is not at {SUITE} (set KRAN_CWL_SUITE)")
    missing = [n for n in STAND_INS if not docker_client.images.list(name=n)]
    assert not missing, f"build the stand-in images first (scripts/cwl-images.sh): {missing}"
    server: ServerProc = make_server()  # its defaults: no shared roots, the runner uploads what a run needs
    env = {**os.environ, **server.client_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    junit = tmp_path / "required.xml"
    proc = subprocess.run(
        ["cwltest", "--test", "conformance_tests.yaml", "--tool", "kran-cwl-runner", "--tags", "required"]
        + ["-j", "4", "--junit-xml", str(junit)],
        cwd=SUITE,
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
    )
    failures = "\n".join(ln for ln in proc.stderr.splitlines() if ln.startswith("Test ") and "failed" in ln)
    assert proc.returncode == 0, failures or proc.stderr[-3000:]
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    outcomes = [[c.tag for c in case if c.tag in ("failure", "error", "skipped")] for case in cases]
    assert len(outcomes) >= 84  # the suite's required tests
    assert all(not o for o in outcomes), outcomes  # no failure, error or skip (unsupported)
