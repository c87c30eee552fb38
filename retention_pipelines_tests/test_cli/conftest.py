"""The CLI tests' fixtures: every test in a clean environment, and the CLI's environment on a test
database. `cli` (the root conftest's) runs `retention` in process; support/cli.py runs the real
console script."""

from __future__ import annotations

import pytest

from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.cli import dagster_home, with_password


@pytest.fixture(autouse=True)
def clean_environment(clean_environment):
    """The root conftest's clean environment, for every CLI test."""


@pytest.fixture
def cli_env(pg_url, tmp_path, monkeypatch):
    """The CLI's environment: a DAGSTER_HOME, the test database (with a password), a local archive;
    the database for the test to read."""
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster_home")))
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    (tmp_path / "archive").mkdir()
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", (tmp_path / "archive").as_uri())
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "retention_home"))
    database = AppDatabase(pg_url)
    yield database
    database.dispose()
