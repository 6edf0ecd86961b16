"""A real PostgreSQL server (Debian's postgresql, started by initdb and pg_ctl) for the
tests: one per session, a fresh database per test. Skipped where neither the server nor the
driver is installed, except in CI (scripts/env.sh installs both)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def _as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"tests need PostgreSQL ({why}; scripts/test.sh installs it)")
    pytest.skip(f"no PostgreSQL here: {why}")


@dataclass
class Postgres:
    port: int
    root: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://kran@127.0.0.1:{self.port}/{database}"


def start_postgres(port: int) -> Iterator[Postgres]:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        _unavailable("initdb and pg_ctl not found")
    try:
        import psycopg  # noqa: F401  (the driver SQLAlchemy loads for postgresql+psycopg)
    except ImportError:
        _unavailable("the psycopg driver is not installed")
    assert initdb is not None and pg_ctl is not None
    root = Path(tempfile.mkdtemp(prefix="kran-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_server_user([initdb, "-D", str(data), "-U", "kran", "-A", "trust", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(
        _as_server_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield Postgres(port, root)
    finally:
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server: Postgres) -> Iterator[str]:
    """A new empty database on the server; its URL. Dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield server.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
