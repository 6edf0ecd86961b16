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


def _defined(tree: ast.Module) -> set[str]:
    """Names a module defines: functions, classes, variables and attributes it assigns."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
            out.add(node.target.attr)
    return out


def test_no_module_touches_another_modules_private_names() -> None:
    """A `_name` of a kran module is used only there: other modules go through its public
    names (the store modules through Database.unit_of_work, not each other's engine or lock)."""
    trees = {path: ast.parse(path.read_text()) for path in SRC.rglob("*.py")}
    defined = {path: _defined(tree) for path, tree in trees.items()}
    private = {n for names in defined.values() for n in names if n.startswith("_") and not n.startswith("__")}
    bad = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kran"):
                bad += [f"{path.relative_to(SRC)}: imports {a.name}" for a in node.names if a.name in private]
            elif isinstance(node, ast.Attribute) and node.attr in private and node.attr not in defined[path]:
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
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


# declared, but used without an import of its own: what uses it
INDIRECT = {
    "python-multipart": "starlette's form parser (multipart uploads)",
    "jinja2": "the dashboard's templates, through fastapi.templating",
    "pytest-timeout": "a pytest plugin (the timeout in pyproject.toml)",
    "ruff": "a tool run by test_linters_are_clean",
    "mypy": "a tool run by test_linters_are_clean",
    "schemathesis": "a tool run by tests/e2e/test_schema_fuzz.py",
    "cwltest": "a tool run by tests/e2e/test_cwl_conformance.py",
    "datamodel-code-generator": "a tool run by tests/e2e/test_openapi.py",
}


def _third_party(root: Path) -> set[str]:
    """The distributions that the code under root imports directly."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    out = set()
    for path in root.rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("kran", "tests", "bench"):
                out.update(_norm(d) for d in dists.get(top, [top]))
    return out


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_dependencies_are_declared_as_imported() -> None:
    """pyproject.toml declares what the code imports, and nothing it does not use."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {_norm(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in reqs}

    runtime, test = names(project["dependencies"]), names(project["optional-dependencies"]["test"])
    used = _third_party(SRC)
    used_by_tests = _third_party(ROOT / "tests") | _third_party(ROOT / "bench")
    assert used - runtime == set(), "imported by src/kran but not declared in dependencies"
    assert used_by_tests - runtime - test == set(), "imported by tests or bench but not declared in test"
    assert runtime - used - set(INDIRECT) == set(), "declared in dependencies but never imported"
    assert test - used_by_tests - set(INDIRECT) == set(), "declared in test but never imported"


def test_no_wheels_or_archives_in_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert [f for f in tracked if f.endswith((".whl", ".tar.gz", ".zip"))] == []


def test_services_do_not_reach_into_the_scheduler() -> None:
    """The scheduler package uses the services (staging asks the image manager); no service
    imports it back: a service names what it uses, never the loop's working set."""
    bad = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in (SRC / "services").glob("*.py")
        for name in _imports(path)
        if name.startswith("kran.services.scheduler")
    ]
    assert bad == [] and not (SRC / "services" / "runtime.py").exists()
