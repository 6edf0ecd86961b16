"""Fixtures of the adapter tests: a real PostgreSQL server, a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import free_port
from tests.postgres import Postgres, fresh_database, start_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    yield from start_postgres(free_port())


@pytest.fixture
def pg_url(postgres: Postgres) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database."""
    yield from fresh_database(postgres)
