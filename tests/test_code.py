"""The code's shape: imports point down (STYLE.md), ruff and mypy --strict are clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kran"
ROOT = SRC.parents[1]

# layer -> kran packages it must not import
FORBIDDEN = {
    "domain": (
        "kran.ports",
        "kran.services",
        "kran.adapters",
        "kran.api",
        "kran.cli",
        "kran.bootstrap",
        "kran.settings",
        "kran.jobfs",
    ),
    "adapters": ("kran.services", "kran.api", "kran.cli", "kran.bootstrap"),
    "services": ("kran.adapters", "kran.api", "kran.cli", "kran.bootstrap"),
    "api": ("kran.cli",),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_imports_point_down() -> None:
    bad = []
    for layer, forbidden in FORBIDDEN.items():
        for path in (SRC / layer).rglob("*.py"):
            for name in _imports(path):
                if name.startswith(forbidden):
                    bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


def test_domain_uses_only_the_standard_library_and_croniter() -> None:
    # croniter is pure computation (cron expressions -> times), allowed as an exception
    allowed = set(sys.stdlib_module_names) | {"kran", "croniter"}
    bad = [
        f"{path.name}: {name}"
        for path in (SRC / "domain").rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] not in allowed and name != "__future__"
    ]
    assert bad == []


@pytest.mark.parametrize("tool", [["ruff", "check", "src", "tests", "bench"], ["mypy", "src"]])
def test_linters_are_clean(tool: list[str]) -> None:
    exe = Path(sys.executable).parent / tool[0]
    if not exe.exists() and shutil.which(tool[0]) is None:
        pytest.fail(f"{tool[0]} is not installed (pip install -e .[test])")
    r = subprocess.run(
        [str(exe) if exe.exists() else tool[0], *tool[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
