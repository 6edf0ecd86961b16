"""schemathesis against the OpenAPI schema of a running server: no 5xx, no response that
breaks its own schema. Bounded (10 examples per operation) to stay quick in CI; the SSE
event stream never ends and is left out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerProc


def test_schemathesis_finds_no_server_errors(server: ServerProc, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "schemathesis"
    if not exe.exists() and not shutil.which("schemathesis"):
        pytest.fail("schemathesis is not installed (pip install -e .[test])")
    creds = server.credentials
    r = subprocess.run(
        [
            str(exe) if exe.exists() else "schemathesis",
            "run",
            f"{server.url}/api/v1/openapi.json",
            "-H",
            f"Authorization: Bearer {creds['key_id']}.{creds['secret']}",
            "--max-examples",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--exclude-path-regex",
            "stream",
            "--request-timeout",
            "5",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,  # its cache dir goes there, not into the checkout
    )
    assert r.returncode == 0, r.stdout[-4000:]
    assert "Traceback" not in server.log.read_text()
